//! Luhn check for UnionPay bank card numbers (16–19 digits).

/// The Luhn check digit for `digits` (all ASCII digits).
pub fn check_digit(digits: &[u8]) -> u8 {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = u32::from(c - b'0');
            match (i % 2 == 0, d * 2) {
                (true, x) if x > 9 => x - 9,
                (true, x) => x,
                (false, _) => d,
            }
        })
        .sum();
    b'0' + ((10 - sum % 10) % 10) as u8
}

/// `true` if `s` is all digits and passes the Luhn check.
pub fn is_valid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 2 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    check_digit(&b[..b.len() - 1]) == b[b.len() - 1]
}

/// Why a bank card number is invalid (never holding the number itself).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// Not 16–19 digits.
    #[error("must be 16–19 digits, found {0} characters")]
    Length(usize),
    /// The check digit does not match.
    #[error("fails the Luhn check")]
    Luhn,
}

/// Validates a bank card number: 16–19 digits passing the Luhn check.
pub fn validate_card(s: &str) -> Result<(), CardError> {
    let n = s.len();
    if !(16..=19).contains(&n) || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(CardError::Length(s.chars().count()));
    }
    if !is_valid(s) {
        return Err(CardError::Luhn);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        for s in [
            "6217000000000000004",
            "6222000000000000004",
            "6234567890123451",
            "79927398713",
        ] {
            assert!(is_valid(s), "{s}");
        }
        for s in [
            "6217000000000000001",
            "6222000000000000009",
            "79927398710",
            "",
            "62a7",
        ] {
            assert!(!is_valid(s), "{s}");
        }
        assert!(validate_card("6217000000000000004").is_ok());
        assert_eq!(validate_card("79927398713"), Err(CardError::Length(11)));
        assert_eq!(validate_card("6217000000000000005"), Err(CardError::Luhn));
    }
}
