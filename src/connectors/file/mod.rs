//! File drop: records in files dropped into a directory, and files written
//! out to one, as bank channels and batch exchanges work.
//!
//! Layout under the connector's `directory`: a source operation reads
//! `<path>/` (default `in/`), a sink operation writes `<path>/` (default
//! `out/`). Every file travels with a checksum file beside it,
//! `NAME.sha256`, in the format of `sha256sum` (`<hex digest>  NAME`).
//!
//! Reading: a file is ready only once its checksum file exists and matches
//! (the writer writes it last, so a file still being written is never
//! picked up); with `checksum = false` on the operation, once its size and
//! time have not changed for `settle_time`. A ready file is claimed by an
//! atomic rename into `work/`, its records are stored 1,000 per
//! transaction, and it is renamed into `done/`. After a crash the files in
//! `work/` are read again first: every record's id is the file's digest and
//! line, so what was stored before the crash is not stored twice. A file
//! that cannot be read (bad checksum, not UTF-8 where text is needed) goes
//! to `failed/` with `NAME.reason` beside it; a bad record inside a good
//! file is quarantined and the others go on.
//!
//! Writing: each delivery (up to `batch` messages) becomes one file, written
//! under a temporary dot-name, flushed to disk and renamed into place, then
//! its checksum file the same way.

pub mod settings;

use crate::config::BodyFormat;
use crate::connectors::intake::Intake;
use crate::connectors::BuildError;
use crate::dispatch::failure::DeliveryError;
use crate::dispatch::{Delivered, Sink};
use crate::store::Claimed;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Records per transaction when reading a file.
const BATCH: usize = 1000;

/// Errors of the file connector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The store refused the records.
    #[error("storing records from {file}: {error}")]
    Store {
        /// The file.
        file: String,
        /// The store's error.
        error: crate::store::StoreError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub use crate::domain::sha256_hex;

/// The text of a checksum file for `name` with these contents.
pub fn checksum_line(name: &str, contents: &[u8]) -> String {
    checksum_text(&sha256_hex(contents), name)
}

/// The text of a checksum file: the file's SHA-256 (hex) and its name, as
/// `sha256sum` writes it.
fn checksum_text(digest: &str, name: &str) -> String {
    format!("{digest}  {name}\n")
}

/// A writer that hashes (SHA-256) what it passes on.
pub struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Hashing<W> {
    /// Hashes what is written to `inner`.
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
        }
    }

    /// The writer and the digest of everything written, in hex.
    pub fn finish(self) -> (W, String) {
        let digest = self.hash.finalize();
        (self.inner, crate::connectors::http::sign::hex(&digest))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The text of a checksum file for the file at `path`, named `name` in
/// it, read as a stream.
pub fn checksum_line_of(path: &Path, name: &str) -> std::io::Result<String> {
    let mut h = Hashing::new(std::io::sink());
    std::io::copy(&mut std::fs::File::open(path)?, &mut h)?;
    Ok(checksum_text(&h.finish().1, name))
}

/// Where `dir/name` is written before it is renamed into place: a dot-file
/// beside it, which readers of the directory pass over.
pub fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.tmp"))
}

/// Writes `contents` to `dir/name` atomically: a temporary dot-file, flushed
/// to disk, renamed into place, and the directory flushed.
pub fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(temp_path(dir, name))?;
    f.write_all(contents)?;
    place(dir, name, f)
}

