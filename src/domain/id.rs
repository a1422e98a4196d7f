//! Resident ID numbers (居民身份证号码, GB 11643-1999), which are also the
//! social security number (社会保障号码).

use chrono::{Datelike, NaiveDate};
use std::fmt;

/// Weights of ISO 7064 MOD 11-2 over the first 17 digits.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character for `S mod 11`.
const CHECK: [u8; 11] = *b"10X98765432";

/// Province-level codes (first two digits of GB/T 2260 codes). Province codes
/// are stable, so an ID whose province is unknown is invalid; county codes
/// change over time and are not checked here (IDs keep the code they were
/// issued with).
/// The province-level codes of GB/T 2260 (the first two digits of a
/// region code).
pub const PROVINCES: [u8; 34] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
];

/// Why a resident ID number is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// A region code that is not 6 digits.
    #[error("must be 6 digits")]
    RegionCode,
    /// Not 18 characters (or 15 for a legacy number).
    #[error("must be 18 characters (or 15 for a legacy number), found {0}")]
    Length(usize),
    /// A character other than a digit (or `X` in the last place).
    #[error("character {position} is not a digit")]
    NotDigit {
        /// 1-based position of the offending character.
        position: usize,
    },
    /// The check character does not match the first 17 digits.
    #[error("check character is {found}, expected {expected}")]
    Checksum {
        /// The check character the number has.
        found: char,
        /// The check character its digits call for.
        expected: char,
    },
    /// The embedded birth date is not a real calendar date.
    #[error("birth date {0} is not a real date")]
    BirthDate(String),
    /// The birth date lies in the future.
    #[error("birth date {0} is in the future")]
    FutureBirthDate(String),
    /// The province code is not a known province.
    #[error("province code {0} is not a known province")]
    Region(String),
}

/// A validated 18-character resident ID number (check character upper-case).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResidentId([u8; 18]);

impl fmt::Debug for ResidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ResidentId({})",
            crate::domain::mask::id_number(self.as_str())
        )
    }
}

impl ResidentId {
    /// Parses and validates an 18-character number; `x` is accepted and
    /// normalised to `X`. 15-character legacy numbers are rejected here: use
    /// [`ResidentId::parse_or_upgrade`] to accept them.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let b = s.as_bytes();
        if b.len() != 18 {
            return Err(IdError::Length(s.chars().count()));
        }
        let mut out = [0u8; 18];
        out.copy_from_slice(b);
        for (i, c) in out[..17].iter().enumerate() {
            if !c.is_ascii_digit() {
                return Err(IdError::NotDigit { position: i + 1 });
            }
        }
        if out[17] == b'x' {
            out[17] = b'X';
        }
        if !(out[17].is_ascii_digit() || out[17] == b'X') {
            return Err(IdError::NotDigit { position: 18 });
        }
        let expected = check_char(&out[..17]);
        if out[17] != expected {
            return Err(IdError::Checksum {
                found: out[17] as char,
                expected: expected as char,
            });
        }
        validate_birth(&out[6..14])?;
        validate_province(&out[..2])?;
        Ok(ResidentId(out))
    }

    /// Like [`ResidentId::parse`], remembering the last number parsed on
    /// this thread: a mapping often asks several questions of one number
    /// (valid? birth date? sex?), and each answer then costs a comparison.
    pub fn parse_cached(s: &str) -> Result<Self, IdError> {
        use std::cell::Cell;
        // The last valid number seen; invalid ones are rare and not kept.
        thread_local!(static LAST: Cell<Option<ResidentId>> = const { Cell::new(None) });
        if let Some(last) = LAST.get() {
            if last.0 == s.as_bytes() {
                return Ok(last);
            }
        }
        let r = Self::parse(s);
        if let Ok(id) = r {
            LAST.set(Some(id));
        }
        r
    }

    /// Like [`ResidentId::parse`], but also upgrades a 15-digit legacy number
    /// (address + `YYMMDD` + sequence) by inserting `19` and computing the
    /// check character.
    pub fn parse_or_upgrade(s: &str) -> Result<Self, IdError> {
        let b = s.as_bytes();
        if b.len() != 15 {
            return Self::parse(s);
        }
        if let Some(i) = b.iter().position(|c| !c.is_ascii_digit()) {
            return Err(IdError::NotDigit { position: i + 1 });
        }
        let mut out = [0u8; 18];
        out[..6].copy_from_slice(&b[..6]);
        out[6..8].copy_from_slice(b"19");
        out[8..17].copy_from_slice(&b[6..15]);
        out[17] = check_char(&out[..17]);
        validate_birth(&out[6..14])?;
        validate_province(&out[..2])?;
        Ok(ResidentId(out))
    }

    /// The number as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and 'X' are ever stored.
        std::str::from_utf8(&self.0).expect("ASCII")
    }

    /// The 6-digit administrative division code it was issued with.
    pub fn region(&self) -> &str {
        &self.as_str()[..6]
    }

    /// The birth date.
    pub fn birth_date(&self) -> NaiveDate {
        parse_yyyymmdd(&self.0[6..14]).expect("validated at parse")
    }

    /// `true` for male (odd sequence number), `false` for female.
    pub fn is_male(&self) -> bool {
        (self.0[16] - b'0') % 2 == 1
    }
}

