//! Masking of personal data (DOMAIN.md §7): ID numbers and bank cards keep
//! their first 6 and last 4 characters, names keep their first character.

/// Keeps the first `head` and last `tail` characters, replacing the rest
/// with `*`. Values too short to hide anything are masked whole.
pub fn keep_ends(s: &str, head: usize, tail: usize) -> String {
    let n = s.chars().count();
    if n <= head + tail {
        return "*".repeat(n);
    }
    s.chars()
        .enumerate()
        .map(|(i, c)| if i < head || i >= n - tail { c } else { '*' })
        .collect()
}

/// `110105199003070017` → `110105********0017`; also used for certificate
/// numbers (`110105**********1741`).
pub fn id_number(s: &str) -> String {
    keep_ends(s, 6, 4)
}

/// `6217000000000000004` → `621700*********0004`.
pub fn bank_card(s: &str) -> String {
    keep_ends(s, 6, 4)
}

/// `张三` → `张*`, `欧阳娜娜` → `欧***`.
pub fn name(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => std::iter::once(first).chain(chars.map(|_| '*')).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(id_number("110105199003070017"), "110105********0017");
        assert_eq!(bank_card("6217000000000000004"), "621700*********0004");
        assert_eq!(name("张三"), "张*");
        assert_eq!(name("欧阳娜娜"), "欧***");
        assert_eq!(id_number("12345"), "*****");
    }
}
