//! `tongban map`: records through one feed, good ones to stdout, one error
//! line per rejected record to stderr, and the rest go on.
//!
//! JSON lines are mapped on every core: a reader thread cuts the input into
//! batches of lines, workers decode, map and encode each batch, and the
//! main thread writes the results in input order.

use crate::config::{BodyFormat, Config, Mapping, Rejection, Stage};
use crate::formats::xml;
use crate::mapping::Outcome;
use crate::schema::encode_json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex};

/// Bytes of input per batch handed to a worker.
const BATCH_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Counts {
    mapped: u64,
    filtered: u64,
    rejected: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.mapped += o.mapped;
        self.filtered += o.filtered;
        self.rejected += o.rejected;
    }
}

/// The rendered results of some records: output lines, error lines, counts.
#[derive(Default)]
struct Rendered {
    out: Vec<u8>,
    err: Vec<u8>,
    counts: Counts,
}

impl Rendered {
    /// Adds the outcome of record `n`, which starts on line `line`.
    fn add(&mut self, m: &Mapping, n: u64, line: usize, r: Result<Outcome, Rejection>) {
        use std::io::Write as _;
        match r {
            Ok(Outcome::Mapped { record, .. }) => {
                encode_json(&record, m.target_type(), &mut self.out);
                self.out.push(b'\n');
                self.counts.mapped += 1;
            }
            Ok(Outcome::Filtered) => self.counts.filtered += 1,
            Err(rej) => {
                let _ = writeln!(self.err, "record {n} (line {line}): {rej}");
                self.counts.rejected += 1;
            }
        }
    }
}

pub fn run(cfg: &Config, name: &str, input: &Path, max: usize) -> ExitCode {
    let Some(m) = cfg.mappings.get(name) else {
        eprintln!(
            "error: no mapping {name:?}; have: {}",
            cfg.mappings.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return ExitCode::from(2);
    };
    let reader: Box<dyn Read + Send> = if input == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        match std::fs::File::open(input) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("error: cannot open {}: {e}", input.display());
                return ExitCode::from(2);
            }
        }
    };
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut err = BufWriter::new(std::io::stderr().lock());
    let mut counts = Counts::default();
    let mut write = |r: Rendered| -> std::io::Result<()> {
        out.write_all(&r.out)?;
        err.write_all(&r.err)?;
        counts.add(&r.counts);
        Ok(())
    };
    let result = match m.source_format {
        BodyFormat::Xml => map_xml(m, reader, max).and_then(&mut write),
        _ => map_lines(m, reader, max, &mut write),
    };
    match result.and_then(|_| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return ExitCode::from(2);
        }
    }
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

/// One non-empty line of a batch.
struct Line {
    start: usize,
    end: usize,
    lineno: usize,
    recno: u64,
    /// The line's full length when it is over the limit (only `max + 1`
    /// bytes of it are kept).
    over: Option<usize>,
}

struct Batch {
    seq: u64,
    data: Vec<u8>,
    lines: Vec<Line>,
}

/// Decodes, maps and renders one batch.
fn process(m: &Mapping, b: &Batch, max: usize) -> Rendered {
    let mut r = Rendered {
        out: Vec::with_capacity(b.data.len()),
        ..Default::default()
    };
    for l in &b.lines {
        let body = &b.data[l.start..l.end];
        let outcome = match l.over {
            Some(len) => Err(too_long(len, max)),
            None => m.decode_json(body).and_then(|d| m.apply(&d)).map_err(|e| {
                // serde_json refuses bad UTF-8 inside strings; say so plainly.
                match std::str::from_utf8(body) {
                    Err(u) => reject(format!(
                        "not valid UTF-8 (bad byte at column {})",
                        u.valid_up_to() + 1
                    )),
                    Ok(_) => e,
                }
            }),
        };
        r.add(m, l.recno, l.lineno, outcome);
    }
    r
}

