//! The settings of a `kind = "sftp"` connector: a server (host, pinned
//! host key, user and key or password), the directory on it, and each
//! operation as a remote directory watched for result files or written
//! with payment files.

use crate::config::connector::{Auth, BodyFormat, Direction};
use crate::config::secret::Secret;
use crate::config::ConnectorSpec;
use crate::connectors::file::settings::{file_pattern, readiness};
use crate::connectors::file::Readiness;
use crate::connectors::settings::Problems;
use crate::diag::Problem;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An SFTP connector.
#[derive(Clone, Debug)]
pub struct SftpSettings {
    /// The server's host name or address.
    pub host: String,
    /// Its port (default 22).
    pub port: u16,
    /// How the server's key is known.
    pub pin: HostPin,
    /// Who logs in, and how.
    pub login: Login,
    /// Time limit of connecting and of each request (default 30 s).
    pub timeout: Duration,
    /// The operations, by name.
    pub operations: BTreeMap<String, SftpOperation>,
}

/// How the server's host key is pinned: an unknown or changed key is
/// refused.
#[derive(Clone, Debug)]
pub enum HostPin {
    /// The key is in this known_hosts file (OpenSSH's format).
    KnownHosts(PathBuf),
    /// The key's SHA-256 fingerprint, `SHA256:…`.
    Fingerprint(String),
}

/// A user and how it authenticates.
#[derive(Clone, Debug)]
pub struct Login {
    /// The user name.
    pub user: String,
    /// Key or password.
    pub method: LoginMethod,
}

/// How a user authenticates.
#[derive(Clone, Debug)]
pub enum LoginMethod {
    /// A private key (and its passphrase, if any).
    Key {
        /// The key, a secret reference.
        private_key: Secret,
        /// Its passphrase.
        passphrase: Option<Secret>,
    },
    /// A password, a secret reference.
    Password(Secret),
}

/// What an SFTP operation is.
#[derive(Clone, Debug)]
pub enum SftpOperation {
    /// Result files picked up from a directory on the server.
    Watch(RemoteWatch),
    /// Payment files uploaded into a directory on the server.
    Upload(RemoteDir),
}

/// A directory on the server that result files are picked up from.
#[derive(Clone, Debug)]
pub struct RemoteWatch {
    /// The directory on the server.
    pub dir: String,
    /// Which file names are read.
    pub pattern: glob::Pattern,
    /// When a file is complete.
    pub readiness: Readiness,
    /// Pause between looks (default 5 s).
    pub poll: Duration,
    /// How a file's records are read.
    pub format: BodyFormat,
}

/// A directory on the server that files are uploaded into.
#[derive(Clone, Debug)]
pub struct RemoteDir {
    /// The directory on the server.
    pub dir: String,
}

/// `base/path` on the server (`path` alone if it starts with `/`).
pub fn remote_join(base: &str, path: &str) -> String {
    if path.starts_with('/') || base.is_empty() || base == "." {
        return path.to_string();
    }
    format!("{}/{}", base.trim_end_matches('/'), path)
}

