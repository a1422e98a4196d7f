//! Secrets are never written in config files: a secret field holds a
//! reference, `${env:NAME}` or `${file:/path}`, resolved when the hub starts.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// Why a secret reference cannot be made or read. Its text never holds a
/// secret's value, only the reference.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A value written where a reference belongs.
    #[error(
        "secrets must be references, `${{env:NAME}}` or `${{file:/path}}`, never written inline"
    )]
    Inline,
    /// `${env:NAME}` with `NAME` unset.
    #[error("environment variable {0} is not set")]
    Unset(String),
    /// `${file:PATH}` that cannot be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A reference to a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// `${env:NAME}`: an environment variable.
    Env(String),
    /// `${file:PATH}`: the contents of a file (trailing newline trimmed).
    File(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Env(n) => write!(f, "${{env:{n}}}"),
            Secret::File(p) => write!(f, "${{file:{p}}}"),
        }
    }
}

impl Secret {
    /// Parses a reference.
    pub fn parse(s: &str) -> Result<Secret, SecretError> {
        let inner = s.strip_prefix("${").and_then(|r| r.strip_suffix('}'));
        let parsed = inner.and_then(|i| {
            if let Some(n) = i.strip_prefix("env:") {
                let ok = !n.is_empty() && n.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
                ok.then(|| Secret::Env(n.to_string()))
            } else {
                i.strip_prefix("file:")
                    .filter(|p| !p.is_empty())
                    .map(|p| Secret::File(p.to_string()))
            }
        });
        parsed.ok_or(SecretError::Inline)
    }

    /// Reads the secret's value.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            Secret::Env(n) => std::env::var(n).map_err(|_| SecretError::Unset(n.clone())),
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|source| SecretError::File {
                    path: p.clone(),
                    source,
                }),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Secret::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references_and_refuses_inline_values() {
        assert_eq!(
            Secret::parse("${env:CERT_SECRET}").unwrap(),
            Secret::Env("CERT_SECRET".into())
        );
        assert_eq!(
            Secret::parse("${file:/run/s}").unwrap(),
            Secret::File("/run/s".into())
        );
        assert!(matches!(Secret::parse("hunter2"), Err(SecretError::Inline)));
        assert!(Secret::parse("${env:}").is_err());
        assert!(Secret::parse("${env:A-B}").is_err());
        std::env::set_var("TONGBAN_TEST_SECRET_X", "v");
        assert_eq!(
            Secret::parse("${env:TONGBAN_TEST_SECRET_X}")
                .unwrap()
                .resolve()
                .unwrap(),
            "v"
        );
        let unset = Secret::parse("${env:TONGBAN_TEST_SECRET_UNSET}")
            .unwrap()
            .resolve()
            .unwrap_err();
        assert_eq!(
            unset.to_string(),
            "environment variable TONGBAN_TEST_SECRET_UNSET is not set"
        );
    }
}