/// The check character for the first 17 digits.
pub fn check_char(digits17: &[u8]) -> u8 {
    let s: u32 = digits17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CHECK[(s % 11) as usize]
}

fn parse_yyyymmdd(b: &[u8]) -> Option<NaiveDate> {
    let n = |r: std::ops::Range<usize>| -> u32 {
        b[r].iter().fold(0, |a, c| a * 10 + u32::from(c - b'0'))
    };
    NaiveDate::from_ymd_opt(n(0..4) as i32, n(4..6), n(6..8))
}

fn validate_birth(b: &[u8]) -> Result<(), IdError> {
    let text = || std::str::from_utf8(b).unwrap_or("").to_string();
    let date = parse_yyyymmdd(b).ok_or_else(|| IdError::BirthDate(text()))?;
    if date.year() < 1850 {
        return Err(IdError::BirthDate(text()));
    }
    if super::days::days_from_date(date) > today_in_china() {
        return Err(IdError::FutureBirthDate(text()));
    }
    Ok(())
}

fn validate_province(b: &[u8]) -> Result<(), IdError> {
    let code = (b[0] - b'0') * 10 + (b[1] - b'0');
    if PROVINCES.contains(&code) {
        Ok(())
    } else {
        Err(IdError::Region(format!("{code:02}")))
    }
}

/// Today's date in China (UTC+8), as days since 1970-01-01. The clock is
/// read once per 4096 calls on each thread: the birth-date check runs for
/// every ID number, and a date only needs to be right to the day.
fn today_in_china() -> i32 {
    use std::cell::Cell;
    thread_local!(static TODAY: Cell<(i32, u16)> = const { Cell::new((0, 0)) });
    TODAY.with(|t| {
        let (day, left) = t.get();
        if left > 0 {
            t.set((day, left - 1));
            return day;
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let day = ((secs + 8 * 3600) / 86_400) as i32;
        t.set((day, 4095));
        day
    })
}

/// Checks that a 6-digit administrative division code is well formed and
/// names a known province.
pub fn validate_region_code(s: &str) -> Result<(), IdError> {
    let b = s.as_bytes();
    if b.len() != 6 || !b.iter().all(u8::is_ascii_digit) {
        return Err(IdError::RegionCode);
    }
    validate_province(&b[..2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_vectors() {
        for s in [
            "11010519491231002X",
            "440524188001010014",
            "360426199101010071",
            "110105199003070017",
            "110105199003070025",
            "440304200002291236",
        ] {
            assert_eq!(
                ResidentId::parse(s).map(|i| i.as_str().to_string()),
                Ok(s.to_string())
            );
        }
        let lower = ResidentId::parse("44011320141005001x").unwrap();
        assert_eq!(lower.as_str(), "44011320141005001X");
    }

    #[test]
    fn derived_fields() {
        let f = ResidentId::parse("11010519491231002X").unwrap();
        assert!(!f.is_male());
        assert_eq!(
            f.birth_date(),
            NaiveDate::from_ymd_opt(1949, 12, 31).unwrap()
        );
        assert_eq!(f.region(), "110105");
        assert!(ResidentId::parse("110105199003070017").unwrap().is_male());
        assert!(!ResidentId::parse("110105199003070025").unwrap().is_male());
    }

    #[test]
    fn invalid_vectors() {
        assert_eq!(
            ResidentId::parse("110105199003070011"),
            Err(IdError::Checksum {
                found: '1',
                expected: '7'
            })
        );
        assert_eq!(
            ResidentId::parse("36042619910102009X"),
            Err(IdError::Checksum {
                found: 'X',
                expected: '3'
            })
        );
        assert!(matches!(
            ResidentId::parse("360426199113010079"),
            Err(IdError::BirthDate(_))
        ));
        assert!(matches!(
            ResidentId::parse("110105202302300016"),
            Err(IdError::BirthDate(_))
        ));
        assert_eq!(
            ResidentId::parse("990426199112010074"),
            Err(IdError::Region("99".into()))
        );
        assert_eq!(ResidentId::parse("1101051990"), Err(IdError::Length(10)));
        assert_eq!(
            ResidentId::parse("11010519900307A017"),
            Err(IdError::NotDigit { position: 15 })
        );
    }

    #[test]
    fn legacy_upgrade() {
        assert_eq!(
            ResidentId::parse_or_upgrade("110105491231002")
                .unwrap()
                .as_str(),
            "11010519491231002X"
        );
        assert!(ResidentId::parse("110105491231002").is_err());
    }

    #[test]
    fn region_codes() {
        assert!(validate_region_code("430104").is_ok());
        assert!(validate_region_code("990104").is_err());
        assert!(validate_region_code("43010").is_err());
    }
}
