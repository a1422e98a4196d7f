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