impl SftpSettings {
    /// The settings a connector file gives, or every problem in it;
    /// `dir` is the configuration directory (of the known_hosts file).
    pub fn of(spec: &ConnectorSpec, dir: &Path) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        if spec.base_url.is_some() || spec.brokers.is_some() {
            p.connector(
                None,
                "base_url and brokers are settings of http and kafka connectors; an sftp connector has host and directory",
            );
        }
        let (host, port) = match spec.host.as_ref() {
            None => {
                p.connector(
                    None,
                    "an sftp connector needs host (\"host\" or \"host:port\")",
                );
                (String::new(), 22)
            }
            Some(h) => match parse_host(h.get_ref()) {
                Some(hp) => hp,
                None => {
                    p.connector(
                        Some(h.span().start),
                        format!("host {:?} must be \"host\" or \"host:port\"", h.get_ref()),
                    );
                    (String::new(), 22)
                }
            },
        };
        let pin = match (&spec.known_hosts, &spec.host_key) {
            (Some(k), None) => Some(HostPin::KnownHosts(dir.join(k))),
            (None, Some(f)) => {
                let v = f.get_ref();
                let ok = v
                    .strip_prefix("SHA256:")
                    .is_some_and(|b| !b.is_empty() && b.len() <= 64);
                if !ok {
                    p.connector(
                        Some(f.span().start),
                        format!("host_key {v:?} must be a SHA-256 fingerprint, \"SHA256:…\" as ssh-keygen -l prints it"),
                    );
                }
                Some(HostPin::Fingerprint(v.clone()))
            }
            (Some(_), Some(f)) => {
                p.connector(
                    Some(f.span().start),
                    "give known_hosts or host_key, not both",
                );
                None
            }
            (None, None) => {
                p.connector(
                    None,
                    "an sftp connector needs the server's key pinned: known_hosts = \"…\" or host_key = \"SHA256:…\" (a key never seen before is refused)",
                );
                None
            }
        };
        let login = match spec.auth.as_ref().map(|a| (a.get_ref(), a.span().start)) {
            Some((Auth::Key(k), _)) => Some(Login {
                user: k.username.clone(),
                method: LoginMethod::Key {
                    private_key: k.private_key.clone(),
                    passphrase: k.passphrase.clone(),
                },
            }),
            Some((Auth::Password(b), _)) => Some(Login {
                user: b.username.clone(),
                method: LoginMethod::Password(b.password.clone()),
            }),
            Some((_, at)) => {
                p.connector(
                    Some(at),
                    "an sftp connector logs in with auth type = \"key\" (username, private_key) or \"password\" (username, password)",
                );
                None
            }
            None => {
                p.connector(
                    None,
                    "an sftp connector needs [auth] with type = \"key\" or \"password\"",
                );
                None
            }
        };
        let base = spec.directory.clone().unwrap_or_else(|| ".".into());
        let mut operations = BTreeMap::new();
        for (name, sop) in &spec.operations {
            let op = sop.get_ref();
            let layout_ok = op.layout.is_some() == (op.format == BodyFormat::Layout);
            if !layout_ok {
                p.op(
                    name,
                    sop,
                    "format = \"layout\" goes with layout = \"layouts/….toml\"",
                );
            }
            let made = match op.direction {
                Direction::Source => {
                    p.foreign(
                        name,
                        sop,
                        "sftp source",
                        &[
                            "path",
                            "file_pattern",
                            "checksum",
                            "settle_time",
                            "poll_interval",
                            "xml_root",
                            "xml_namespace",
                            "layout",
                        ],
                    );
                    let Some(pattern) = file_pattern(&mut p, name, sop, "SFTP") else {
                        continue;
                    };
                    if matches!(op.format, BodyFormat::Avro) {
                        p.op(name, sop, "Avro records are not read from files; use JSON lines, XML, pain002 or layout");
                    }
                    let readiness = readiness(op);
                    SftpOperation::Watch(RemoteWatch {
                        dir: remote_join(&base, op.path.as_deref().unwrap_or("in")),
                        pattern,
                        readiness,
                        poll: op.poll_interval.map_or(Duration::from_secs(5), |d| d.0),
                        format: op.format,
                    })
                }
                Direction::Sink => {
                    p.foreign(
                        name,
                        sop,
                        "sftp sink",
                        &[
                            "path",
                            "file_pattern",
                            "xml_root",
                            "xml_namespace",
                            "layout",
                        ],
                    );
                    let payment_ns = op
                        .xml_namespace
                        .as_deref()
                        .is_some_and(|n| n.starts_with("urn:iso:std:iso:20022"));
                    let payments = match op.format {
                        BodyFormat::Xml => payment_ns,
                        BodyFormat::Layout => true,
                        _ => false,
                    };
                    if !payments {
                        p.op(
                            name,
                            sop,
                            "an sftp sink uploads payment files: format = \"xml\" with a pain.001 xml_namespace, or format = \"layout\"",
                        );
                    }
                    SftpOperation::Upload(RemoteDir {
                        dir: remote_join(&base, op.path.as_deref().unwrap_or("out")),
                    })
                }
            };
            operations.insert(name.clone(), made);
        }
        let (Some(pin), Some(login)) = (pin, login) else {
            return Err(p.0);
        };
        p.or(SftpSettings {
            host,
            port,
            pin,
            login,
            timeout: spec.timeout.map_or(Duration::from_secs(30), |d| d.0),
            operations,
        })
    }
}

