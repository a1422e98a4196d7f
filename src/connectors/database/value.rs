//! Column values read against the operation's schema, and record fields
//! made into column values: the one place that knows how a front-end
//! table's types meet the Avro types.
//!
//! Both engines hand rows over as text (PostgreSQL casts every column to
//! `text`; MySQL's values are rendered as the server renders them), with a
//! coarse kind per column, so both are read by the same rules.

use crate::schema::{Field, Type};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use serde_json::{Map, Value};

/// What a column holds, as far as reading and writing it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `boolean`, or MySQL `tinyint(1)`.
    Bool,
    /// Integers.
    Int,
    /// `numeric`, `decimal`, floating point.
    Num,
    /// Text of any length.
    Text,
    /// `json`, `jsonb`.
    Json,
    /// `date`.
    Date,
    /// A date-time; `zoned` if it carries its offset (`timestamptz`).
    Time {
        /// Whether the value says its offset.
        zoned: bool,
    },
    /// Anything else, read as its text.
    Other,
}

impl Kind {
    /// The kind of a PostgreSQL type, by name.
    pub fn of_postgres(ty: &str) -> Kind {
        match ty {
            "bool" => Kind::Bool,
            "int2" | "int4" | "int8" | "oid" => Kind::Int,
            "numeric" | "float4" | "float8" | "money" => Kind::Num,
            "text" | "varchar" | "bpchar" | "name" | "char" | "uuid" | "citext" => Kind::Text,
            "json" | "jsonb" => Kind::Json,
            "date" => Kind::Date,
            "timestamp" => Kind::Time { zoned: false },
            "timestamptz" => Kind::Time { zoned: true },
            _ => Kind::Other,
        }
    }

    /// What a column of this kind is called in messages.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Bool => "boolean",
            Kind::Int => "integer",
            Kind::Num => "decimal",
            Kind::Text | Kind::Other => "text",
            Kind::Json => "JSON",
            Kind::Date => "date",
            Kind::Time { .. } => "date-time",
        }
    }
}

/// A column: its name and kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// As the database names it.
    pub name: String,
    /// What it holds.
    pub kind: Kind,
}

/// The column a field is read from: the one of the same name (ignoring
/// case, as MySQL does).
pub fn column_of(columns: &[Column], field: &str) -> Option<usize> {
    columns.iter().position(|c| c.name == field).or_else(|| {
        columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(field))
    })
}

/// Reads a row (each column's text, or NULL) as a JSON record of the
/// schema's fields; a column that does not fit its field is an error that
/// names the column (never its value: it may be personal data). Columns
/// that are no field are left out; fields without a column are left to
/// their defaults.
pub fn read_row(
    columns: &[Column],
    fields: &[(usize, &Field)],
    row: &[Option<String>],
    zone: &FixedOffset,
) -> Result<Vec<u8>, String> {
    // Written as JSON straight away: no map of owned keys and values per
    // row (the intake reads the record against the schema next).
    let mut out = Vec::with_capacity(64 + 32 * fields.len());
    out.push(b'{');
    for (k, (i, f)) in fields.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &f.name);
        out.push(b':');
        let c = &columns[*i];
        let text = row[*i].as_deref();
        let written = match (text, f.ty.required()) {
            (Some(t), Type::Str | Type::Enum(_)) => {
                serde_json::to_writer(&mut out, t).map_err(|e| e.to_string())
            }
            _ => read_value(c.kind, &f.ty, text, zone)
                .and_then(|v| serde_json::to_writer(&mut out, &v).map_err(|e| e.to_string())),
        };
        written.map_err(|why| {
            format!(
                "column {} ({}) does not fit field {} ({}): {why}",
                c.name,
                c.kind.word(),
                f.name,
                f.ty
            )
        })?;
    }
    out.push(b'}');
    Ok(out)
}

