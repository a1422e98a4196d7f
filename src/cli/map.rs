//! `tongban map`: records through one feed, good ones to stdout, one error
//! line per rejected record to stderr, and the rest go on.

use crate::config::{BodyFormat, Config, Mapping, Rejection, Stage};
use crate::formats::xml;
use crate::mapping::Outcome;
use crate::schema::encode_json;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::ExitCode;

#[derive(Default)]
struct Counts {
    mapped: u64,
    filtered: u64,
    rejected: u64,
}

pub fn run(cfg: &Config, name: &str, input: &Path, max: usize) -> ExitCode {
    let Some(m) = cfg.mappings.get(name) else {
        eprintln!(
            "error: no mapping {name:?}; have: {}",
            cfg.mappings.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return ExitCode::from(2);
    };
    let reader: Box<dyn Read> = if input == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(input) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("error: cannot open {}: {e}", input.display());
                return ExitCode::from(2);
            }
        }
    };
    let stdout = std::io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 20, stdout);
    let stderr = std::io::stderr().lock();
    let mut err = BufWriter::new(stderr);
    let result = match m.source_format {
        BodyFormat::Xml => map_xml(m, reader, &mut out, &mut err, max),
        _ => map_lines(m, reader, &mut out, &mut err, max),
    };
    let counts = match result.and_then(|c| out.flush().map(|_| c)) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = writeln!(
        err,
        "{}: mapped {}, filtered {}, rejected {}",
        m.name, counts.mapped, counts.filtered, counts.rejected
    );
    let _ = err.flush();
    if counts.rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Emits one record's outcome.
fn emit(
    m: &Mapping,
    n: u64,
    line: usize,
    r: Result<Outcome, Rejection>,
    buf: &mut Vec<u8>,
    out: &mut impl Write,
    err: &mut impl Write,
    c: &mut Counts,
) -> std::io::Result<()> {
    match r {
        Ok(Outcome::Mapped { record, .. }) => {
            buf.clear();
            encode_json(&record, &m.target_type(), buf);
            buf.push(b'\n');
            out.write_all(buf)?;
            c.mapped += 1;
        }
        Ok(Outcome::Filtered) => c.filtered += 1,
        Err(rej) => {
            writeln!(err, "record {n} (line {line}): {rej}")?;
            c.rejected += 1;
        }
    }
    Ok(())
}

fn reject(stage: Stage, message: String) -> Rejection {
    Rejection {
        stage,
        part: String::new(),
        message,
    }
}

fn map_lines(
    m: &Mapping,
    input: Box<dyn Read>,
    out: &mut impl Write,
    err: &mut impl Write,
    max: usize,
) -> std::io::Result<Counts> {
    let mut rd = BufReader::with_capacity(1 << 20, input);
    let mut c = Counts::default();
    let mut line = Vec::with_capacity(4096);
    let mut buf = Vec::with_capacity(4096);
    let (mut n, mut lineno) = (0u64, 0usize);
    loop {
        line.clear();
        let (read, too_long) = read_line(&mut rd, &mut line, max)?;
        if read == 0 {
            break;
        }
        lineno += 1;
        let body = trim_ascii(&line);
        if body.is_empty() {
            continue;
        }
        n += 1;
        let r = if too_long {
            Err(reject(
                Stage::Decode,
                format!("the record is {read} bytes, over the limit of {max} (--max-record-bytes)"),
            ))
        } else if let Err(e) = std::str::from_utf8(body) {
            Err(reject(
                Stage::Decode,
                format!(
                    "not valid UTF-8 (bad byte at column {})",
                    e.valid_up_to() + 1
                ),
            ))
        } else {
            m.decode_json(body).and_then(|d| m.apply(&d))
        };
        emit(m, n, lineno, r, &mut buf, out, err, &mut c)?;
    }
    Ok(c)
}

/// Reads one line into `line`, keeping at most `max` bytes of it; returns
/// the bytes read and whether the line was longer than `max`.
fn read_line(
    rd: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let mut total = 0;
    loop {
        let chunk = rd.fill_buf()?;
        if chunk.is_empty() {
            return Ok((total, total > max));
        }
        let (take, done) = match memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if line.len() < max + 1 {
            let room = (max + 1 - line.len()).min(take);
            line.extend_from_slice(&chunk[..room]);
        }
        total += take;
        rd.consume(take);
        if done {
            let content = total - 1;
            return Ok((total, content > max));
        }
    }
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&x| x == b)
}

fn trim_ascii(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

fn map_xml(
    m: &Mapping,
    mut input: Box<dyn Read>,
    out: &mut impl Write,
    err: &mut impl Write,
    max: usize,
) -> std::io::Result<Counts> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    let mut c = Counts::default();
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            writeln!(
                err,
                "record 1 (line 1): input: not valid UTF-8 (bad byte at offset {})",
                e.utf8_error().valid_up_to()
            )?;
            c.rejected += 1;
            return Ok(c);
        }
    };
    let ty = m.source_type();
    let mut buf = Vec::new();
    for (i, (line, doc)) in xml::split_documents(&text).into_iter().enumerate() {
        let r = if doc.len() > max {
            Err(reject(
                Stage::Decode,
                format!(
                    "the record is {} bytes, over the limit of {max} (--max-record-bytes)",
                    doc.len()
                ),
            ))
        } else {
            xml::document_to_json(doc, &ty)
                .map_err(|e| reject(Stage::Decode, e.message))
                .and_then(|v| {
                    crate::schema::decode_json_value(&v, &ty, false).map_err(Rejection::from)
                })
                .and_then(|d| m.apply(&d))
        };
        emit(m, i as u64 + 1, line, r, &mut buf, out, err, &mut c)?;
    }
    Ok(c)
}
