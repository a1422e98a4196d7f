//! HMAC request signing, as government platforms do it: an app key, a
//! timestamp in milliseconds, a nonce, and a MAC (HMAC-SHA256 or HMAC-SM3)
//! over a string built from the request. The recipe (header names, the
//! string to sign, hex or base64) is connector configuration, because
//! every platform spells it a little differently.
//!
//! The string to sign is a template with these placeholders:
//! `{method}`, `{path}` (with the query), `{timestamp}`, `{nonce}`,
//! `{app_key}` and `{body_digest}` (hex digest of the body with the
//! algorithm's hash: SHA-256 or SM3). The default is
//! `"{method}\n{path}\n{timestamp}\n{nonce}\n{body_digest}"`.

use crate::config::connector::{HmacAuth, MacAlgorithm};
use crate::connectors::BuildError;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sm3::Sm3;

/// The default string to sign.
pub const DEFAULT_STRING_TO_SIGN: &str = "{method}\n{path}\n{timestamp}\n{nonce}\n{body_digest}";

/// How the signature is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Lower-case hex.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Header names of a signed request.
#[derive(Clone, Debug)]
pub struct Headers {
    /// Carries the app key.
    pub app_key: String,
    /// Carries the timestamp (ms since the epoch).
    pub timestamp: String,
    /// Carries the nonce.
    pub nonce: String,
    /// Carries the signature.
    pub signature: String,
}

impl Default for Headers {
    fn default() -> Self {
        Headers {
            app_key: "X-App-Key".into(),
            timestamp: "X-Timestamp".into(),
            nonce: "X-Nonce".into(),
            signature: "X-Signature".into(),
        }
    }
}

/// Signs (and verifies) requests with one recipe and one secret.
#[derive(Clone)]
pub struct Signer {
    /// The app key, sent in clear.
    pub app_key: String,
    secret: Vec<u8>,
    /// MAC algorithm.
    pub algorithm: MacAlgorithm,
    /// Header names.
    pub headers: Headers,
    /// The string-to-sign template.
    pub template: String,
    /// Signature encoding.
    pub encoding: Encoding,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Signer")
            .field("app_key", &self.app_key)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Why a signed request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A signing header is absent.
    #[error("the {0} header is missing")]
    Missing(String),
    /// The app key is not the one configured.
    #[error("unknown app key")]
    AppKey,
    /// The timestamp is not a number of milliseconds.
    #[error("the timestamp is not a number of milliseconds")]
    Timestamp,
    /// The timestamp is outside the accepted window.
    #[error("the timestamp is {0} s away from now; at most {1} s is accepted")]
    Stale(i64, i64),
    /// The signature does not match.
    #[error("the signature does not match")]
    Signature,
}

