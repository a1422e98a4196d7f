//! Disability certificate numbers (残疾人证号, 2nd and 3rd generation): the
//! holder's 18-character ID number, a category digit, a level digit and, after
//! a reissue (挂失补办), a suffix `B1`, `B2`, …

use super::id::{IdError, ResidentId};
use std::fmt;

/// Why a certificate number is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Shorter than 20 characters.
    #[error("must be 20 characters, optionally followed by a reissue suffix B1, B2, …; found {0}")]
    Length(usize),
    /// The embedded ID number is invalid.
    #[error("embedded ID number is invalid: {0}")]
    Holder(IdError),
    /// The category digit is not 1–7.
    #[error("category {0} is not 1–7")]
    Category(char),
    /// The level digit is not 1–4.
    #[error("level {0} is not 1–4")]
    Level(char),
    /// Characters after the 20th are not `B` and a number from 1.
    #[error("suffix {0:?} is not a reissue suffix B1, B2, …")]
    Suffix(String),
}

/// A validated certificate number.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CertificateNo {
    holder: ResidentId,
    category: u8,
    level: u8,
    reissue: u32,
}

impl fmt::Debug for CertificateNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CertificateNo({:?}, {}{}, B{})",
            self.holder, self.category, self.level, self.reissue
        )
    }
}

/// Names of the categories in GB/T 26341-2010 order (1 = visual).
pub const CATEGORY_NAMES: [&str; 7] = ["视力", "听力", "言语", "肢体", "智力", "精神", "多重"];

impl CertificateNo {
    /// Parses and validates a certificate number.
    pub fn parse(s: &str) -> Result<Self, CertError> {
        let b = s.as_bytes();
        if b.len() < 20 {
            return Err(CertError::Length(s.chars().count()));
        }
        // The first 18 bytes are the holder's ID number only if they are
        // characters of their own (a non-ASCII character across byte 18
        // is no digit, and no place to cut the text).
        let Some(head) = s.get(..18) else {
            let position = s.chars().position(|c| !c.is_ascii_digit()).unwrap_or(0) + 1;
            return Err(CertError::Holder(IdError::NotDigit { position }));
        };
        let holder = ResidentId::parse_cached(head).map_err(|e| match e {
            // A suffix-less 18+B1 number lands here with a letter at 19.
            IdError::Length(_) => CertError::Length(s.chars().count()),
            other => CertError::Holder(other),
        })?;
        let (c, l) = (b[18], b[19]);
        if !(b'1'..=b'7').contains(&c) {
            return Err(CertError::Category(c as char));
        }
        if !(b'1'..=b'4').contains(&l) {
            return Err(CertError::Level(l as char));
        }
        let rest = &s[20..];
        let reissue = if rest.is_empty() {
            0
        } else {
            let digits = rest.strip_prefix('B').filter(|d| {
                !d.is_empty() && !d.starts_with('0') && d.bytes().all(|c| c.is_ascii_digit())
            });
            match digits.and_then(|d| d.parse::<u32>().ok()) {
                Some(n) => n,
                None => return Err(CertError::Suffix(rest.to_string())),
            }
        };
        Ok(CertificateNo {
            holder,
            category: c - b'0',
            level: l - b'0',
            reissue,
        })
    }

    /// Like [`CertificateNo::parse`], remembering the last number parsed on
    /// this thread (a mapping asks its category, level and validity in turn).
    pub fn parse_cached(s: &str) -> Result<Self, CertError> {
        use std::cell::Cell;
        // The last valid number seen (text, length, value); invalid ones are
        // rare and not kept.
        type Last = Option<([u8; 24], u8, CertificateNo)>;
        thread_local!(static LAST: Cell<Last> = const { Cell::new(None) });
        let b = s.as_bytes();
        if let Some((text, len, c)) = LAST.get() {
            if usize::from(len) == b.len() && text[..b.len()] == *b {
                return Ok(c);
            }
        }
        let r = Self::parse(s);
        if let (Ok(c), true) = (&r, b.len() <= 24) {
            let mut text = [0u8; 24];
            text[..b.len()].copy_from_slice(b);
            LAST.set(Some((text, b.len() as u8, *c)));
        }
        r
    }

    /// The holder's ID number.
    pub fn holder(&self) -> &ResidentId {
        &self.holder
    }
    /// Category 1–7 (1 visual … 7 multiple).
    pub fn category(&self) -> u8 {
        self.category
    }
    /// Level 1–4 (1 most severe).
    pub fn level(&self) -> u8 {
        self.level
    }
    /// Reissue number: 0 for an original, n for suffix `Bn`.
    pub fn reissue(&self) -> u32 {
        self.reissue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_vectors() {
        let c = CertificateNo::parse("11010519900307001741").unwrap();
        assert_eq!((c.category(), c.level(), c.reissue()), (4, 1, 0));
        assert_eq!(c.holder().as_str(), "110105199003070017");
        assert!(CertificateNo::parse("11010519491231002X41").is_ok());
        let m = CertificateNo::parse("11010519900307001774").unwrap();
        assert_eq!((m.category(), m.level()), (7, 4));
        assert_eq!(
            CertificateNo::parse("11010519900307001741B1")
                .unwrap()
                .reissue(),
            1
        );
        assert_eq!(
            CertificateNo::parse("11010519900307001741B12")
                .unwrap()
                .reissue(),
            12
        );
    }

    #[test]
    fn invalid_vectors() {
        assert_eq!(
            CertificateNo::parse("11010519900307001780"),
            Err(CertError::Category('8'))
        );
        assert_eq!(
            CertificateNo::parse("11010519900307001715"),
            Err(CertError::Level('5'))
        );
        assert!(matches!(
            CertificateNo::parse("110105199003070017B1"),
            Err(CertError::Category('B'))
        ));
        assert_eq!(
            CertificateNo::parse("11010519900307001141"),
            Err(CertError::Holder(IdError::Checksum {
                found: '1',
                expected: '7'
            }))
        );
        assert!(matches!(
            CertificateNo::parse("11010519900307001741B0"),
            Err(CertError::Suffix(_))
        ));
        assert!(matches!(
            CertificateNo::parse("11010519900307001741X"),
            Err(CertError::Suffix(_))
        ));
        assert_eq!(
            CertificateNo::parse("1101051990"),
            Err(CertError::Length(10))
        );
    }
}
