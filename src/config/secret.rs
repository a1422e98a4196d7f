//! Secrets are never written in config files: a secret field holds a
//! reference, `${env:NAME}` or `${file:/path}`, resolved when the hub starts.

use serde::{Deserialize, Deserializer};
use std::fmt;

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
    pub fn parse(s: &str) -> Result<Secret, String> {
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
        parsed.ok_or_else(|| {
            "secrets must be references, `${env:NAME}` or `${file:/path}`, never written inline"
                .to_string()
        })
    }

    /// Reads the secret's value.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::Env(n) => {
                std::env::var(n).map_err(|_| format!("environment variable {n} is not set"))
            }
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read secret file {p}: {e}")),
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
            Secret::parse("${env:CERT_SECRET}"),
            Ok(Secret::Env("CERT_SECRET".into()))
        );
        assert_eq!(
            Secret::parse("${file:/run/s}"),
            Ok(Secret::File("/run/s".into()))
        );
        assert!(Secret::parse("hunter2").is_err());
        assert!(Secret::parse("${env:}").is_err());
        assert!(Secret::parse("${env:A-B}").is_err());
        std::env::set_var("TONGBAN_TEST_SECRET_X", "v");
        assert_eq!(
            Secret::parse("${env:TONGBAN_TEST_SECRET_X}")
                .unwrap()
                .resolve(),
            Ok("v".into())
        );
        assert!(Secret::parse("${env:TONGBAN_TEST_SECRET_UNSET}")
            .unwrap()
            .resolve()
            .is_err());
    }
}
