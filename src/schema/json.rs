//! JSON in and out for records, driven by the schema: one pass from bytes to
//! a [`Datum`] with fields already in schema order, and errors that name the
//! field path without echoing its value (values may be personal data).
//!
//! JSON conventions: `date` is `"YYYY-MM-DD"` (an integer day count is also
//! accepted), `timestamp` is RFC 3339 (or integer milliseconds), enums are
//! their symbol, an optional field may be absent or `null`.

use super::datum::{date_from_days, days_from_date};
use super::{Datum, RecordType, Type};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::fmt;

/// A record that does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct DecodeError {
    /// Dotted path of the field at fault (`applicant.id_no`, `items[2]`); empty for the record itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Decodes one JSON document as a value of `ty`. Unknown fields are ignored
/// (sources may add fields); see [`decode_json_value`] for strict decoding.
pub fn decode_json(bytes: &[u8], ty: &Type) -> Result<Datum, DecodeError> {
    let path = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Seed {
        ty,
        strict: false,
        path: &path,
    };
    let r = seed.deserialize(&mut de).and_then(|d| de.end().map(|_| d));
    r.map_err(|e| finish(e.to_string(), &path))
}

/// Decodes a JSON value as a value of `ty`; with `strict`, unknown fields are errors.
pub fn decode_json_value(
    v: &serde_json::Value,
    ty: &Type,
    strict: bool,
) -> Result<Datum, DecodeError> {
    let path = RefCell::new(Vec::new());
    Seed {
        ty,
        strict,
        path: &path,
    }
    .deserialize(v)
    .map_err(|e| finish(e.to_string(), &path))
}

fn finish(mut message: String, path: &RefCell<Vec<String>>) -> DecodeError {
    // One record is one line: serde_json's "at line 1 column N" becomes "(column N)".
    if let Some(i) = message.rfind(" at line 1 column ") {
        let col = message[i + " at line 1 column ".len()..].to_string();
        message.truncate(i);
        message.push_str(&format!(" (column {col})"));
    }
    let mut p = path.borrow().clone();
    p.reverse();
    let mut s = String::new();
    for part in p {
        if !s.is_empty() && !part.starts_with('[') {
            s.push('.');
        }
        s.push_str(&part);
    }
    DecodeError { path: s, message }
}

struct Seed<'t, 'p> {
    ty: &'t Type,
    strict: bool,
    path: &'p RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = Datum;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Datum, D::Error> {
        d.deserialize_any(self)
    }
}

