//! One SSH connection to the server with its SFTP session, made when first
//! needed, shared by the connector's operations, and made again after it
//! breaks. The server's key is checked against the pin before anything
//! is sent; the login is a key or a password from a secret reference.

use super::settings::{HostPin, LoginMethod, SftpSettings};
use crate::dispatch::failure::DeliveryError;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{OpenFlags, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Bytes in one SFTP write request (OpenSSH's server takes up to 255 KiB).
const WRITE_LEN: u32 = 255 * 1024;
/// Requests in flight at once per file.
const IN_FLIGHT: usize = 64;

/// Why an SFTP exchange failed. The text names the server and the remote
/// path, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    /// The server could not be reached, or the connection broke.
    #[error("sftp://{server}: cannot connect: {reason}")]
    Connect {
        /// `host:port`.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server's key is not the pinned one.
    #[error("sftp://{server}: host key refused: {reason}")]
    HostKey {
        /// `host:port`.
        server: String,
        /// Which key, and what was expected.
        reason: String,
    },
    /// The server refused the login.
    #[error("sftp://{server}: login as {user} refused: {reason}")]
    Login {
        /// `host:port`.
        server: String,
        /// The user.
        user: String,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("sftp://{server}: no answer within {after:?}")]
    Timeout {
        /// `host:port`.
        server: String,
        /// The time limit.
        after: Duration,
    },
    /// The server refused a request on a path.
    #[error("sftp://{server}{path}: {reason}")]
    Remote {
        /// `host:port`.
        server: String,
        /// The remote path (with a leading `/` when relative, for display).
        path: String,
        /// The server's reason.
        reason: String,
        /// The status the server answered with (the connection is sound:
        /// no such file, permission denied); none if the exchange broke.
        status: Option<StatusCode>,
    },
    /// A local file could not be read.
    #[error("{0}")]
    Local(String),
    /// A secret cannot be read.
    #[error(transparent)]
    Secret(#[from] crate::config::secret::SecretError),
}

impl SftpError {
    /// As a delivery failure: all of them may pass (the server comes back,
    /// a pin or key is mended), so the dispatcher retries them and the
    /// breaker opens on a bank that stays away.
    pub fn delivery(self) -> DeliveryError {
        match self {
            SftpError::Timeout { after, .. } => DeliveryError::Timeout(after),
            e @ (SftpError::Connect { .. }
            | SftpError::HostKey { .. }
            | SftpError::Login { .. }
            | SftpError::Secret(_)) => DeliveryError::Connect(e.to_string()),
            e @ (SftpError::Remote { .. } | SftpError::Local(_)) => {
                DeliveryError::Io(e.to_string())
            }
        }
    }
}

/// An entry of a remote directory.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Whether it is a regular file.
    pub is_file: bool,
    /// Its size.
    pub size: u64,
    /// Its modification time, seconds since 1970.
    pub mtime: u32,
}

/// Checks the server's key against the pin; a refusal says why.
struct Pinned {
    host: String,
    port: u16,
    pin: HostPin,
    refused: Arc<Mutex<Option<String>>>,
}

impl Pinned {
    fn check(&self, key: &russh::keys::PublicKey) -> Result<(), String> {
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        match &self.pin {
            HostPin::Fingerprint(want) if *want == fp => Ok(()),
            HostPin::Fingerprint(want) => Err(format!(
                "its key is {fp}, not the pinned {want} (refused: the key changed or this is another server)"
            )),
            HostPin::KnownHosts(path) => {
                if !path.exists() {
                    return Err(format!(
                        "its key is {fp}; the known_hosts file {} does not exist",
                        path.display()
                    ));
                }
                match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(format!(
                        "its key {fp} is not in {} (an unknown host: check the fingerprint with the bank, then add its line)",
                        path.display()
                    )),
                    Err(russh::keys::Error::KeyChanged { line }) => Err(format!(
                        "its key {fp} differs from the one on line {} of {} (refused: the key CHANGED; someone may be in the middle)",
                        file_line(path, line),
                        path.display()
                    )),
                    Err(e) => Err(format!("{}: {e}", path.display())),
                }
            }
        }
    }
}

/// The line of a known_hosts file that russh calls its `nth` (it counts
/// the lines that are not comments).
fn file_line(path: &std::path::Path, nth: usize) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#'))
        .nth(nth.saturating_sub(1))
        .map_or(nth, |(i, _)| i + 1)
}

