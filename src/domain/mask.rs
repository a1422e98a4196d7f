//! Masking of personal data (docs/domain.md §7): ID numbers and bank cards keep
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

/// Whether `s` looks like an ID number, certificate number or bank card:
/// 15 to 20 characters of digits (an ID number may end in `X`) that pass
/// their check (ID check character, or Luhn for a card).
fn looks_personal(s: &str) -> bool {
    let n = s.len();
    if !(13..=20).contains(&n) || !s.is_ascii() {
        return false;
    }
    if (n == 18 || n == 20) && crate::domain::ResidentId::parse(&s[..18]).is_ok() {
        return true;
    }
    s.bytes().all(|b| b.is_ascii_digit()) && crate::domain::luhn::validate_card(s).is_ok()
}

/// Masks one string value found under `key`.
fn value(key: &str, s: &str) -> Option<String> {
    let k = key.to_ascii_lowercase();
    if k == "name" || (k.ends_with("_name") && !matches!(k.as_str(), "debtor_name" | "file_name")) {
        return Some(name(s));
    }
    if k.contains("phone") || k.contains("mobile") {
        return Some(keep_ends(s, 3, 4));
    }
    if k.contains("address") {
        return Some(keep_ends(s, 6, 0));
    }
    if looks_personal(s) || (k.contains("account") && s.bytes().all(|b| b.is_ascii_digit())) {
        return Some(keep_ends(s, 6, 4));
    }
    None
}

/// Masks the personal data in a JSON document, in place: names, phone
/// numbers and addresses by their field names; ID numbers, certificate
/// numbers and bank cards wherever they are (by their check digits), and
/// account numbers by field name.
pub fn json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match x {
                    serde_json::Value::String(s) => {
                        if let Some(masked) = value(k, s) {
                            *s = masked;
                        }
                    }
                    other => json(other),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(json),
        serde_json::Value::String(s) if looks_personal(s) => *s = keep_ends(s, 6, 4),
        _ => {}
    }
}

/// Masks JSON bytes; bytes that are not JSON are masked as text.
pub fn json_bytes(b: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(b) {
        Ok(mut v) => {
            json(&mut v);
            v.to_string()
        }
        Err(_) => text(&String::from_utf8_lossy(b)),
    }
}

/// Masks ID numbers, certificate numbers and bank cards in free text (an
/// error message, a response excerpt).
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if looks_personal(run) {
            out.push_str(&keep_ends(run, 6, 4));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() || c == 'X' || c == 'x' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
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

    #[test]
    fn json_documents_are_masked_by_field_and_by_check_digits() {
        let mut v = serde_json::json!({
            "holder_id": "110105199003070017",
            "certificate_no": "11010519900307001741",
            "holder_name": "张三",
            "context": {"bank": {"account_no": "6217000000000000004", "account_name": "张三"}},
            "phone": "13800000000",
            "items": ["110105199003070017", "plain"],
            "debtor_name": "某省财政厅",
            "period": "2026-11",
            "amount_fen": 12345
        });
        json(&mut v);
        let t = v.to_string();
        for secret in [
            "110105199003070017",
            "6217000000000000004",
            "张三",
            "13800000000",
            "11010519900307001741",
        ] {
            assert!(!t.contains(secret), "{secret} in {t}");
        }
        assert!(t.contains("110105********0017"), "{t}");
        assert!(t.contains("张*"), "{t}");
        assert!(t.contains("某省财政厅"), "{t}");
        assert!(t.contains("2026-11") && t.contains("12345"), "{t}");
    }

    #[test]
    fn free_text_is_masked() {
        let t =
            text("422 unknown person 110105199003070017; card 6217000000000000004; order 20261123");
        assert!(
            !t.contains("110105199003070017") && !t.contains("6217000000000000004"),
            "{t}"
        );
        assert!(t.contains("20261123"), "{t}");
    }
}
