//! Conversion between apache-avro schemas and values and the hub's own
//! [`Type`] and [`Datum`], and Avro single-object encoding (the format used
//! for stored payloads and Kafka values).

use super::{Datum, EnumType, Field, Format, RecordType, SchemaError, Type};
use apache_avro::types::Value;
use apache_avro::Schema as AvroSchema;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Builds the typed view of an Avro schema. `named` collects named types so
/// that later references resolve to them.
pub(super) fn to_type(
    s: &AvroSchema,
    named: &mut BTreeMap<String, Type>,
    at: &str,
) -> Result<Type, SchemaError> {
    let unsupported = |what: &str| {
        Err(SchemaError::Unsupported(format!(
            "{}: {what}",
            if at.is_empty() { "schema" } else { at }
        )))
    };
    Ok(match s {
        AvroSchema::Null => Type::Null,
        AvroSchema::Boolean => Type::Bool,
        AvroSchema::Int => Type::Int { long: false },
        AvroSchema::Long => Type::Int { long: true },
        AvroSchema::String | AvroSchema::Uuid => Type::Str,
        AvroSchema::Date => Type::Date,
        AvroSchema::TimestampMillis => Type::Timestamp,
        AvroSchema::Float | AvroSchema::Double => {
            return unsupported("floating point is not allowed: amounts are integer fen (long)")
        }
        AvroSchema::Array(a) => Type::Array(Box::new(to_type(&a.items, named, at)?)),
        AvroSchema::Map(m) => Type::Map(Box::new(to_type(&m.types, named, at)?)),
        AvroSchema::Union(u) => {
            let v = u.variants();
            if v.len() == 2 && v[0] == AvroSchema::Null && v[1] != AvroSchema::Null {
                Type::Optional(Box::new(to_type(&v[1], named, at)?))
            } else {
                return unsupported(
                    "only unions of the form [\"null\", T] are supported (null first)",
                );
            }
        }
        AvroSchema::Enum(e) => {
            let t = Type::Enum(Arc::new(EnumType {
                name: e.name.fullname(None),
                symbols: e.symbols.clone(),
            }));
            named.insert(e.name.fullname(None), t.clone());
            t
        }
        AvroSchema::Record(r) => {
            let name = r.name.fullname(None);
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let path = if at.is_empty() {
                    f.name.clone()
                } else {
                    format!("{at}.{}", f.name)
                };
                let ty = to_type(&f.schema, named, &path)?;
                let format = match f.custom_attributes.get("format") {
                    None => None,
                    Some(serde_json::Value::String(s)) => match Format::parse(s) {
                        Some(fm) if matches!(ty.required(), Type::Str) => Some(fm),
                        Some(_) => {
                            return Err(SchemaError::Unsupported(format!(
                                "{path}: format {s:?} applies to string fields only"
                            )))
                        }
                        None => {
                            return Err(SchemaError::Unsupported(format!(
                                "{path}: unknown format {s:?} (known: resident-id, certificate-no, bank-card, region-code, period, cnaps-code)"
                            )))
                        }
                    },
                    Some(_) => {
                        return Err(SchemaError::Unsupported(format!("{path}: format must be a string")))
                    }
                };
                let default = match &f.default {
                    None => None,
                    Some(v) => Some(super::decode_json_value(v, &ty, false).map_err(|e| {
                        SchemaError::Unsupported(format!(
                            "{path}: default does not fit the type: {e}"
                        ))
                    })?),
                };
                fields.push(Field {
                    name: f.name.clone(),
                    ty,
                    default,
                    format,
                });
            }
            let t = Type::Record(Arc::new(RecordType {
                name: name.clone(),
                fields,
            }));
            named.insert(name, t.clone());
            t
        }
        AvroSchema::Ref { name } => match named.get(&name.fullname(None)) {
            Some(t) => t.clone(),
            None => return unsupported(&format!("unknown type {}", name.fullname(None))),
        },
        other => return unsupported(&format!("type {other:?} is not supported")),
    })
}