/// Puts a file written at [`temp_path`] in place: flushed to disk, renamed,
/// and the directory flushed.
pub fn place(dir: &Path, name: &str, written: std::fs::File) -> std::io::Result<()> {
    written.sync_all()?;
    drop(written);
    std::fs::rename(temp_path(dir, name), dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the checksum file of `dir/name` (`digest`: its SHA-256, hex),
/// atomically.
pub fn write_checksum(dir: &Path, name: &str, digest: &str) -> std::io::Result<()> {
    write_atomic(
        dir,
        &format!("{name}.sha256"),
        checksum_text(digest, name).as_bytes(),
    )
}

/// Writes a file and then its checksum file, both atomically: once the
/// checksum file is there, the whole file is.
pub fn write_with_checksum(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    write_atomic(dir, name, contents)?;
    write_atomic(
        dir,
        &format!("{name}.sha256"),
        checksum_line(name, contents).as_bytes(),
    )
}

/// What a file source makes of a bank's result file (`format =
/// "pain002"` or `"layout"`): one record per payment for the feeds. The
/// transport only moves and claims the file; the hub wires in the payout
/// register's reconciliation (`payout::Reconciler`).
pub trait ResultFiles: Send + Sync {
    /// The records of one complete result file, or why it is refused (the
    /// file then goes to `failed/` with the reason).
    fn read<'a>(
        &'a self,
        name: &'a str,
        contents: &'a [u8],
    ) -> futures::future::BoxFuture<'a, Result<Vec<Vec<u8>>, RefusedFile>>;
}

/// Why a result handler refused a file (its text goes to `NAME.reason`):
/// the handler's own error type.
pub type RefusedFile = Box<dyn std::error::Error + Send + Sync>;

/// How a source decides that a file is complete.
#[derive(Clone, Copy, Debug)]
pub enum Readiness {
    /// Its `NAME.sha256` exists (and must match).
    Checksum,
    /// Its size and modification time have not changed for this long.
    Quiet(Duration),
}

/// What a complete file became.
#[derive(Debug)]
pub enum FileRead {
    /// Its records are stored (or were already).
    Stored {
        /// Records in the file.
        records: usize,
        /// What the store did with them.
        outcome: crate::store::IngestOutcome,
    },
    /// The file as a whole cannot be read: why (the records are not
    /// stored; the file goes aside with this reason).
    Refused(String),
}

/// Makes a complete file's contents into stored records, whatever brought
/// the file (a watched directory, an SFTP server): each record's id is the
/// file's digest and line, so a file read again after a crash stores
/// nothing twice.
pub struct FileReader {
    intake: Intake,
    format: BodyFormat,
    /// `format = "pain002"` or `"layout"`: what the bank's result files
    /// become (wired in by the hub: the payout register's reconciliation).
    results: Option<std::sync::Arc<dyn ResultFiles>>,
}

impl FileReader {
    /// A reader of files in `format` for `intake`.
    pub fn new(intake: Intake, format: BodyFormat) -> Self {
        FileReader {
            intake,
            format,
            results: None,
        }
    }

    /// Hands the bank's result files (`format = "pain002"` or `"layout"`)
    /// to `results`, whose records go on to the feeds.
    pub fn with_results(mut self, results: std::sync::Arc<dyn ResultFiles>) -> Self {
        self.results = Some(results);
        self
    }

    /// The source the records are stored for.
    pub fn source(&self) -> &crate::config::OpRef {
        self.intake.source()
    }

    /// Stores the records of file `name` (`contents`); `checksum`: the
    /// text of its checksum file, when files travel with one (a file that
    /// does not match it is refused).
    pub async fn read(
        &self,
        name: &str,
        contents: &[u8],
        checksum: Option<&str>,
    ) -> Result<FileRead, FileError> {
        let digest = sha256_hex(contents);
        if let Some(want) = checksum {
            let want = want.split_whitespace().next().unwrap_or("");
            if !want.eq_ignore_ascii_case(&digest) {
                return Ok(FileRead::Refused(format!(
                    "its checksum file says {want:?} but its SHA-256 is {digest}: incomplete or corrupted"
                )));
            }
        }
        let owned: Vec<(usize, Vec<u8>)>;
        let records: Vec<(usize, &[u8])> =
            if matches!(self.format, BodyFormat::Pain002 | BodyFormat::Layout) {
                match self.pain002(name, contents).await {
                    Ok(r) => {
                        owned = r;
                        owned.iter().map(|(l, b)| (*l, b.as_slice())).collect()
                    }
                    Err(why) => return Ok(FileRead::Refused(why)),
                }
            } else {
                match self.records(contents) {
                    Ok(r) => r,
                    Err(why) => return Ok(FileRead::Refused(why)),
                }
            };
        let mut total = crate::store::IngestOutcome::default();
        for chunk in records.chunks(BATCH) {
            let batch = chunk
                .iter()
                .map(|(line, raw)| {
                    self.intake.prepare(
                        raw,
                        Some(format!("{}:{line}", &digest[..32])),
                        Some(format!("{name}:{line}")),
                    )
                })
                .collect();
            let o = self
                .intake
                .commit(batch)
                .await
                .map_err(|error| FileError::Store {
                    file: name.to_string(),
                    error,
                })?;
            total.stored += o.stored;
            total.duplicates += o.duplicates;
            total.messages += o.messages;
            total.quarantined += o.quarantined;
        }
        Ok(FileRead::Stored {
            records: records.len(),
            outcome: total,
        })
    }

    /// A bank's result file: its records, as the result handler makes them.
    async fn pain002(&self, name: &str, contents: &[u8]) -> Result<Vec<(usize, Vec<u8>)>, String> {
        let results = self
            .results
            .as_ref()
            .ok_or("no handler of bank result files is wired to this source")?;
        Ok(results
            .read(name, contents)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .enumerate()
            .map(|(i, b)| (i + 1, b))
            .collect())
    }

    /// The records of a file, with their 1-based line numbers.
    fn records<'a>(&self, contents: &'a [u8]) -> Result<Vec<(usize, &'a [u8])>, String> {
        match self.format {
            BodyFormat::Json => Ok(contents
                .split(|&b| b == b'\n')
                .enumerate()
                .map(|(i, l)| (i + 1, l.trim_ascii()))
                .filter(|(_, l)| !l.is_empty())
                .collect()),
            BodyFormat::Xml => {
                let text = std::str::from_utf8(contents)
                    .map_err(|e| format!("not UTF-8 text (byte {})", e.valid_up_to()))?;
                Ok(crate::formats::xml::split_documents(text)
                    .into_iter()
                    .map(|(line, doc)| (line, doc.as_bytes()))
                    .collect())
            }
            BodyFormat::Avro | BodyFormat::Pain002 | BodyFormat::Layout => {
                Err("Avro records are not read from files; use JSON lines or XML".into())
            }
        }
    }
}