/// The whole row as text, kept as the record when it cannot be read.
pub fn row_as_text(columns: &[Column], row: &[Option<String>]) -> Vec<u8> {
    let m: Map<String, Value> = columns
        .iter()
        .zip(row)
        .map(|(c, v)| {
            (
                c.name.clone(),
                v.clone().map(Value::String).unwrap_or(Value::Null),
            )
        })
        .collect();
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

fn read_value(
    kind: Kind,
    ty: &Type,
    text: Option<&str>,
    zone: &FixedOffset,
) -> Result<Value, String> {
    let Some(t) = text else {
        return match ty {
            Type::Optional(_) | Type::Null => Ok(Value::Null),
            _ => Err("NULL, and the field is not optional".into()),
        };
    };
    match ty.required() {
        Type::Str | Type::Enum(_) => Ok(Value::String(t.to_string())),
        Type::Int { long } => {
            let n: i64 = t.trim().parse().map_err(|_| match kind {
                Kind::Num => "not a whole number (amounts are integer fen)".to_string(),
                _ => "not an integer".to_string(),
            })?;
            if !long && i32::try_from(n).is_err() {
                return Err("out of range for int (32-bit)".into());
            }
            Ok(Value::from(n))
        }
        Type::Bool => match t {
            "t" | "true" | "TRUE" | "1" => Ok(Value::Bool(true)),
            "f" | "false" | "FALSE" | "0" => Ok(Value::Bool(false)),
            _ => Err("not a boolean (true/false, 1/0)".into()),
        },
        Type::Date => {
            let day = t.get(..10).unwrap_or(t);
            NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .map(|_| Value::String(day.to_string()))
                .map_err(|_| "not a date YYYY-MM-DD".into())
        }
        Type::Timestamp => match kind {
            Kind::Int => t
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| "not milliseconds since 1970".into()),
            _ => parse_time(t, zone)
                .map(Value::from)
                .ok_or_else(|| "not a date-time".into()),
        },
        Type::Record(_) | Type::Array(_) | Type::Map(_) => {
            serde_json::from_str(t).map_err(|e| format!("not JSON ({e})"))
        }
        Type::Null => Err("the field is always null".into()),
        Type::Optional(_) => unreachable!("required() strips the option"),
    }
}

/// A date-time as databases render it (`2026-12-01 10:00:00.123+08`,
/// `2026-12-01 10:00:00`, RFC 3339), as milliseconds since 1970; without
/// an offset it is in `zone`.
pub fn parse_time(t: &str, zone: &FixedOffset) -> Option<i64> {
    let t = t.trim();
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Some(d.timestamp_millis());
        }
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp_millis());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return zone
                .from_local_datetime(&n)
                .single()
                .map(|d| d.timestamp_millis());
        }
    }
    None
}

/// How a value goes into a column.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// Text (numbers, dates and date-times as the database reads them).
    Text(String),
    /// JSON, for JSON columns.
    Json(Value),
}

/// A record field's JSON value made into the value of its column.
/// `mysql`: date-times without an offset (MySQL reads none).
pub fn write_value(kind: Kind, ty: &Type, v: &Value, zone: &FixedOffset, mysql: bool) -> Cell {
    match v {
        Value::Null => Cell::Null,
        Value::Bool(b) => match kind {
            Kind::Int | Kind::Num => Cell::Int(*b as i64),
            Kind::Text | Kind::Other => Cell::Text(b.to_string()),
            _ => Cell::Bool(*b),
        },
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cell::Int(i),
            None => Cell::Text(n.to_string()),
        },
        Value::String(s) => {
            let time = matches!(ty.required(), Type::Timestamp);
            match kind {
                Kind::Time { .. } if time => match parse_time(s, zone) {
                    Some(ms) => Cell::Text(render_time(ms, zone, mysql)),
                    None => Cell::Text(s.clone()),
                },
                Kind::Int if time => match parse_time(s, zone) {
                    Some(ms) => Cell::Int(ms),
                    None => Cell::Text(s.clone()),
                },
                Kind::Json => Cell::Json(v.clone()),
                _ => Cell::Text(s.clone()),
            }
        }
        Value::Array(_) | Value::Object(_) => match kind {
            Kind::Json if !mysql => Cell::Json(v.clone()),
            _ => Cell::Text(v.to_string()),
        },
    }
}

