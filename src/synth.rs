//! Synthetic, realistic test data: people with valid ID numbers (real county
//! codes, real dates, check characters), Chinese names, certificates with a
//! realistic mix of categories and levels, Luhn-valid bank cards. Seeded and
//! deterministic, for tests, benchmarks and the demo.

use crate::domain::id::check_char;
use chrono::{Datelike, NaiveDate};
use serde_json::{json, Value};

/// A small, fast, seeded generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    /// A generator with a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// One element of a slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    /// `true` with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// Real county codes (GB/T 2260) used for synthetic people.
pub const COUNTIES: &[&str] = &[
    "110105", "430102", "430104", "430702", "431002", "370302", "140105", "220102",
];
const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "胡", "朱", "高", "林",
    "何", "郭", "马", "欧阳",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀英", "霞", "平", "刚", "桂英",
];
/// Category weights (visual … multiple), roughly the national mix: physical most common.
const CATEGORY_WEIGHTS: [u64; 7] = [12, 16, 2, 48, 7, 8, 7];
/// Bank card prefixes (synthetic numbers on real-looking BINs) and their CNAPS head-office codes.
pub const BANKS: &[(&str, &str)] = &[
    ("621700", "105100000017"),
    ("622848", "103100000026"),
    ("621226", "102100099996"),
    ("623668", "403100000004"),
];

/// A synthetic person.
#[derive(Clone, Debug)]
pub struct Person {
    /// 18-character resident ID number.
    pub id: String,
    /// Name.
    pub name: String,
    /// County code.
    pub region: String,
    /// Birth date.
    pub birth: NaiveDate,
    /// Disability category 1–7.
    pub category: u8,
    /// Level 1–4.
    pub level: u8,
    /// Luhn-valid bank card.
    pub card: String,
    /// CNAPS code of the card's bank.
    pub bank_code: String,
}

impl Person {
    /// The 20-character certificate number.
    pub fn certificate_no(&self) -> String {
        format!("{}{}{}", self.id, self.category, self.level)
    }
}

/// Appends the Luhn check digit.
pub fn luhn_complete(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        crate::domain::luhn::check_digit(prefix.as_bytes()) as char
    )
}

/// Generates a person.
pub fn person(rng: &mut Rng) -> Person {
    let region = rng.pick(COUNTIES).to_string();
    let start = NaiveDate::from_ymd_opt(1940, 1, 1).expect("date");
    let birth = start + chrono::Days::new(rng.below(365 * 80));
    let seq = rng.below(1000);
    let s17 = format!(
        "{region}{:04}{:02}{:02}{seq:03}",
        birth.year(),
        birth.month(),
        birth.day()
    );
    let id = format!("{s17}{}", check_char(s17.as_bytes()) as char);
    let name = format!("{}{}", rng.pick(SURNAMES), rng.pick(GIVEN));
    let mut r = rng.below(CATEGORY_WEIGHTS.iter().sum());
    let mut category = 1;
    for (i, w) in CATEGORY_WEIGHTS.iter().enumerate() {
        if r < *w {
            category = i as u8 + 1;
            break;
        }
        r -= w;
    }
    let level = [1u8, 2, 2, 3, 3, 3, 4, 4, 4, 4][rng.below(10) as usize];
    let (bin, bank_code) = *rng.pick(BANKS);
    let body: String = (0..12)
        .map(|_| char::from(b'0' + rng.below(10) as u8))
        .collect();
    let card = luhn_complete(&format!("{bin}{body}"));
    Person {
        id,
        name,
        region,
        birth,
        category,
        level,
        card,
        bank_code: bank_code.to_string(),
    }
}

/// Whether a person applies through a guardian (监护人): under 18 on `day`,
/// or assessed with an intellectual (5) or mental (6) disability, or a
/// multiple one (7) that includes one (`includes_im`).
pub fn needs_guardian(p: &Person, day: NaiveDate, includes_im: bool) -> bool {
    let minor = day.years_since(p.birth).unwrap_or(0) < 18;
    minor || p.category == 5 || p.category == 6 || (p.category == 7 && includes_im)
}

/// The guardian of a person, as the one-application form gives it: a
/// parent of the same county (born 28 years before a minor, or in 1950),
/// with an ID number of their own. No randomness: the people made from a
/// seed stay the same.
pub fn guardian(p: &Person) -> Value {
    let year = if p.birth.year() >= 1968 {
        p.birth.year() - 28
    } else {
        1950
    };
    let seq = p.id.as_bytes()[14..17]
        .iter()
        .fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    let s17 = format!(
        "{}{year:04}{:02}{:02}{:03}",
        p.region,
        p.birth.month(),
        p.birth.day().min(28),
        (seq + 1) % 1000
    );
    let id = format!("{s17}{}", check_char(s17.as_bytes()) as char);
    let surname = SURNAMES
        .iter()
        .find(|s| p.name.starts_with(**s))
        .copied()
        .unwrap_or("王");
    json!({"name": format!("{surname}平"), "id_no": id,
           "relation": if p.birth.year() >= 1968 { "父母" } else { "近亲属" }})
}

/// A certificate-issued event (CertificateEvent as JSON) for a person, with
/// the one-application context.
pub fn issued_event(rng: &mut Rng, p: &Person, n: u64, issued_on: NaiveDate) -> Value {
    let dibao = *rng.pick(&["NONE", "NONE", "DIBAO", "NEAR_DIBAO", "TEKUN"]);
    json!({
        "event_id": format!("EV-{n:08}"),
        "kind": "ISSUED",
        "certificate_no": p.certificate_no(),
        "holder_id": p.id,
        "holder_name": p.name,
        "region_code": p.region,
        "issued_on": issued_on.to_string(),
        "valid_until": issued_on.checked_add_months(chrono::Months::new(120)).unwrap_or(issued_on).to_string(),
        "occurred_at": format!("{issued_on}T10:00:00+08:00"),
        "application": {
            "application_id": format!("SX-{n:08}"),
            "phone": format!("138{:08}", rng.below(100_000_000)),
            "bank": {"account_no": p.card, "bank_code": p.bank_code, "account_name": p.name},
            "dibao": dibao,
            "needs_long_term_care": p.level <= 2,
            "wants_employment": rng.chance(20),
            "wants_training": rng.chance(10),
            "pension": "NONE"
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{luhn, CertificateNo, ResidentId};

    #[test]
    fn guardians_are_valid_other_people() {
        let mut rng = Rng::new(3);
        let day = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let mut minors = 0;
        for _ in 0..2000 {
            let p = person(&mut rng);
            let g = guardian(&p);
            let id = g["id_no"].as_str().unwrap();
            assert!(ResidentId::parse(id).is_ok(), "{id}");
            assert_ne!(id, p.id);
            if needs_guardian(&p, day, false) && p.category < 5 {
                minors += 1;
                assert!(day.years_since(p.birth).unwrap() < 18);
            }
        }
        assert!(minors > 50, "{minors}");
    }

    #[test]
    fn people_are_valid() {
        let mut rng = Rng::new(7);
        for _ in 0..2000 {
            let p = person(&mut rng);
            assert!(ResidentId::parse(&p.id).is_ok(), "{}", p.id);
            assert!(CertificateNo::parse(&p.certificate_no()).is_ok());
            assert!(luhn::validate_card(&p.card).is_ok(), "{}", p.card);
        }
    }
}