/// `host` or `host:port` (an IPv6 address in brackets).
fn parse_host(s: &str) -> Option<(String, u16)> {
    let (h, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (h, p.parse().ok()?),
            None if after.is_empty() => (h, 22),
            None => return None,
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (s, 22),
        }
    };
    let ok = !h.is_empty()
        && port != 0
        && h.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'_'));
    ok.then(|| (h.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_remote_paths() {
        assert_eq!(
            parse_host("bank.example"),
            Some(("bank.example".into(), 22))
        );
        assert_eq!(
            parse_host("127.0.0.1:2222"),
            Some(("127.0.0.1".into(), 2222))
        );
        assert_eq!(parse_host("[::1]:22"), Some(("::1".into(), 22)));
        assert_eq!(parse_host("a b"), None);
        assert_eq!(parse_host("h:0"), None);
        assert_eq!(parse_host("h:x"), None);
        assert_eq!(remote_join("upload", "out"), "upload/out");
        assert_eq!(remote_join("/srv/bank/", "in"), "/srv/bank/in");
        assert_eq!(remote_join("/srv/bank", "/abs"), "/abs");
        assert_eq!(remote_join(".", "in"), "in");
    }

    fn settings(text: &str) -> Result<SftpSettings, Vec<String>> {
        let spec: ConnectorSpec = toml::from_str(text).unwrap();
        SftpSettings::of(&spec, Path::new("/etc/tongban"))
            .map_err(|ps| ps.into_iter().map(|p| p.message).collect())
    }

    #[test]
    fn an_sftp_connector_pins_the_host_and_uploads_payment_files() {
        let s = settings(
            "kind = \"sftp\"\nhost = \"127.0.0.1:2222\"\ndirectory = \"/srv/bank\"\nknown_hosts = \"keys/known_hosts\"\nauth = { type = \"key\", username = \"tongban\", private_key = \"${file:keys/id}\" }\n[operations.pay]\ndirection = \"sink\"\nschema = \"X\"\nformat = \"xml\"\nxml_namespace = \"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\"\n[operations.results]\ndirection = \"source\"\nschema = \"X\"\nformat = \"pain002\"\nfile_pattern = \"*.pain002.xml\"\n",
        )
        .unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 2222));
        assert!(
            matches!(&s.pin, HostPin::KnownHosts(p) if p == Path::new("/etc/tongban/keys/known_hosts"))
        );
        assert_eq!(s.login.user, "tongban");
        assert!(
            matches!(&s.operations["pay"], SftpOperation::Upload(d) if d.dir == "/srv/bank/out")
        );
        assert!(matches!(
            &s.operations["results"],
            SftpOperation::Watch(w) if w.dir == "/srv/bank/in" && matches!(w.readiness, Readiness::Checksum)
        ));
    }

    #[test]
    fn an_unpinned_host_or_a_record_sink_is_refused() {
        let e = settings(
            "kind = \"sftp\"\nhost = \"bank\"\nauth = { type = \"password\", username = \"u\", password = \"${env:P}\" }\n[operations.j]\ndirection = \"sink\"\nschema = \"X\"\n",
        )
        .unwrap_err();
        assert!(
            e.iter()
                .any(|m| m.contains("needs the server's key pinned")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("operation j: an sftp sink uploads payment files")),
            "{e:?}"
        );
        let e = settings(
            "kind = \"sftp\"\nhost = \"bank\"\nhost_key = \"MD5:aa\"\nauth = { type = \"bearer\", token = \"${env:T}\" }\n",
        )
        .unwrap_err();
        assert!(
            e.iter()
                .any(|m| m.contains("must be a SHA-256 fingerprint")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.contains("logs in with auth type")),
            "{e:?}"
        );
    }
}
