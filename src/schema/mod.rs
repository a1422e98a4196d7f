//! Avro schemas of the records that cross the hub, and the typed view of them
//! that the mapping compiler and the record decoder work with.
//!
//! `schemas/*.avsc` are parsed with apache-avro (so they are real Avro) and
//! turned into [`Type`] trees. A field may carry the custom attribute
//! `"format"` (`resident-id`, `certificate-no`, `bank-card`, `region-code`,
//! `period`, `cnaps-code`): every record produced for that schema is checked against it.
//!
//! Layer 2: uses the domain (formats of fields, dates) only.

mod avro;
mod datum;
mod json;

pub use avro::AvroCodec;
pub use datum::Datum;
pub use datum::{date_from_days, days_from_date};
pub use json::{
    decode_json, decode_json_value, encode_json, parse_date as json_parse_date, parse_timestamp,
    DecodeError,
};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The type of a value in a record.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    /// Avro `null`.
    Null,
    /// Avro `boolean`.
    Bool,
    /// Avro `int` (32-bit) or `long`; both are `int` in expressions.
    Int {
        /// `true` for Avro `long`.
        long: bool,
    },
    /// Avro `string` (and `uuid`).
    Str,
    /// Avro `int` with logical type `date`: days since 1970-01-01.
    Date,
    /// Avro `long` with logical type `timestamp-millis`.
    Timestamp,
    /// Avro `enum`: a string restricted to its symbols.
    Enum(Arc<EnumType>),
    /// Avro `record`.
    Record(Arc<RecordType>),
    /// Avro `array`.
    Array(Box<Type>),
    /// Avro `map` with string keys.
    Map(Box<Type>),
    /// Avro union `["null", T]`.
    Optional(Box<Type>),
}

/// An Avro enum.
#[derive(Debug, PartialEq)]
pub struct EnumType {
    /// Full name.
    pub name: String,
    /// Its symbols, in order.
    pub symbols: Vec<String>,
}

/// An Avro record.
#[derive(Debug, PartialEq)]
pub struct RecordType {
    /// Full name, e.g. `tongban.CertificateEvent`.
    pub name: String,
    /// Its fields, in schema order.
    pub fields: Vec<Field>,
}

/// One field of a record.
#[derive(Debug, PartialEq)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Field type.
    pub ty: Type,
    /// Default value, already in the field's type.
    pub default: Option<Datum>,
    /// Domain format the value must satisfy.
    pub format: Option<Format>,
}

/// Domain formats a string field can require (custom attribute `format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An 18-character resident ID number with a valid check character.
    ResidentId,
    /// A disability certificate number.
    CertificateNo,
    /// A 16–19 digit bank card number passing the Luhn check.
    BankCard,
    /// A 6-digit administrative division code of a known province.
    RegionCode,
    /// A month, `YYYY-MM`.
    Period,
    /// A 12-digit CNAPS bank code (the bank branch of an account).
    CnapsCode,
}

impl Format {
    fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "resident-id" => Format::ResidentId,
            "certificate-no" => Format::CertificateNo,
            "bank-card" => Format::BankCard,
            "region-code" => Format::RegionCode,
            "period" => Format::Period,
            "cnaps-code" => Format::CnapsCode,
            _ => return None,
        })
    }

    /// Checks a value; the error text never contains the value itself.
    pub fn check(self, s: &str) -> Result<(), String> {
        use crate::domain::{id, luhn, CertificateNo, ResidentId};
        match self {
            Format::ResidentId => ResidentId::parse_cached(s).map(|_| ()).map_err(|e| {
                format!(
                    "invalid ID number {}: {e}",
                    crate::domain::mask::id_number(s)
                )
            }),
            Format::CertificateNo => CertificateNo::parse_cached(s).map(|_| ()).map_err(|e| {
                format!(
                    "invalid certificate number {}: {e}",
                    crate::domain::mask::id_number(s)
                )
            }),
            Format::BankCard => luhn::validate_card(s).map_err(|e| {
                format!(
                    "invalid bank card {}: {e}",
                    crate::domain::mask::bank_card(s)
                )
            }),
            Format::RegionCode => {
                id::validate_region_code(s).map_err(|e| format!("invalid region code {s:?}: {e}"))
            }
            Format::CnapsCode => {
                if s.len() == 12 && s.bytes().all(|c| c.is_ascii_digit()) {
                    Ok(())
                } else {
                    Err(format!("invalid CNAPS bank code {s:?}: expected 12 digits"))
                }
            }
            Format::Period => {
                let ok = s.len() == 7
                    && s.as_bytes()[4] == b'-'
                    && chrono::NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").is_ok();
                if ok {
                    Ok(())
                } else {
                    Err(format!("invalid period {s:?}: expected YYYY-MM"))
                }
            }
        }
    }
}

