//! [`Datum`]: one value of a record, laid out by its schema.

/// A value shaped by a [`super::Type`]. Records hold their fields in schema
/// order, so a field path resolves to indices once, at load.
#[derive(Clone, Debug, PartialEq)]
pub enum Datum {
    /// No value (an optional field that is absent).
    Null,
    /// A boolean.
    Bool(bool),
    /// An `int` or `long`; amounts of money are integer fen.
    Int(i64),
    /// A string, or an enum symbol. Strings of up to 24 bytes (ID and
    /// certificate numbers, names, dates) are stored inline, without an
    /// allocation.
    Str(compact_str::CompactString),
    /// Days since 1970-01-01.
    Date(i32),
    /// Milliseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    /// Fields in schema order.
    Record(Vec<Datum>),
    /// Array items.
    Array(Vec<Datum>),
    /// Map entries, in the order they arrived.
    Map(Vec<(String, Datum)>),
}

pub use crate::domain::days::{date_from_days, days_from_date};