/// Reads files dropped into a directory.
pub struct FileSource {
    reader: FileReader,
    dir: PathBuf,
    pattern: glob::Pattern,
    readiness: Readiness,
    poll: Duration,
    /// Size, modification time and when first seen so, per file (for
    /// `Readiness::Quiet`).
    seen: std::sync::Mutex<std::collections::HashMap<PathBuf, (u64, SystemTime, SystemTime)>>,
    /// Files read to the end (for tests and logs).
    pub files_done: AtomicU64,
}

impl FileSource {
    /// The source of a watched directory (made, with its `work`, `done`
    /// and `failed` folders, if missing).
    pub fn new(intake: Intake, watch: &settings::Watch) -> Result<Self, BuildError> {
        let dir = watch.dir.clone();
        for sub in ["", "work", "done", "failed"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|source| BuildError::Io {
                path: dir.join(sub),
                source,
            })?;
        }
        Ok(FileSource {
            reader: FileReader::new(intake, watch.format),
            dir,
            pattern: watch.pattern.clone(),
            readiness: watch.readiness,
            poll: watch.poll,
            seen: Default::default(),
            files_done: AtomicU64::new(0),
        })
    }

    /// Hands the bank's result files (`format = "pain002"` or `"layout"`)
    /// to `results`, whose records go on to the feeds.
    pub fn with_results(mut self, results: std::sync::Arc<dyn ResultFiles>) -> Self {
        self.reader = self.reader.with_results(results);
        self
    }

    /// Polls until `shutdown`; a file being read when it comes is finished
    /// first (or, if the process dies, read again at the next start).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(source = %self.reader.source(), dir = %self.dir.display(), "Watching for files");
        loop {
            if let Err(e) = self.poll_once().await {
                tracing::error!(source = %self.reader.source(), error = %e, "Reading files failed; trying again");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// One poll: files left in `work/` by a crash, then ready new files, in
    /// name order. Returns how many files were read.
    pub async fn poll_once(&self) -> Result<usize, FileError> {
        let work = self.dir.join("work");
        let mut n = 0;
        for name in self.names(&work)? {
            self.read_claimed(&name).await?;
            n += 1;
        }
        for name in self.names(&self.dir)? {
            if !self.ready(&name)? {
                continue;
            }
            // Claim: the checksum file first, then the file, so that a crash
            // in between leaves the file where it is (and it is re-claimed).
            let sum = format!("{name}.sha256");
            if self.dir.join(&sum).exists() {
                std::fs::rename(self.dir.join(&sum), work.join(&sum))
                    .map_err(io(&self.dir.join(&sum)))?;
            }
            std::fs::rename(self.dir.join(&name), work.join(&name))
                .map_err(io(&self.dir.join(&name)))?;
            self.read_claimed(&name).await?;
            n += 1;
        }
        Ok(n)
    }

    /// File names in `dir` that match the pattern (no dot-files, no
    /// checksum files), sorted.
    fn names(&self, dir: &Path) -> Result<Vec<String>, FileError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || name.ends_with(".sha256") || name.ends_with(".reason") {
                continue;
            }
            if e.file_type().map_err(io(dir))?.is_file() && self.pattern.matches(&name) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    fn ready(&self, name: &str) -> Result<bool, FileError> {
        match self.readiness {
            Readiness::Checksum => Ok(self.dir.join(format!("{name}.sha256")).exists()),
            Readiness::Quiet(quiet) => {
                let p = self.dir.join(name);
                let md = std::fs::metadata(&p).map_err(io(&p))?;
                let now = SystemTime::now();
                let mtime = md.modified().map_err(io(&p))?;
                let mut seen = self.seen.lock().unwrap();
                let e = seen.entry(p).or_insert((md.len(), mtime, now));
                if (e.0, e.1) != (md.len(), mtime) {
                    *e = (md.len(), mtime, now);
                    return Ok(false);
                }
                Ok(now.duration_since(e.2).unwrap_or_default() >= quiet)
            }
        }
    }

    /// Reads a claimed file in `work/` and moves it to `done/` or `failed/`.
    async fn read_claimed(&self, name: &str) -> Result<(), FileError> {
        let work = self.dir.join("work");
        let path = work.join(name);
        let contents = std::fs::read(&path).map_err(io(&path))?;
        let sum_path = work.join(format!("{name}.sha256"));
        let checksum = match self.readiness {
            Readiness::Checksum => Some(std::fs::read_to_string(&sum_path).unwrap_or_default()),
            Readiness::Quiet(_) => None,
        };
        let (records, total) = match self
            .reader
            .read(name, &contents, checksum.as_deref())
            .await?
        {
            FileRead::Stored { records, outcome } => (records, outcome),
            FileRead::Refused(why) => return self.fail(name, &why),
        };
        let done = self.dir.join("done");
        if sum_path.exists() {
            std::fs::rename(&sum_path, done.join(format!("{name}.sha256")))
                .map_err(io(&sum_path))?;
        }
        std::fs::rename(&path, done.join(name)).map_err(io(&path))?;
        self.files_done.fetch_add(1, Ordering::Relaxed);
        tracing::info!(source = %self.reader.source(), file = %name, records, stored = total.stored,
            already_stored = total.duplicates, messages = total.messages, quarantined = total.quarantined, "File read");
        Ok(())
    }

    fn fail(&self, name: &str, why: &str) -> Result<(), FileError> {
        let work = self.dir.join("work");
        let failed = self.dir.join("failed");
        tracing::error!(source = %self.reader.source(), file = %name, reason = %why, "File refused; moved to failed/");
        write_atomic(
            &failed,
            &format!("{name}.reason"),
            format!("{why}\n").as_bytes(),
        )
        .map_err(io(&failed))?;
        let sum = work.join(format!("{name}.sha256"));
        if sum.exists() {
            std::fs::rename(&sum, failed.join(format!("{name}.sha256"))).map_err(io(&sum))?;
        }
        std::fs::rename(work.join(name), failed.join(name)).map_err(io(&work))?;
        Ok(())
    }
}

/// Writes each delivery as one file with a checksum file beside it.
///
/// JSON bodies: one line per message, `{"idempotency_key": …, "key": …,
/// "record": …}`, so the reader can skip what it already applied. XML bodies:
/// one document per message (the operation's `xml_root` and namespace), each
/// preceded by its `<?xml` declaration with the idempotency key in a comment.
pub struct FileSink {
    dir: PathBuf,
    operation: String,
    batch: usize,
    xml: Option<(String, Option<String>)>,
}

impl FileSink {
    /// A sink writing into `dir` (made if missing).
    pub fn new(dir: PathBuf, operation: &str, batch: usize) -> Result<Self, BuildError> {
        std::fs::create_dir_all(&dir).map_err(|source| BuildError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(FileSink {
            dir,
            operation: operation.to_string(),
            batch: batch.max(1),
            xml: None,
        })
    }

    /// Writes XML documents instead of JSON lines.
    pub fn with_xml(mut self, root: &str, namespace: Option<&str>) -> Self {
        self.xml = Some((root.to_string(), namespace.map(str::to_string)));
        self
    }

    fn write(&self, ms: &[Claimed]) -> Result<Delivered, DeliveryError> {
        let mut body = Vec::with_capacity(ms.iter().map(|m| m.payload.len() + 96).sum());
        for m in ms {
            match &self.xml {
                None => {
                    body.extend_from_slice(b"{\"idempotency_key\":");
                    body.extend_from_slice(
                        serde_json::to_string(&m.idem_key)
                            .unwrap_or_default()
                            .as_bytes(),
                    );
                    body.extend_from_slice(b",\"key\":");
                    body.extend_from_slice(
                        serde_json::to_string(&m.key).unwrap_or_default().as_bytes(),
                    );
                    body.extend_from_slice(b",\"record\":");
                    body.extend_from_slice(&m.payload);
                    body.extend_from_slice(b"}\n");
                }
                Some((root, ns)) => {
                    let doc =
                        crate::formats::xml::json_to_document(&m.payload, root, ns.as_deref())
                            .map_err(|e| DeliveryError::Request(e.to_string()))?;
                    // The document starts with its declaration; the key goes
                    // in a comment right after it.
                    let doc = String::from_utf8_lossy(&doc);
                    let (decl, rest) = match doc.find("?>") {
                        Some(i) if doc.starts_with("<?xml") => doc.split_at(i + 2),
                        _ => ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", doc.as_ref()),
                    };
                    body.extend_from_slice(decl.as_bytes());
                    body.extend_from_slice(
                        format!("\n<!-- idempotency-key: {} -->", m.idem_key).as_bytes(),
                    );
                    body.extend_from_slice(rest.as_bytes());
                    body.push(b'\n');
                }
            }
        }
        let ext = if self.xml.is_some() { "xml" } else { "jsonl" };
        let first = ms.first().map_or(0, |m| m.id);
        let name = format!(
            "{}-{}-{first:012}-{}.{ext}",
            self.operation,
            crate::store::now_ms(),
            ms.len()
        );
        write_with_checksum(&self.dir, &name, &body).map_err(|e| {
            DeliveryError::Io(format!("writing {}: {e}", self.dir.join(&name).display()))
        })?;
        Ok(Delivered {
            status_code: None,
            excerpt: Some(name),
            response_sha256: None,
        })
    }
}

impl Sink for FileSink {
    fn deliver<'a>(&'a self, m: &'a Claimed) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move { self.write(std::slice::from_ref(m)) })
    }

    fn max_batch(&self) -> usize {
        self.batch
    }

    fn deliver_batch<'a>(
        &'a self,
        ms: &'a [Claimed],
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move { self.write(ms) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_lines_are_sha256sum_format() {
        // sha256("abc")
        assert_eq!(
            checksum_line("a.txt", b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  a.txt\n"
        );
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        write_with_checksum(d.path(), "x.jsonl", b"{}\n").unwrap();
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["x.jsonl", "x.jsonl.sha256"]);
        assert_eq!(std::fs::read(d.path().join("x.jsonl")).unwrap(), b"{}\n");
    }
}