impl RecordType {
    /// Index of a field by name.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// Its field names, comma-separated (for messages).
    pub fn field_names(&self) -> String {
        self.fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The short name (after the last dot).
    pub fn short_name(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }
}

impl Type {
    /// The type without an `Optional` wrapper.
    pub fn required(&self) -> &Type {
        match self {
            Type::Optional(t) => t,
            t => t,
        }
    }

    /// `true` for `Optional`.
    pub fn is_optional(&self) -> bool {
        matches!(self, Type::Optional(_))
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Null => write!(f, "null"),
            Type::Bool => write!(f, "bool"),
            Type::Int { .. } => write!(f, "int"),
            Type::Str => write!(f, "string"),
            Type::Date => write!(f, "date"),
            Type::Timestamp => write!(f, "timestamp"),
            Type::Enum(e) => write!(f, "enum {}", e.name.rsplit('.').next().unwrap_or(&e.name)),
            Type::Record(r) => write!(f, "record {}", r.short_name()),
            Type::Array(t) => write!(f, "list({t})"),
            Type::Map(t) => write!(f, "map(string, {t})"),
            Type::Optional(t) => write!(f, "optional {t}"),
        }
    }
}

/// Errors in a schema file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// apache-avro refused the schema.
    #[error("not a valid Avro schema: {0}")]
    Avro(String),
    /// The schema uses something the hub does not support.
    #[error("{0}")]
    Unsupported(String),
}

/// All schemas of a configuration, by full and by short name.
#[derive(Debug, Default)]
pub struct Registry {
    by_name: BTreeMap<String, Arc<Schema>>,
}

/// One record schema: the Avro schema and its typed view.
#[derive(Debug)]
pub struct Schema {
    /// The record type.
    pub record: Arc<RecordType>,
    /// The Avro schema (for binary encoding).
    pub avro: apache_avro::Schema,
    /// The file it came from.
    pub file: std::path::PathBuf,
}

impl Registry {
    /// Parses one `.avsc` text and adds it under its full and short name.
    pub fn add(
        &mut self,
        text: &str,
        file: std::path::PathBuf,
    ) -> Result<Arc<Schema>, SchemaError> {
        let avro =
            apache_avro::Schema::parse_str(text).map_err(|e| SchemaError::Avro(e.to_string()))?;
        let ty = avro::to_type(&avro, &mut BTreeMap::new(), "")?;
        let Type::Record(record) = ty else {
            return Err(SchemaError::Unsupported(
                "the top level of a schema file must be a record".into(),
            ));
        };
        let schema = Arc::new(Schema {
            record: record.clone(),
            avro,
            file,
        });
        self.by_name.insert(record.name.clone(), schema.clone());
        self.by_name
            .insert(record.short_name().to_string(), schema.clone());
        Ok(schema)
    }

    /// Looks a schema up by full or short name.
    pub fn get(&self, name: &str) -> Option<&Arc<Schema>> {
        self.by_name.get(name)
    }

    /// Full names of all schemas.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name
            .iter()
            .filter(|(k, v)| **k == v.record.name)
            .map(|(k, _)| k.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_check_values_and_never_echo_them() {
        assert!(Format::ResidentId.check("110105199003070017").is_ok());
        let e = Format::ResidentId.check("110105199003070011").unwrap_err();
        assert!(
            e.contains("110105********0011") && !e.contains("110105199003070011"),
            "{e}"
        );
        assert!(Format::CertificateNo
            .check("11010519900307001741B1")
            .is_ok());
        assert!(Format::BankCard.check("6217000000000000001").is_err());
        assert!(Format::Period.check("2026-11").is_ok());
        assert!(Format::Period.check("2026-13").is_err());
        assert!(Format::RegionCode.check("430104").is_ok());
    }
}