impl russh::client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.check(key),
            PublicKeyOrCertificate::Certificate(_) => {
                Err("the server offered a host certificate; pin its key instead".into())
            }
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(why) => {
                *self.refused.lock().unwrap() = Some(why);
                Ok(false)
            }
        }
    }
}

/// A live connection.
struct Conn {
    ssh: russh::client::Handle<Pinned>,
    sftp: SftpSession,
}

/// The client of one SFTP server.
pub struct SftpClient {
    settings: SftpSettings,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    /// Remote directories known to be there (forgotten on any failure),
    /// so that each file's upload or move does not look them up again.
    made: Mutex<std::collections::HashSet<String>>,
}

impl SftpClient {
    /// A client of the connector's server (nothing connects yet).
    pub fn new(settings: &SftpSettings) -> Self {
        SftpClient {
            settings: settings.clone(),
            conn: Default::default(),
            made: Default::default(),
        }
    }

    /// `host:port`, for messages.
    pub fn server(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    fn remote(&self, path: &str, e: russh_sftp::client::error::Error) -> SftpError {
        match e {
            russh_sftp::client::error::Error::Timeout => SftpError::Timeout {
                server: self.server(),
                after: self.settings.timeout,
            },
            e => SftpError::Remote {
                server: self.server(),
                path: if path.starts_with('/') {
                    path.to_string()
                } else {
                    format!("/{path}")
                },
                status: match &e {
                    russh_sftp::client::error::Error::Status(s) => Some(s.status_code),
                    _ => None,
                },
                reason: match e {
                    russh_sftp::client::error::Error::Status(s) if !s.error_message.is_empty() => {
                        s.error_message
                    }
                    e => e.to_string(),
                },
            },
        }
    }

    async fn connect(&self) -> Result<Conn, SftpError> {
        let s = &self.settings;
        let server = self.server();
        let config = Arc::new(russh::client::Config {
            inactivity_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Some(Duration::from_secs(15)),
            window_size: 16 << 20,
            maximum_packet_size: 256 * 1024,
            nodelay: true,
            ..Default::default()
        });
        let refused = Arc::new(Mutex::new(None));
        let handler = Pinned {
            host: s.host.clone(),
            port: s.port,
            pin: s.pin.clone(),
            refused: refused.clone(),
        };
        let timeout = |_| SftpError::Timeout {
            server: server.clone(),
            after: s.timeout,
        };
        let connect = |e: russh::Error| SftpError::Connect {
            server: server.clone(),
            reason: e.to_string(),
        };
        let made = tokio::time::timeout(
            s.timeout,
            russh::client::connect(config, (s.host.as_str(), s.port), handler),
        )
        .await
        .map_err(timeout)?;
        let mut ssh = match made {
            Ok(h) => h,
            Err(e) => {
                return Err(match refused.lock().unwrap().take() {
                    Some(reason) => SftpError::HostKey {
                        server: server.clone(),
                        reason,
                    },
                    None => connect(e),
                })
            }
        };
        let user = s.login.user.clone();
        let login = |reason: String| SftpError::Login {
            server: server.clone(),
            user: user.clone(),
            reason,
        };
        let auth = match &s.login.method {
            LoginMethod::Key {
                private_key,
                passphrase,
            } => {
                let text = private_key.resolve()?;
                let pass = passphrase.as_ref().map(|p| p.resolve()).transpose()?;
                let key = russh::keys::decode_secret_key(&text, pass.as_deref()).map_err(|e| {
                    login(format!("the private key {private_key} cannot be read: {e}"))
                })?;
                let hash = match key.algorithm().is_rsa() {
                    true => ssh.best_supported_rsa_hash().await.ok().flatten().flatten(),
                    false => None,
                };
                let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
                tokio::time::timeout(s.timeout, ssh.authenticate_publickey(&user, key)).await
            }
            LoginMethod::Password(p) => {
                let pw = p.resolve()?;
                tokio::time::timeout(s.timeout, ssh.authenticate_password(&user, pw)).await
            }
        }
        .map_err(timeout)?
        .map_err(connect)?;
        if !auth.success() {
            return Err(login(
                "the server did not accept the key or password".into(),
            ));
        }
        let session = async {
            let ch = ssh.channel_open_session().await?;
            ch.request_subsystem(true, "sftp").await?;
            Ok::<_, russh::Error>(ch)
        };
        let ch = tokio::time::timeout(s.timeout, session)
            .await
            .map_err(timeout)?
            .map_err(connect)?;
        let cfg = russh_sftp::client::Config {
            max_concurrent_reads: IN_FLIGHT,
            max_concurrent_writes: IN_FLIGHT,
            max_write_packet_len: WRITE_LEN + 1024,
            request_timeout_secs: s.timeout.as_secs().max(1),
            ..Default::default()
        };
        let sftp = tokio::time::timeout(
            s.timeout,
            SftpSession::new_with_config(ch.into_stream(), cfg),
        )
        .await
        .map_err(timeout)?
        .map_err(|e| self.remote("", e))?;
        tracing::info!(server = %server, user = %user, "SFTP session opened");
        Ok(Conn { ssh, sftp })
    }

    /// The live connection, made if there is none or it broke.
    async fn conn(&self) -> Result<Arc<Conn>, SftpError> {
        let mut held = self.conn.lock().await;
        if let Some(c) = held.as_ref() {
            if !c.ssh.is_closed() {
                return Ok(c.clone());
            }
        }
        *held = None;
        let c = Arc::new(self.connect().await?);
        *held = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection after a failure (the next call connects
    /// again).
    pub async fn reset(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            let _ = c.sftp.close().await;
        }
    }

    /// Runs `f` on the session; on a failure the connection is dropped.
    async fn with<T, F>(&self, f: impl FnOnce(Arc<Conn>) -> F) -> Result<T, SftpError>
    where
        F: std::future::Future<Output = Result<T, SftpError>>,
    {
        let c = self.conn().await?;
        let out = f(c).await;
        if out.is_err() {
            self.made.lock().unwrap().clear();
        }
        // A refusal the server answered leaves the connection sound.
        if matches!(&out, Err(e) if !matches!(e, SftpError::Remote { status: Some(_), .. })) {
            self.reset().await;
        }
        out
    }

    /// Connects (if not connected) and logs in: for `tongban check`-like
    /// probes and tests.
    pub async fn probe(&self) -> Result<(), SftpError> {
        self.conn().await.map(drop)
    }

    /// The regular files and other entries of a remote directory.
    pub async fn list(&self, dir: &str) -> Result<Vec<Entry>, SftpError> {
        self.with(|c| async move {
            let rd = c
                .sftp
                .read_dir(dir)
                .await
                .map_err(|e| self.remote(dir, e))?;
            Ok(rd
                .map(|e| {
                    let md = e.metadata();
                    Entry {
                        name: e.file_name(),
                        is_file: md.file_type().is_file(),
                        size: md.size.unwrap_or(0),
                        mtime: md.mtime.unwrap_or(0),
                    }
                })
                .collect())
        })
        .await
    }

    /// Whether an error is the server saying the path does not exist.
    pub fn is_missing(e: &SftpError) -> bool {
        matches!(
            e,
            SftpError::Remote {
                status: Some(StatusCode::NoSuchFile),
                ..
            }
        )
    }

    /// Whether a remote path exists.
    pub async fn exists(&self, path: &str) -> Result<bool, SftpError> {
        self.with(|c| async move {
            c.sftp
                .try_exists(path)
                .await
                .map_err(|e| self.remote(path, e))
        })
        .await
    }

    /// A remote file's contents.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>, SftpError> {
        self.with(|c| async move { c.sftp.read(path).await.map_err(|e| self.remote(path, e)) })
            .await
    }

    /// Makes a remote directory and its parents, where missing.
    pub async fn make_dirs(&self, dir: &str) -> Result<(), SftpError> {
        if self.made.lock().unwrap().contains(dir) {
            return Ok(());
        }
        self.with(|c| async move {
            let mut at = String::new();
            for (i, part) in dir.split('/').enumerate() {
                if i > 0 || dir.starts_with('/') {
                    at.push('/');
                }
                at.push_str(part);
                if part.is_empty() || part == "." {
                    continue;
                }
                if !c
                    .sftp
                    .try_exists(at.as_str())
                    .await
                    .map_err(|e| self.remote(&at, e))?
                {
                    if let Err(e) = c.sftp.create_dir(at.as_str()).await {
                        // Made meanwhile by another writer: fine.
                        if !c.sftp.try_exists(at.as_str()).await.unwrap_or(false) {
                            return Err(self.remote(&at, e));
                        }
                    }
                }
            }
            self.made.lock().unwrap().insert(dir.to_string());
            Ok(())
        })
        .await
    }

    /// Renames `from` to `to`, replacing `to` if it is there (SFTP's
    /// rename refuses an existing target).
    pub async fn replace(&self, from: &str, to: &str) -> Result<(), SftpError> {
        self.with(|c| async move {
            match c.sftp.remove_file(to).await {
                Ok(()) => {}
                Err(russh_sftp::client::error::Error::Status(s))
                    if s.status_code == StatusCode::NoSuchFile => {}
                Err(e) => return Err(self.remote(to, e)),
            }
            c.sftp
                .rename(from, to)
                .await
                .map_err(|e| self.remote(from, e))
        })
        .await
    }

    /// Writes `from` (`len` bytes, read as a stream: a local file, or bytes
    /// in memory) to the remote `path`, created or truncated, flushed to the
    /// server's disk where it offers `fsync@openssh.com`; the size is
    /// checked after.
    pub async fn put_file(
        &self,
        path: &str,
        from: impl tokio::io::AsyncRead + Unpin + Send,
        len: u64,
    ) -> Result<(), SftpError> {
        self.with(|c| async move {
            let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
            let mut f = c
                .sftp
                .open_with_flags(path, flags)
                .await
                .map_err(|e| self.remote(path, e))?;
            let mut from = tokio::io::BufReader::with_capacity(WRITE_LEN as usize, from);
            let io = |e: std::io::Error| SftpError::Remote {
                server: self.server(),
                path: path.to_string(),
                reason: e.to_string(),
                status: None,
            };
            tokio::io::copy_buf(&mut from, &mut f).await.map_err(io)?;
            f.sync_all().await.map_err(|e| self.remote(path, e))?;
            f.shutdown().await.map_err(io)?;
            let size = c
                .sftp
                .metadata(path)
                .await
                .map_err(|e| self.remote(path, e))?
                .size;
            if size != Some(len) {
                return Err(SftpError::Remote {
                    server: self.server(),
                    path: path.to_string(),
                    reason: format!("{size:?} bytes arrived of {len}"),
                    status: Some(StatusCode::Failure),
                });
            }
            Ok(())
        })
        .await
    }

    /// Writes a small file from memory (created or truncated).
    pub async fn put_bytes(&self, path: &str, bytes: &[u8]) -> Result<(), SftpError> {
        self.put_file(path, bytes, bytes.len() as u64).await
    }
}