impl Signer {
    /// The signer an `[auth] type = "hmac"` recipe describes (the secret
    /// resolved).
    pub fn from_recipe(recipe: &HmacAuth) -> Result<Signer, BuildError> {
        let secret = recipe.secret.resolve()?;
        let mut s = Signer::new(&recipe.app_key, secret.as_bytes(), recipe.algorithm);
        if let Some(t) = &recipe.string_to_sign {
            s.template = t.clone();
        }
        s.encoding = match recipe.encoding.as_deref() {
            None | Some("hex") => Encoding::Hex,
            Some("base64") => Encoding::Base64,
            Some(other) => return Err(BuildError::Encoding(other.to_string())),
        };
        let h = &mut s.headers;
        for (field, value) in [
            (&mut h.app_key, &recipe.app_key_header),
            (&mut h.timestamp, &recipe.timestamp_header),
            (&mut h.nonce, &recipe.nonce_header),
            (&mut h.signature, &recipe.signature_header),
        ] {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        Ok(s)
    }

    /// A signer with the default headers, template and hex encoding.
    pub fn new(app_key: &str, secret: &[u8], algorithm: MacAlgorithm) -> Self {
        Signer {
            app_key: app_key.to_string(),
            secret: secret.to_vec(),
            algorithm,
            headers: Headers::default(),
            template: DEFAULT_STRING_TO_SIGN.to_string(),
            encoding: Encoding::Hex,
        }
    }

    /// The hex digest of a body with the algorithm's hash.
    pub fn body_digest(&self, body: &[u8]) -> String {
        match self.algorithm {
            MacAlgorithm::HmacSha256 => hex(&Sha256::digest(body)),
            MacAlgorithm::HmacSm3 => hex(&Sm3::digest(body)),
        }
    }

    /// The string to sign for a request.
    pub fn string_to_sign(
        &self,
        method: &str,
        path: &str,
        timestamp: &str,
        nonce: &str,
        body: &[u8],
    ) -> String {
        let mut out = String::with_capacity(self.template.len() + path.len() + 128);
        let mut rest = self.template.as_str();
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let after = &rest[i..];
            let Some(j) = after.find('}') else {
                out.push_str(after);
                rest = "";
                break;
            };
            match &after[1..j] {
                "method" => out.push_str(method),
                "path" => out.push_str(path),
                "timestamp" => out.push_str(timestamp),
                "nonce" => out.push_str(nonce),
                "app_key" => out.push_str(&self.app_key),
                "body_digest" => out.push_str(&self.body_digest(body)),
                _ => out.push_str(&after[..=j]),
            }
            rest = &after[j + 1..];
        }
        out.push_str(rest);
        out
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        match self.algorithm {
            MacAlgorithm::HmacSha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
                    .expect("HMAC takes keys of any length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            MacAlgorithm::HmacSm3 => {
                let mut m = <Hmac<Sm3> as Mac>::new_from_slice(&self.secret)
                    .expect("HMAC takes keys of any length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn encode(&self, mac: &[u8]) -> String {
        match self.encoding {
            Encoding::Hex => hex(mac),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(mac),
        }
    }

    /// The signature of a request.
    pub fn signature(
        &self,
        method: &str,
        path: &str,
        timestamp: &str,
        nonce: &str,
        body: &[u8],
    ) -> String {
        let s = self.string_to_sign(method, path, timestamp, nonce, body);
        self.encode(&self.mac(s.as_bytes()))
    }

    /// The headers to add to a request: (name, value), with a fresh nonce.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        now_ms: i64,
    ) -> [(String, String); 4] {
        let timestamp = now_ms.to_string();
        let nonce = nonce();
        let sig = self.signature(method, path, &timestamp, &nonce, body);
        [
            (self.headers.app_key.clone(), self.app_key.clone()),
            (self.headers.timestamp.clone(), timestamp),
            (self.headers.nonce.clone(), nonce),
            (self.headers.signature.clone(), sig),
        ]
    }

    /// Checks a signed request; `header` looks a header up by name. On
    /// success returns the nonce, which the caller must not accept twice
    /// within the window.
    pub fn verify<'h>(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        header: impl Fn(&str) -> Option<&'h str>,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<String, VerifyError> {
        let get = |name: &str| header(name).ok_or_else(|| VerifyError::Missing(name.to_string()));
        let app_key = get(&self.headers.app_key)?;
        let timestamp = get(&self.headers.timestamp)?;
        let nonce = get(&self.headers.nonce)?;
        let signature = get(&self.headers.signature)?;
        if !constant_time_eq(app_key.as_bytes(), self.app_key.as_bytes()) {
            return Err(VerifyError::AppKey);
        }
        let ts: i64 = timestamp.parse().map_err(|_| VerifyError::Timestamp)?;
        if (now_ms - ts).abs() > window_ms {
            return Err(VerifyError::Stale((now_ms - ts) / 1000, window_ms / 1000));
        }
        let expected = self.signature(method, path, timestamp, nonce, body);
        if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
            return Err(VerifyError::Signature);
        }
        Ok(nonce.to_string())
    }
}

pub use crate::domain::hex;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 128 random bits as hex, from the operating system.
pub fn nonce() -> String {
    let mut buf = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    hex(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sm3_matches_the_standard_vector() {
        let s = Signer::new("k", b"s", MacAlgorithm::HmacSm3);
        assert_eq!(
            s.body_digest(b"abc"),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let mut s = Signer::new("k", b"Jefe", MacAlgorithm::HmacSha256);
        s.template = "what do ya want for nothing?".into();
        assert_eq!(
            s.signature("GET", "/", "0", "n", b""),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_template_fills_every_placeholder_and_keeps_unknown_ones() {
        let s = Signer::new("hub", b"x", MacAlgorithm::HmacSha256);
        let mut t = s.clone();
        t.template = "{app_key}|{method}|{path}|{timestamp}|{nonce}|{other}|{body_digest}".into();
        assert_eq!(
            t.string_to_sign("POST", "/a?b=1", "17", "n1", b"abc"),
            "hub|POST|/a?b=1|17|n1|{other}|ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn verify_accepts_its_own_signature_and_refuses_changes() {
        let s = Signer::new("hub", b"secret", MacAlgorithm::HmacSm3);
        let now = 1_700_000_000_000;
        let h = s.sign("POST", "/ingest/x/y", b"{}", now);
        let verify = |body: &[u8], at: i64| {
            s.verify(
                "POST",
                "/ingest/x/y",
                body,
                |n| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()),
                at,
                300_000,
            )
        };
        assert_eq!(
            verify(b"{}", now + 1000).unwrap(),
            h[2].1,
            "returns the nonce"
        );
        assert_eq!(verify(b"{ }", now), Err(VerifyError::Signature));
        assert_eq!(
            verify(b"{}", now + 301_000),
            Err(VerifyError::Stale(301, 300))
        );
    }
}
