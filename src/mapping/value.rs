//! The runtime value of a compiled expression, and the errors evaluation can
//! raise.

use crate::schema::Datum;
use compact_str::CompactString;
use std::borrow::Cow;

/// A value during evaluation. It borrows from the input record and from the
/// program's constants wherever it can, so that reading a field or trimming
/// a string allocates nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum Val<'a> {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer (amounts in fen).
    Int(i64),
    /// A string or an enum symbol.
    Str(Text<'a>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Milliseconds since the epoch.
    Ts(i64),
    /// A record of the input.
    Rec(&'a [Datum]),
    /// An array of the input.
    Arr(&'a [Datum]),
    /// A map of the input.
    Map(&'a [(String, Datum)]),
    /// A list built by the expression.
    List(Vec<Val<'a>>),
}

impl<'a> Val<'a> {
    /// Borrows a datum as a value.
    #[inline]
    pub fn from_datum(d: &'a Datum) -> Val<'a> {
        match d {
            Datum::Null => Val::Null,
            Datum::Bool(b) => Val::Bool(*b),
            Datum::Int(i) => Val::Int(*i),
            Datum::Str(s) => Val::Str(Text::Borrowed(s)),
            Datum::Date(d) => Val::Date(*d),
            Datum::Timestamp(t) => Val::Ts(*t),
            Datum::Record(f) => Val::Rec(f),
            Datum::Array(a) => Val::Arr(a),
            Datum::Map(m) => Val::Map(m),
        }
    }

    /// Turns the value into an owned datum.
    pub fn into_datum(self) -> Datum {
        match self {
            Val::Null => Datum::Null,
            Val::Bool(b) => Datum::Bool(b),
            Val::Int(i) => Datum::Int(i),
            Val::Str(s) => Datum::Str(s.into_compact()),
            Val::Date(d) => Datum::Date(d),
            Val::Ts(t) => Datum::Timestamp(t),
            Val::Rec(f) => Datum::Record(f.to_vec()),
            Val::Arr(a) => Datum::Array(a.to_vec()),
            Val::Map(m) => Datum::Map(m.to_vec()),
            Val::List(xs) => Datum::Array(xs.into_iter().map(Val::into_datum).collect()),
        }
    }
}

/// Text during evaluation: borrowed from the record or the program's
/// constants, or owned, stored inline when short (most results of date
/// formatting, masking and concatenation), so producing it allocates nothing.
#[derive(Clone, Debug)]
pub enum Text<'a> {
    /// Borrowed from the input or the constants.
    Borrowed(&'a str),
    /// Made by a function.
    Owned(CompactString),
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }
}

impl PartialEq for Text<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text::Borrowed(s)
    }
}

impl From<String> for Text<'_> {
    fn from(s: String) -> Self {
        Text::Owned(CompactString::from(s))
    }
}

impl From<CompactString> for Text<'_> {
    fn from(s: CompactString) -> Self {
        Text::Owned(s)
    }
}

impl<'a> Text<'a> {
    /// Into an owned compact string (copies a borrowed one).
    pub fn into_compact(self) -> CompactString {
        match self {
            Text::Borrowed(s) => CompactString::from(s),
            Text::Owned(s) => s,
        }
    }

    /// Applies `f`, keeping the borrow when `f` returns a sub-slice of a borrowed text.
    pub fn map_slice(self, f: impl Fn(&str) -> &str) -> Text<'a> {
        match self {
            Text::Borrowed(b) => Text::Borrowed(f(b)),
            Text::Owned(o) => Text::Owned(CompactString::from(f(&o))),
        }
    }
}

/// Why an expression could not be evaluated for a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub Cow<'static, str>);

impl EvalError {
    /// An error with a fixed message.
    pub fn msg(m: &'static str) -> Self {
        EvalError(Cow::Borrowed(m))
    }
    /// An error with a formatted message.
    pub fn new(m: String) -> Self {
        EvalError(Cow::Owned(m))
    }
    /// Evaluation met a value of a type the checker ruled out: a bug.
    pub fn internal() -> Self {
        EvalError::msg("internal error: value of an unexpected type (please report)")
    }
}

/// Extracts a string.
#[inline]
pub fn as_str(v: Val<'_>) -> Result<Text<'_>, EvalError> {
    match v {
        Val::Str(s) => Ok(s),
        _ => Err(EvalError::internal()),
    }
}

/// Extracts an integer.
#[inline]
pub fn as_int(v: Val<'_>) -> Result<i64, EvalError> {
    match v {
        Val::Int(i) => Ok(i),
        _ => Err(EvalError::internal()),
    }
}

/// Extracts a boolean.
#[inline]
pub fn as_bool(v: Val<'_>) -> Result<bool, EvalError> {
    match v {
        Val::Bool(b) => Ok(b),
        _ => Err(EvalError::internal()),
    }
}

/// Extracts a date.
#[inline]
pub fn as_date(v: Val<'_>) -> Result<chrono::NaiveDate, EvalError> {
    match v {
        Val::Date(d) => crate::schema::date_from_days(d).ok_or(EvalError::msg("date out of range")),
        _ => Err(EvalError::internal()),
    }
}

/// Equality of scalar values (the checker guarantees comparable types).
pub fn val_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Date(x), Val::Date(y)) => x == y,
        (Val::Ts(x), Val::Ts(y)) => x == y,
        _ => false,
    }
}

/// Ordering of comparable scalar values.
pub fn val_cmp(a: &Val<'_>, b: &Val<'_>) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Date(x), Val::Date(y)) => Some(x.cmp(y)),
        (Val::Ts(x), Val::Ts(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Whether `needle` is an element of a list value.
pub fn contains(list: &Val<'_>, needle: &Val<'_>) -> bool {
    match list {
        Val::List(xs) => xs.iter().any(|x| val_eq(x, needle)),
        Val::Arr(xs) => xs.iter().any(|x| val_eq(&Val::from_datum(x), needle)),
        Val::Map(m) => match needle {
            Val::Str(k) => m.iter().any(|(key, _)| key.as_str() == &**k),
            _ => false,
        },
        _ => false,
    }
}