/// Reads the input into batches of whole lines.
fn read_batches(
    input: Box<dyn Read + Send>,
    max: usize,
    tx: mpsc::SyncSender<Batch>,
) -> std::io::Result<()> {
    let mut rd = BufReader::with_capacity(1 << 20, input);
    let (mut lineno, mut recno, mut seq) = (0usize, 0u64, 0u64);
    let mut batch = Batch {
        seq,
        data: Vec::with_capacity(BATCH_BYTES + 4096),
        lines: Vec::new(),
    };
    loop {
        let start = batch.data.len();
        let Some((len, over)) = read_line(&mut rd, &mut batch.data, start, max)? else {
            break;
        };
        lineno += 1;
        let line = &batch.data[start..];
        let lead = line.len() - line.trim_ascii_start().len();
        let trail = line.len() - line.trim_ascii_end().len();
        if lead == line.len() {
            batch.data.truncate(start);
            continue;
        }
        recno += 1;
        let (s, e) = (start + lead, batch.data.len() - trail);
        batch.lines.push(Line {
            start: s,
            end: e,
            lineno,
            recno,
            over: over.then_some(len),
        });
        if batch.data.len() >= BATCH_BYTES {
            seq += 1;
            let next = Batch {
                seq,
                data: Vec::with_capacity(BATCH_BYTES + 4096),
                lines: Vec::new(),
            };
            if tx.send(std::mem::replace(&mut batch, next)).is_err() {
                return Ok(()); // the writer stopped (an output error); it reports it
            }
        }
    }
    if !batch.lines.is_empty() {
        let _ = tx.send(batch);
    }
    Ok(())
}

fn map_lines(
    m: &Mapping,
    input: Box<dyn Read + Send>,
    max: usize,
    write: &mut impl FnMut(Rendered) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(16);
    std::thread::scope(|s| {
        let (work_tx, work_rx) = mpsc::sync_channel::<Batch>(workers * 2);
        let work_rx = Arc::new(Mutex::new(work_rx));
        let (done_tx, done_rx) = mpsc::sync_channel::<(u64, Rendered)>(workers * 2);
        let reader = s.spawn(move || read_batches(input, max, work_tx));
        for _ in 0..workers {
            let (rx, tx) = (work_rx.clone(), done_tx.clone());
            s.spawn(move || loop {
                let next = rx.lock().map(|r| r.recv());
                let Ok(Ok(b)) = next else { break };
                if tx.send((b.seq, process(m, &b, max))).is_err() {
                    break;
                }
            });
        }
        drop((done_tx, work_rx));
        // Results arrive in any order; write them in input order.
        let mut pending = BTreeMap::new();
        let mut next = 0u64;
        let mut result = Ok(());
        for (seq, r) in done_rx.iter() {
            pending.insert(seq, r);
            while let Some(r) = pending.remove(&next) {
                next += 1;
                if let Err(e) = write(r) {
                    result = Err(e);
                    break;
                }
            }
            if result.is_err() {
                break;
            }
        }
        drop(done_rx);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("reader thread panicked")));
        result.and(read)
    })
}

/// Appends one line to `buf` (which holds this line from `start`), keeping
/// at most `max + 1` bytes of it; returns `None` at the end of the input,
/// else the line's length without its newline and whether that is over `max`.
fn read_line(
    rd: &mut impl BufRead,
    buf: &mut Vec<u8>,
    start: usize,
    max: usize,
) -> std::io::Result<Option<(usize, bool)>> {
    let mut total = 0;
    loop {
        let chunk = rd.fill_buf()?;
        if chunk.is_empty() {
            return Ok((total > 0).then_some((total, total > max)));
        }
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let kept = buf.len() - start;
        if kept <= max {
            let room = (max + 1 - kept).min(take);
            buf.extend_from_slice(&chunk[..room]);
        }
        total += take;
        rd.consume(take);
        if done {
            let content = total - 1;
            return Ok(Some((content, content > max)));
        }
    }
}

fn map_xml(m: &Mapping, mut input: Box<dyn Read + Send>, max: usize) -> std::io::Result<Rendered> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    let mut r = Rendered::default();
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            r.add(
                m,
                1,
                1,
                Err(reject(format!("not valid UTF-8 (bad byte at offset {at})"))),
            );
            return Ok(r);
        }
    };
    let ty = m.source_type();
    for (i, (line, doc)) in xml::split_documents(&text).into_iter().enumerate() {
        let outcome = if doc.len() > max {
            Err(too_long(doc.len(), max))
        } else {
            xml::document_to_json(doc, ty)
                .map_err(|e| reject(e.message))
                .and_then(|v| {
                    crate::schema::decode_json_value(&v, ty, false).map_err(Rejection::from)
                })
                .and_then(|d| m.apply(&d))
        };
        r.add(m, i as u64 + 1, line, outcome);
    }
    Ok(r)
}
