//! Domain rules of docs/domain.md: resident ID numbers (GB 11643), disability
//! certificate numbers, administrative division codes, Luhn-checked bank
//! card numbers and the masking of personal data.
//!
//! Every check returns a typed error that says what is wrong in words an
//! operator understands; error texts never contain the unmasked value.
//!
//! Layer 1, the lowest: imports no other module of the crate.

pub mod cert;
pub mod days;
pub mod id;
pub mod luhn;
pub mod mask;
pub mod workdays;

pub use cert::{CertError, CertificateNo};

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// Bytes from lower- or upper-case hex; `None` if it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Now in China Standard Time (UTC+8): the day that dates on certificates,
/// ages, payment files and periods are counted in.
pub fn china_now() -> chrono::DateTime<chrono::FixedOffset> {
    chrono::Utc::now().with_timezone(&china_tz())
}

/// China Standard Time, UTC+8 (no daylight saving).
pub fn china_tz() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8")
}
pub use id::{IdError, ResidentId};
