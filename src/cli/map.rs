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
    let mut sink = Sink {
        m,
        buf: Vec::with_capacity(4096),
        out: BufWriter::with_capacity(1 << 20, std::io::stdout().lock()),
        err: BufWriter::new(std::io::stderr().lock()),
        c: Counts::default(),
    };
    let result = match m.source_format {
        BodyFormat::Xml => map_xml(reader, &mut sink, max),
        _ => map_lines(reader, &mut sink, max),
    };
    match result.and_then(|_| sink.out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(sink.err, "error: {e}");
            return ExitCode::from(2);
        }
    }
    let c = &sink.c;
    let _ = writeln!(
        sink.err,
        "{}: mapped {}, filtered {}, rejected {}",
        m.name, c.mapped, c.filtered, c.rejected
    );
    let _ = sink.err.flush();
    if sink.c.rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Where outcomes go: mapped records to `out`, error lines to `err`.
struct Sink<'m, O: Write, E: Write> {
    m: &'m Mapping,
    buf: Vec<u8>,
    out: O,
    err: E,
    c: Counts,
}

impl<O: Write, E: Write> Sink<'_, O, E> {
    /// Emits the outcome of record `n`, which starts on line `line`.
    fn emit(&mut self, n: u64, line: usize, r: Result<Outcome, Rejection>) -> std::io::Result<()> {
        match r {
            Ok(Outcome::Mapped { record, .. }) => {
                self.buf.clear();
                encode_json(&record, &self.m.target_type(), &mut self.buf);
                self.buf.push(b'\n');
                self.out.write_all(&self.buf)?;
                self.c.mapped += 1;
            }
            Ok(Outcome::Filtered) => self.c.filtered += 1,
            Err(rej) => {
                writeln!(self.err, "record {n} (line {line}): {rej}")?;
                self.c.rejected += 1;
            }
        }
        Ok(())
    }
}

fn reject(message: String) -> Rejection {
    Rejection {
        stage: Stage::Decode,
        part: String::new(),
        message,
    }
}

fn too_long(len: usize, max: usize) -> Rejection {
    reject(format!(
        "the record is {len} bytes, over the limit of {max} (--max-record-bytes)"
    ))
}

fn map_lines<O: Write, E: Write>(
    input: Box<dyn Read>,
    sink: &mut Sink<'_, O, E>,
    max: usize,
) -> std::io::Result<()> {
    let m = sink.m;
    let mut rd = BufReader::with_capacity(1 << 20, input);
    let mut line = Vec::with_capacity(4096);
    let (mut n, mut lineno) = (0u64, 0usize);
    loop {
        line.clear();
        let Some((len, over)) = read_line(&mut rd, &mut line, max)? else {
            break;
        };
        lineno += 1;
        let body = line.trim_ascii();
        if body.is_empty() {
            continue;
        }
        n += 1;
        let r = if over {
            Err(too_long(len, max))
        } else if let Err(e) = std::str::from_utf8(body) {
            Err(reject(format!(
                "not valid UTF-8 (bad byte at column {})",
                e.valid_up_to() + 1
            )))
        } else {
            m.decode_json(body).and_then(|d| m.apply(&d))
        };
        sink.emit(n, lineno, r)?;
    }
    Ok(())
}

/// Reads one line into `line`, keeping at most `max + 1` bytes of it;
/// returns `None` at the end of the input, else the line's length without
/// its newline and whether that is over `max`.
fn read_line(
    rd: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<(usize, bool)>> {
    let mut total = 0;
    loop {
        let chunk = rd.fill_buf()?;
        if chunk.is_empty() {
            return Ok((total > 0).then_some((total, total > max)));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if line.len() <= max {
            let room = (max + 1 - line.len()).min(take);
            line.extend_from_slice(&chunk[..room]);
        }
        total += take;
        rd.consume(take);
        if done {
            let content = total - 1;
            return Ok(Some((content, content > max)));
        }
    }
}

fn map_xml<O: Write, E: Write>(
    mut input: Box<dyn Read>,
    sink: &mut Sink<'_, O, E>,
    max: usize,
) -> std::io::Result<()> {
    let m = sink.m;
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            return sink.emit(
                1,
                1,
                Err(reject(format!("not valid UTF-8 (bad byte at offset {at})"))),
            );
        }
    };
    let ty = m.source_type();
    for (i, (line, doc)) in xml::split_documents(&text).into_iter().enumerate() {
        let r = if doc.len() > max {
            Err(too_long(doc.len(), max))
        } else {
            xml::document_to_json(doc, &ty)
                .map_err(|e| reject(e.message))
                .and_then(|v| {
                    crate::schema::decode_json_value(&v, &ty, false).map_err(Rejection::from)
                })
                .and_then(|d| m.apply(&d))
        };
        sink.emit(i as u64 + 1, line, r)?;
    }
    Ok(())
}