fn found<E: de::Error>(ty: &Type, what: &str) -> E {
    E::custom(format!("expected {ty}, found {what}"))
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
    type Value = Datum;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.ty)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Datum, E> {
        match self.ty.required() {
            Type::Bool => Ok(Datum::Bool(v)),
            t => Err(found(t, "a boolean")),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Datum, E> {
        match self.ty.required() {
            Type::Int { long: true } | Type::Timestamp => {
                Ok(if matches!(self.ty.required(), Type::Timestamp) {
                    Datum::Timestamp(v)
                } else {
                    Datum::Int(v)
                })
            }
            Type::Int { long: false } => i32::try_from(v)
                .map(|_| Datum::Int(v))
                .map_err(|_| E::custom("integer out of range for int (32-bit)")),
            Type::Date => i32::try_from(v)
                .ok()
                .filter(|d| date_from_days(*d).is_some())
                .map(Datum::Date)
                .ok_or_else(|| E::custom("day count out of range for a date")),
            t => Err(found(t, "an integer")),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Datum, E> {
        match i64::try_from(v) {
            Ok(i) => self.visit_i64(i),
            Err(_) => Err(E::custom("integer out of range")),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Datum, E> {
        match self.ty.required() {
            Type::Int { .. } if v.fract() == 0.0 && v.abs() < 9.0e15 => self.visit_i64(v as i64),
            Type::Int { .. } => Err(E::custom(
                "expected an integer, found a fractional number (amounts are integer fen)",
            )),
            t => Err(found(t, "a number")),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Datum, E> {
        match self.ty.required() {
            Type::Str => Ok(Datum::Str(v.into())),
            Type::Enum(e) => {
                if e.symbols.iter().any(|s| s == v) {
                    Ok(Datum::Str(v.into()))
                } else {
                    Err(E::custom(format!(
                        "{v:?} is not one of {}",
                        e.symbols.join(", ")
                    )))
                }
            }
            Type::Date => parse_date(v)
                .map(Datum::Date)
                .ok_or_else(|| E::custom("expected a date YYYY-MM-DD")),
            Type::Timestamp => parse_timestamp(v).map(Datum::Timestamp).ok_or_else(|| {
                E::custom("expected an RFC 3339 timestamp such as 2026-11-02T09:30:00+08:00")
            }),
            t => Err(found(t, "a string")),
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Datum, E> {
        match self.ty.required() {
            Type::Str => Ok(Datum::Str(v.into())),
            _ => self.visit_str(&v),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Datum, E> {
        match self.ty {
            Type::Optional(_) | Type::Null => Ok(Datum::Null),
            t => Err(E::custom(format!(
                "expected {t}, found null (the field is required)"
            ))),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<Datum, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Datum, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Datum, A::Error> {
        let Type::Array(item) = self.ty.required() else {
            return Err(found(self.ty.required(), "a list"));
        };
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        loop {
            let seed = Seed {
                ty: item,
                strict: self.strict,
                path: self.path,
            };
            match seq.next_element_seed(seed) {
                Ok(Some(d)) => out.push(d),
                Ok(None) => break,
                Err(e) => {
                    self.path.borrow_mut().push(format!("[{}]", out.len()));
                    return Err(e);
                }
            }
        }
        Ok(Datum::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Datum, A::Error> {
        match self.ty.required() {
            Type::Record(r) => visit_record(r, self.strict, self.path, map),
            Type::Map(item) => {
                let mut map = map;
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    let seed = Seed {
                        ty: item,
                        strict: self.strict,
                        path: self.path,
                    };
                    match map.next_value_seed(seed) {
                        Ok(d) => out.push((k, d)),
                        Err(e) => {
                            self.path.borrow_mut().push(k);
                            return Err(e);
                        }
                    }
                }
                Ok(Datum::Map(out))
            }
            t => Err(found(t, "an object")),
        }
    }
}

/// Field names resolve to indices without allocating. Records usually
/// arrive in schema order, so the field after the last one is tried first.
struct KeySeed<'r>(&'r RecordType, usize);

enum Key {
    Field(usize),
    Unknown(String),
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        let fields = &self.0.fields;
        if fields.get(self.1).is_some_and(|f| f.name == v) {
            return Ok(Key::Field(self.1));
        }
        Ok(match fields.iter().position(|f| f.name == v) {
            Some(i) => Key::Field(i),
            None => Key::Unknown(v.to_owned()),
        })
    }
}

fn visit_record<'de, A: MapAccess<'de>>(
    r: &RecordType,
    strict: bool,
    path: &RefCell<Vec<String>>,
    mut map: A,
) -> Result<Datum, A::Error> {
    // Fields fill their schema slots in any order; `seen` marks which.
    let mut out: Vec<Datum> = Vec::with_capacity(r.fields.len());
    out.resize(r.fields.len(), Datum::Null);
    let mut seen = vec![false; r.fields.len()];
    let mut hint = 0;
    while let Some(k) = map.next_key_seed(KeySeed(r, hint))? {
        match k {
            Key::Field(i) => {
                hint = i + 1;
                let f = &r.fields[i];
                if seen[i] {
                    path.borrow_mut().push(f.name.clone());
                    return Err(de::Error::custom("field appears twice"));
                }
                match map.next_value_seed(Seed {
                    ty: &f.ty,
                    strict,
                    path,
                }) {
                    Ok(d) => {
                        out[i] = d;
                        seen[i] = true;
                    }
                    Err(e) => {
                        path.borrow_mut().push(f.name.clone());
                        return Err(e);
                    }
                }
            }
            Key::Unknown(name) => {
                if strict {
                    path.borrow_mut().push(name);
                    return Err(de::Error::custom(format!(
                        "unknown field (the record {} has: {})",
                        r.short_name(),
                        r.field_names()
                    )));
                }
                map.next_value::<de::IgnoredAny>()?;
            }
        }
    }
    for ((slot, seen), f) in out.iter_mut().zip(seen).zip(&r.fields) {
        if !seen {
            match (&f.default, &f.ty) {
                (Some(d), _) => *slot = d.clone(),
                (None, Type::Optional(_)) => {}
                _ => {
                    path.borrow_mut().push(f.name.clone());
                    return Err(de::Error::custom("missing required field"));
                }
            }
        }
    }
    Ok(Datum::Record(out))
}

/// Parses `YYYY-MM-DD` to days since the epoch.
pub fn parse_date(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |a, c| {
            c.is_ascii_digit().then(|| a * 10 + u32::from(c - b'0'))
        })
    };
    let d = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    Some(days_from_date(d))
}

/// Parses an RFC 3339 timestamp to milliseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Writes a value as JSON.
pub fn encode_json(d: &Datum, ty: &Type, out: &mut Vec<u8>) {
    match (ty.required(), d) {
        (_, Datum::Null) => out.extend_from_slice(b"null"),
        (_, Datum::Bool(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        (_, Datum::Int(i)) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        (_, Datum::Str(s)) => write_str(s, out),
        (_, Datum::Date(days)) => {
            out.push(b'"');
            match date_from_days(*days) {
                Some(d) => {
                    use std::io::Write;
                    let _ = write!(out, "{}", d.format("%Y-%m-%d"));
                }
                None => out.extend_from_slice(b"invalid-date"),
            }
            out.push(b'"');
        }
        (_, Datum::Timestamp(ms)) => {
            let t = chrono::DateTime::from_timestamp_millis(*ms).unwrap_or_default();
            write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), out);
        }
        (Type::Record(r), Datum::Record(fs)) => {
            out.push(b'{');
            for (i, (f, v)) in r.fields.iter().zip(fs).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(&f.name, out);
                out.push(b':');
                encode_json(v, &f.ty, out);
            }
            out.push(b'}');
        }
        (t, Datum::Array(xs)) => {
            let item = match t {
                Type::Array(i) => i.as_ref(),
                other => other,
            };
            out.push(b'[');
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                encode_json(x, item, out);
            }
            out.push(b']');
        }
        (t, Datum::Map(xs)) => {
            let item = match t {
                Type::Map(i) => i.as_ref(),
                other => other,
            };
            out.push(b'{');
            for (i, (k, x)) in xs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                encode_json(x, item, out);
            }
            out.push(b'}');
        }
        (_, Datum::Record(_)) => out.extend_from_slice(b"null"),
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // serde_json's escaper; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

impl Datum {
    /// The value as a `serde_json::Value` (for display and diffs).
    pub fn to_json(&self, ty: &Type) -> serde_json::Value {
        let mut buf = Vec::new();
        encode_json(self, ty, &mut buf);
        serde_json::from_slice(&buf).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Registry;

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.add(
            r#"{"type":"record","name":"P","namespace":"t","fields":[
                {"name":"id","type":"string","format":"resident-id"},
                {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}},
                {"name":"born","type":{"type":"int","logicalType":"date"}},
                {"name":"amount_fen","type":"long"},
                {"name":"nick","type":["null","string"],"default":null},
                {"name":"tags","type":{"type":"array","items":"string"},"default":[]},
                {"name":"addr","type":{"type":"record","name":"A","fields":[{"name":"city","type":"string"}]}}
            ]}"#,
            "p.avsc".into(),
        )
        .unwrap();
        r
    }

    fn ty(r: &Registry) -> Type {
        Type::Record(r.get("P").unwrap().record.clone())
    }

    #[test]
    fn decodes_in_schema_order_with_defaults() {
        let r = registry();
        let t = ty(&r);
        let d = decode_json(
            r#"{"addr":{"city":"长沙"},"amount_fen":41000,"born":"1990-03-07","kind":"B","id":"110105199003070017","extra":1}"#.as_bytes(),
            &t,
        )
        .unwrap();
        let Datum::Record(fs) = &d else { panic!() };
        assert_eq!(fs[0], Datum::Str("110105199003070017".into()));
        assert_eq!(fs[2], Datum::Date(parse_date("1990-03-07").unwrap()));
        assert_eq!(fs[4], Datum::Null);
        assert_eq!(fs[5], Datum::Array(vec![]));
        let mut out = Vec::new();
        encode_json(&d, &t, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"id":"110105199003070017","kind":"B","born":"1990-03-07","amount_fen":41000,"nick":null,"tags":[],"addr":{"city":"长沙"}}"#
        );
    }

    #[test]
    fn errors_name_the_path_and_hide_the_value() {
        let r = registry();
        let t = ty(&r);
        let e = decode_json(
            br#"{"id":"x","kind":"A","born":"1990-03-07","amount_fen":1,"addr":{"city":110105199003070017}}"#,
            &t,
        )
        .unwrap_err();
        assert_eq!(e.path, "addr.city");
        assert!(
            e.message.starts_with("expected string, found an integer"),
            "{e}"
        );
        assert!(!e.to_string().contains("110105199003070017"));
        let e = decode_json(br#"{"id":"x","kind":"C"}"#, &t).unwrap_err();
        assert_eq!(e.path, "kind");
        let e = decode_json(
            br#"{"id":"x","kind":"A","born":"1990-02-30","amount_fen":1}"#,
            &t,
        )
        .unwrap_err();
        assert_eq!(e.path, "born");
        let e = decode_json(
            br#"{"id":"x","kind":"A","born":"1990-02-03","amount_fen":1.5}"#,
            &t,
        )
        .unwrap_err();
        assert_eq!(e.path, "amount_fen");
        assert!(e.message.contains("integer fen"));
        let e = decode_json(
            br#"{"id":"x","kind":"A","born":"1990-02-03","amount_fen":1}"#,
            &t,
        )
        .unwrap_err();
        assert_eq!(e.path, "addr");
        assert!(e.message.starts_with("missing required field"), "{e}");
        let e = decode_json(
            br#"{"id":"x","kind":"A","born":"1990-02-03","amount_fen":1,"tags":["a",2]}"#,
            &t,
        )
        .unwrap_err();
        assert_eq!(e.path, "tags[1]");
        assert!(decode_json(b"{\"id\":\"x\"", &t).is_err());
    }

    #[test]
    fn strict_rejects_unknown_fields() {
        let r = registry();
        let t = ty(&r);
        let v = serde_json::json!({"id":"x","kind":"A","born":"1990-02-03","amount_fen":1,"addr":{"city":"a","zip":"1"}});
        assert!(decode_json_value(&v, &t, false).is_ok());
        let e = decode_json_value(&v, &t, true).unwrap_err();
        assert_eq!(e.path, "addr.zip");
    }

    #[test]
    fn avro_single_object_round_trip() {
        let r = registry();
        let s = r.get("P").unwrap().clone();
        let t = ty(&r);
        let d = decode_json(
            r#"{"id":"110105199003070017","kind":"B","born":"1990-03-07","amount_fen":41000,"nick":"x","tags":["a"],"addr":{"city":"长沙"}}"#.as_bytes(),
            &t,
        )
        .unwrap();
        let codec = crate::schema::AvroCodec::new(s);
        let bytes = codec.encode(&d).unwrap();
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        assert_eq!(codec.decode(&bytes).unwrap(), d);
        let mut bad = bytes.clone();
        bad[3] ^= 1;
        assert!(codec.decode(&bad).is_err());
    }
}
