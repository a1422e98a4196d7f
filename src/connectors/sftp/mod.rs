//! SFTP: a bank's payment files uploaded to its server, and its result
//! files picked up from there, as banks' bulk payment channels work.
//!
//! Uploading (the payout register's files target, see
//! `payout::FilesSink`): the file is rendered into a local unnamed
//! temporary file (hashed as it is written, never held in memory whole),
//! uploaded to a dot-name beside its place (`.NAME.tmp`, which a bank's
//! reader passes over), flushed on the server (`fsync@openssh.com`), its
//! size checked, renamed into place, and only then its checksum file
//! `NAME.sha256` the same way: once the checksum file is there the whole
//! file is. The same batch always renders to the same bytes and the same
//! name, so an upload broken off and tried again puts the same file in
//! the same place, and a retry after the file was placed only finishes
//! the checksum file (the register records the digest between the two):
//! the bank never sees the hub's own retry as a second file.
//!
//! Reading: a file in the watched directory is ready once its checksum
//! file is there (or, with `checksum = false`, once its size and time have
//! not changed for `settle_time`); it is read, checked against its
//! checksum, its records stored (each record's id is the file's digest and
//! line, so a file read twice stores nothing twice), and only then moved
//! on the server into `done/` (or `failed/` with `NAME.reason` beside it,
//! if it cannot be read as a whole). A crash before the move reads the
//! file again at the next poll, storing nothing new.

pub mod client;
pub mod settings;

use crate::connectors::file::{FileError, FileRead, FileReader, Readiness};
pub use client::{SftpClient, SftpError};
use settings::RemoteWatch;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The temporary name a file is uploaded under: a dot-file beside it.
pub fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

/// Uploads a local file (`len` bytes) to `dir/name` on the server: under
/// its temporary name, flushed, checked, renamed into place. Its checksum
/// file is put by [`place_checksum`], after.
pub async fn upload(
    client: &SftpClient,
    dir: &str,
    name: &str,
    local: tokio::fs::File,
    len: u64,
) -> Result<(), SftpError> {
    client.make_dirs(dir).await?;
    let tmp = format!("{dir}/{}", temp_name(name));
    client.put_file(&tmp, local, len).await?;
    client.replace(&tmp, &format!("{dir}/{name}")).await
}

/// Puts the checksum file of `dir/name` (`digest`: its SHA-256, hex),
/// under a temporary name and renamed into place.
pub async fn place_checksum(
    client: &SftpClient,
    dir: &str,
    name: &str,
    digest: &str,
) -> Result<(), SftpError> {
    let sum = format!("{name}.sha256");
    let tmp = format!("{dir}/{}", temp_name(&sum));
    let text = format!("{digest}  {name}\n");
    client.put_bytes(&tmp, text.as_bytes()).await?;
    client.replace(&tmp, &format!("{dir}/{sum}")).await
}

/// After a crash between placing a file and its checksum file: puts the
/// checksum file if the file is still there without one (if the file is
/// gone, the bank has taken it, and nothing is sent again). True if it
/// put one.
pub async fn finish(
    client: &SftpClient,
    dir: &str,
    name: &str,
    digest: &str,
) -> Result<bool, SftpError> {
    let placed = client.exists(&format!("{dir}/{name}")).await?;
    let summed = client.exists(&format!("{dir}/{name}.sha256")).await?;
    if placed && !summed {
        place_checksum(client, dir, name, digest).await?;
        return Ok(true);
    }
    Ok(false)
}