/// Milliseconds since 1970 as a date-time in `zone`: with its offset for
/// PostgreSQL (a `timestamp` column keeps the wall time, a `timestamptz`
/// column the instant), without for MySQL.
pub fn render_time(ms: i64, zone: &FixedOffset, mysql: bool) -> String {
    let d = zone.timestamp_millis_opt(ms).single().unwrap_or_else(|| {
        zone.timestamp_millis_opt(0)
            .single()
            .expect("the epoch exists in every zone")
    });
    if mysql {
        d.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
    } else {
        d.format("%Y-%m-%d %H:%M:%S%.3f%:z").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cst() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }

    #[test]
    fn date_times_are_read_in_their_offset_or_the_zone() {
        let z = cst();
        let a = parse_time("2026-12-01 10:00:00.123+08", &z).unwrap();
        let b = parse_time("2026-12-01 10:00:00.123", &z).unwrap();
        let c = parse_time("2026-12-01T02:00:00.123Z", &z).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(render_time(a, &z, true), "2026-12-01 10:00:00.123");
        assert_eq!(render_time(a, &z, false), "2026-12-01 10:00:00.123+08:00");
        assert_eq!(parse_time("yesterday", &z), None);
    }

    #[test]
    fn values_are_read_by_the_field_type() {
        let z = cst();
        let int = Type::Int { long: true };
        assert_eq!(
            read_value(Kind::Int, &int, Some("42"), &z),
            Ok(Value::from(42))
        );
        assert!(read_value(Kind::Num, &int, Some("4.50"), &z)
            .unwrap_err()
            .contains("fen"));
        assert_eq!(
            read_value(Kind::Bool, &Type::Bool, Some("t"), &z),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            read_value(Kind::Int, &Type::Bool, Some("0"), &z),
            Ok(Value::Bool(false))
        );
        assert!(read_value(Kind::Text, &Type::Str, None, &z).is_err());
        assert_eq!(
            read_value(Kind::Text, &Type::Optional(Box::new(Type::Str)), None, &z),
            Ok(Value::Null)
        );
        assert_eq!(
            read_value(Kind::Date, &Type::Date, Some("2026-12-01"), &z),
            Ok(Value::from("2026-12-01"))
        );
        assert!(read_value(
            Kind::Int,
            &Type::Int { long: false },
            Some("9999999999"),
            &z
        )
        .is_err());
    }

    #[test]
    fn a_row_is_read_as_a_json_record_of_its_fields() {
        let z = cst();
        let f = |name: &str, ty: Type| Field {
            name: name.into(),
            ty,
            default: None,
            format: None,
        };
        let fields = [
            f("name", Type::Str),
            f("n", Type::Int { long: true }),
            f("tags", Type::Array(Box::new(Type::Str))),
            f("note", Type::Optional(Box::new(Type::Str))),
        ];
        let columns: Vec<Column> = [
            ("note", Kind::Text),
            ("name", Kind::Text),
            ("n", Kind::Int),
            ("tags", Kind::Json),
        ]
        .map(|(n, kind)| Column {
            name: n.into(),
            kind,
        })
        .to_vec();
        let map: Vec<(usize, &Field)> = fields
            .iter()
            .map(|f| (column_of(&columns, &f.name).unwrap(), f))
            .collect();
        let row = [
            None,
            Some("张\"三".to_string()),
            Some("7".into()),
            Some("[\"a\"]".into()),
        ];
        let json = read_row(&columns, &map, &row, &z).unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "张\"三", "n": 7, "tags": ["a"], "note": null})
        );
        let bad = [
            None,
            Some("x".to_string()),
            Some("seven".into()),
            Some("[]".into()),
        ];
        assert_eq!(
            read_row(&columns, &map, &bad, &z).unwrap_err(),
            "column n (integer) does not fit field n (int): not an integer"
        );
    }

    #[test]
    fn fields_are_written_by_the_column_kind() {
        let z = cst();
        let ts = Type::Timestamp;
        let v = Value::from("2026-12-01T02:00:00.000Z");
        assert_eq!(
            write_value(Kind::Time { zoned: false }, &ts, &v, &z, true),
            Cell::Text("2026-12-01 10:00:00.000".into())
        );
        assert_eq!(
            write_value(Kind::Int, &ts, &v, &z, false),
            Cell::Int(parse_time("2026-12-01 10:00:00", &z).unwrap())
        );
        assert_eq!(
            write_value(Kind::Int, &Type::Bool, &Value::Bool(true), &z, true),
            Cell::Int(1)
        );
        let obj = serde_json::json!({"a": 1});
        assert_eq!(
            write_value(Kind::Text, &Type::Str, &obj, &z, false),
            Cell::Text("{\"a\":1}".into())
        );
    }
}