/// Converts a datum to an apache-avro value of the given type.
pub fn to_avro(d: &Datum, ty: &Type) -> Value {
    match (ty, d) {
        (Type::Optional(_), Datum::Null) => Value::Union(0, Box::new(Value::Null)),
        (Type::Optional(t), d) => Value::Union(1, Box::new(to_avro(d, t))),
        (Type::Null, _) => Value::Null,
        (Type::Bool, Datum::Bool(b)) => Value::Boolean(*b),
        (Type::Int { long: false }, Datum::Int(i)) => Value::Int(*i as i32),
        (Type::Int { long: true }, Datum::Int(i)) => Value::Long(*i),
        (Type::Str, Datum::Str(s)) => Value::String(s.to_string()),
        (Type::Enum(e), Datum::Str(s)) => {
            let i = e.symbols.iter().position(|x| x == s).unwrap_or(0);
            Value::Enum(i as u32, s.to_string())
        }
        (Type::Date, Datum::Date(d)) => Value::Date(*d),
        (Type::Timestamp, Datum::Timestamp(t)) => Value::TimestampMillis(*t),
        (Type::Record(r), Datum::Record(fs)) => Value::Record(
            r.fields
                .iter()
                .zip(fs)
                .map(|(f, d)| (f.name.clone(), to_avro(d, &f.ty)))
                .collect(),
        ),
        (Type::Array(t), Datum::Array(xs)) => {
            Value::Array(xs.iter().map(|x| to_avro(x, t)).collect())
        }
        (Type::Map(t), Datum::Map(xs)) => {
            Value::Map(xs.iter().map(|(k, x)| (k.clone(), to_avro(x, t))).collect())
        }
        // Datums are built by the decoder or the mapping engine for their
        // type; a mismatch is a bug, encoded as null so that the Avro writer
        // reports it instead of a panic here.
        _ => Value::Null,
    }
}

/// Converts an apache-avro value back to a datum.
pub fn from_avro(v: Value) -> Datum {
    match v {
        Value::Null => Datum::Null,
        Value::Boolean(b) => Datum::Bool(b),
        Value::Int(i) => Datum::Int(i64::from(i)),
        Value::Long(i) => Datum::Int(i),
        Value::String(s) => Datum::Str(s.into()),
        Value::Uuid(u) => Datum::Str(u.to_string().into()),
        Value::Enum(_, s) => Datum::Str(s.into()),
        Value::Date(d) => Datum::Date(d),
        Value::TimestampMillis(t) => Datum::Timestamp(t),
        Value::Union(_, v) => from_avro(*v),
        Value::Record(fs) => Datum::Record(fs.into_iter().map(|(_, v)| from_avro(v)).collect()),
        Value::Array(xs) => Datum::Array(xs.into_iter().map(from_avro).collect()),
        Value::Map(m) => {
            let mut xs: Vec<_> = m.into_iter().map(|(k, v)| (k, from_avro(v))).collect();
            xs.sort_by(|a, b| a.0.cmp(&b.0));
            Datum::Map(xs)
        }
        _ => Datum::Null,
    }
}

/// Avro single-object encoding for one record schema: a 2-byte marker, the
/// 8-byte Rabin fingerprint of the schema's canonical form, then the binary
/// datum.
pub struct AvroCodec {
    schema: Arc<super::Schema>,
    fingerprint: [u8; 8],
}

/// Errors of [`AvroCodec`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes do not start with the single-object marker and this schema's fingerprint.
    #[error("not a single-object encoded {0}: wrong marker or fingerprint")]
    Header(String),
    /// apache-avro failed to encode or decode.
    #[error("Avro: {0}")]
    Avro(String),
}

impl AvroCodec {
    /// A codec for one schema.
    pub fn new(schema: Arc<super::Schema>) -> Self {
        let fp = schema.avro.fingerprint::<apache_avro::rabin::Rabin>();
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&fp.bytes[..8]);
        AvroCodec {
            schema,
            fingerprint,
        }
    }

    /// The 8-byte Rabin fingerprint (little-endian, as single-object encoding writes it).
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// Encodes a record.
    pub fn encode(&self, d: &Datum) -> Result<Vec<u8>, CodecError> {
        let v = to_avro(d, &Type::Record(self.schema.record.clone()));
        let body = apache_avro::to_avro_datum(&self.schema.avro, v)
            .map_err(|e| CodecError::Avro(e.to_string()))?;
        let mut out = Vec::with_capacity(10 + body.len());
        out.extend_from_slice(&[0xC3, 0x01]);
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes a record.
    pub fn decode(&self, bytes: &[u8]) -> Result<Datum, CodecError> {
        if bytes.len() < 10 || bytes[..2] != [0xC3, 0x01] || bytes[2..10] != self.fingerprint {
            return Err(CodecError::Header(self.schema.record.name.clone()));
        }
        let mut rest = &bytes[10..];
        let v = apache_avro::from_avro_datum(&self.schema.avro, &mut rest, None)
            .map_err(|e| CodecError::Avro(e.to_string()))?;
        Ok(from_avro(v))
    }
}