/// Why a poll of an SFTP directory stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The server.
    #[error(transparent)]
    Sftp(#[from] SftpError),
    /// The store.
    #[error(transparent)]
    File(#[from] FileError),
}

/// Picks up files from a directory on an SFTP server.
pub struct SftpSource {
    reader: FileReader,
    client: Arc<SftpClient>,
    watch: RemoteWatch,
    /// Size and time of each file and when first seen so (for
    /// `Readiness::Quiet`).
    seen: std::sync::Mutex<HashMap<String, (u64, u32, Instant)>>,
    /// Files read to the end (for tests and logs).
    pub files_done: std::sync::atomic::AtomicU64,
}

impl SftpSource {
    /// The source of a watched remote directory.
    pub fn new(reader: FileReader, client: Arc<SftpClient>, watch: RemoteWatch) -> Self {
        SftpSource {
            reader,
            client,
            watch,
            seen: Default::default(),
            files_done: Default::default(),
        }
    }

    /// Polls until `shutdown`; a server that cannot be reached is tried
    /// again at the next poll.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(source = %self.reader.source(), server = %self.client.server(), dir = %self.watch.dir, "Watching an SFTP directory");
        loop {
            if let Err(e) = self.poll_once().await {
                tracing::error!(source = %self.reader.source(), error = %e, "Reading files over SFTP failed; trying again");
            }
            if crate::connectors::pause(self.watch.poll, &mut shutdown).await {
                return;
            }
        }
    }

    /// One look: every ready file, in name order, read and moved aside.
    /// Returns how many files were read.
    pub async fn poll_once(&self) -> Result<usize, SourceError> {
        let dir = &self.watch.dir;
        let entries = match self.client.list(dir).await {
            // Not made yet: made now (as the file source makes its
            // directory), and nothing to read.
            Err(e) if SftpClient::is_missing(&e) => {
                self.client.make_dirs(dir).await?;
                return Ok(0);
            }
            r => r?,
        };
        let sums: std::collections::HashSet<&str> = entries
            .iter()
            .filter_map(|e| e.name.strip_suffix(".sha256"))
            .collect();
        // A checksum file whose file is gone: a crash between moving the
        // file aside and its checksum file; its move is finished.
        let files: std::collections::HashSet<&str> =
            entries.iter().map(|e| e.name.as_str()).collect();
        for lone in sums.iter().filter(|n| !files.contains(*n)) {
            for aside in ["done", "failed"] {
                if self.client.exists(&format!("{dir}/{aside}/{lone}")).await? {
                    let sum = format!("{lone}.sha256");
                    self.client
                        .replace(&format!("{dir}/{sum}"), &format!("{dir}/{aside}/{sum}"))
                        .await?;
                    break;
                }
            }
        }
        let mut names: Vec<&client::Entry> = entries
            .iter()
            .filter(|e| {
                e.is_file
                    && !e.name.starts_with('.')
                    && !e.name.ends_with(".sha256")
                    && !e.name.ends_with(".reason")
                    && self.watch.pattern.matches(&e.name)
            })
            .collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        let mut n = 0;
        for e in names {
            let ready = match self.watch.readiness {
                Readiness::Checksum => sums.contains(e.name.as_str()),
                Readiness::Quiet(quiet) => self.quiet(e, quiet),
            };
            if !ready {
                continue;
            }
            self.read_one(&e.name).await?;
            n += 1;
        }
        Ok(n)
    }

    fn quiet(&self, e: &client::Entry, quiet: Duration) -> bool {
        let mut seen = self.seen.lock().unwrap();
        let now = Instant::now();
        let s = seen.entry(e.name.clone()).or_insert((e.size, e.mtime, now));
        if (s.0, s.1) != (e.size, e.mtime) {
            *s = (e.size, e.mtime, now);
            return false;
        }
        now.duration_since(s.2) >= quiet
    }

    async fn read_one(&self, name: &str) -> Result<(), SourceError> {
        let dir = &self.watch.dir;
        let path = format!("{dir}/{name}");
        let sum = format!("{path}.sha256");
        let checksum = match self.watch.readiness {
            Readiness::Checksum => {
                Some(String::from_utf8_lossy(&self.client.read(&sum).await?).into_owned())
            }
            Readiness::Quiet(_) => None,
        };
        let contents = self.client.read(&path).await?;
        let read = self
            .reader
            .read(name, &contents, checksum.as_deref())
            .await?;
        let aside = match &read {
            FileRead::Stored { .. } => "done",
            FileRead::Refused(_) => "failed",
        };
        let to = format!("{dir}/{aside}");
        self.client.make_dirs(&to).await?;
        if let FileRead::Refused(why) = &read {
            tracing::error!(source = %self.reader.source(), file = %name, reason = %why, "File refused; moved to failed/ on the server");
            self.client
                .put_bytes(
                    &format!("{to}/{name}.reason"),
                    format!("{why}\n").as_bytes(),
                )
                .await?;
        }
        // The file first, then its checksum file: a crash in between
        // leaves a lone checksum file, moved after it at the next poll.
        self.client.replace(&path, &format!("{to}/{name}")).await?;
        if checksum.is_some() {
            self.client
                .replace(&sum, &format!("{to}/{name}.sha256"))
                .await?;
        }
        self.seen.lock().unwrap().remove(name);
        if let FileRead::Stored { records, outcome } = read {
            self.files_done
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(source = %self.reader.source(), file = %name, records, stored = outcome.stored,
                already_stored = outcome.duplicates, messages = outcome.messages, quarantined = outcome.quarantined, "File read over SFTP");
        }
        Ok(())
    }
}
