//! Message states and attempt outcomes: small enums in Rust, integers in
//! the tables (`messages.status`, `attempts.outcome`), as svix keeps them.
//!
//! Statements that select by state write it as a literal, never a bound
//! value: SQLite's planner picks a partial index (`WHERE status = 0`) only
//! when it sees the value. [`status_sql!`] gives that literal from one
//! place, and a unit test holds it to [`Status::code`].

/// A message's state.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "i64", try_from = "i64")]
pub enum Status {
    /// Waiting for delivery (or being delivered).
    Pending,
    /// Delivered.
    Delivered,
    /// Failed permanently or ran out of retries.
    Dead,
    /// Skipped by an operator.
    Skipped,
}

impl Status {
    /// Every state, in code order.
    pub const ALL: [Status; 4] = [
        Status::Pending,
        Status::Delivered,
        Status::Dead,
        Status::Skipped,
    ];

    /// Its code in `messages.status`.
    pub const fn code(self) -> i64 {
        match self {
            Status::Pending => 0,
            Status::Delivered => 1,
            Status::Dead => 2,
            Status::Skipped => 3,
        }
    }

    /// The state of a stored code.
    pub fn from_code(code: i64) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Its name (`pending`, `delivered`, `dead`, `skipped`), as the API
    /// and the CLI write it.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
            Status::Skipped => "skipped",
        }
    }

    /// The state of a name.
    pub fn parse(name: &str) -> Result<Status, StateError> {
        Status::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| StateError::Name(name.to_string()))
    }
}

/// A name or code that is not a message state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// An unknown name.
    #[error("no status {0:?}: pending, delivered, dead or skipped")]
    Name(String),
    /// A code no version of tongban writes.
    #[error("message status {0} is not a state")]
    Code(i64),
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Status> for i64 {
    fn from(s: Status) -> i64 {
        s.code()
    }
}

impl TryFrom<i64> for Status {
    type Error = StateError;
    fn try_from(code: i64) -> Result<Status, StateError> {
        Status::from_code(code).ok_or(StateError::Code(code))
    }
}

// Read and written as its code by both stores; a code no version of
// tongban writes is an error of the row, not a state.
impl rusqlite::types::FromSql for Status {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let code = i64::column_result(v)?;
        Status::from_code(code).ok_or(rusqlite::types::FromSqlError::OutOfRange(code))
    }
}

impl rusqlite::ToSql for Status {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.code().into())
    }
}

impl<'a> tokio_postgres::types::FromSql<'a> for Status {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Status::try_from(i64::from_sql(ty, raw)?)?)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <i64 as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

impl tokio_postgres::types::ToSql for Status {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.code().to_sql(ty, out)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <i64 as tokio_postgres::types::ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The states by their old names, for code written against the constants.
pub mod status {
    use super::Status;
    /// Waiting for delivery (or being delivered).
    pub const PENDING: Status = Status::Pending;
    /// Delivered.
    pub const DELIVERED: Status = Status::Delivered;
    /// Failed permanently or ran out of retries.
    pub const DEAD: Status = Status::Dead;
    /// Skipped by an operator.
    pub const SKIPPED: Status = Status::Skipped;
}

/// How one attempt ended, in `attempts.outcome`. Its own type: an attempt
/// is retried, delivered or dead, never skipped (a skip is an operator's
/// action on a message, not an attempt). The codes are those the table has
/// always held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Failed transiently; the message was tried again later.
    Retried,
    /// Delivered.
    Delivered,
    /// Failed for good.
    Dead,
}

impl AttemptOutcome {
    /// Its code in `attempts.outcome`.
    pub const fn code(self) -> i64 {
        match self {
            AttemptOutcome::Retried => 0,
            AttemptOutcome::Delivered => 1,
            AttemptOutcome::Dead => 2,
        }
    }
}

/// The SQL literal of a state (`status_sql!(PENDING)` is `"0"`), or of an
/// attempt outcome (`status_sql!(RETRIED)`), for `concat!` into statements.
macro_rules! status_sql {
    (PENDING) => {
        "0"
    };
    (DELIVERED) => {
        "1"
    };
    (DEAD) => {
        "2"
    };
    (SKIPPED) => {
        "3"
    };
    (RETRIED) => {
        "0"
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_literals_are_the_codes() {
        let lit: [(&str, i64); 6] = [
            (status_sql!(PENDING), Status::Pending.code()),
            (status_sql!(DELIVERED), Status::Delivered.code()),
            (status_sql!(DEAD), Status::Dead.code()),
            (status_sql!(SKIPPED), Status::Skipped.code()),
            (status_sql!(RETRIED), AttemptOutcome::Retried.code()),
            (status_sql!(DEAD), AttemptOutcome::Dead.code()),
        ];
        for (sql, code) in lit {
            assert_eq!(sql, code.to_string());
        }
        assert_eq!(AttemptOutcome::Delivered.code(), Status::Delivered.code());
    }

    #[test]
    fn states_round_trip_by_code_name_and_serde() {
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
            assert_eq!(Status::parse(s.name()), Ok(s));
            let j = serde_json::to_string(&s).unwrap();
            assert_eq!(j, s.code().to_string(), "stored task filters keep integers");
            assert_eq!(serde_json::from_str::<Status>(&j).unwrap(), s);
        }
        assert_eq!(Status::from_code(4), None);
        assert!(Status::parse("failed")
            .unwrap_err()
            .to_string()
            .contains("pending, delivered"));
        assert!(serde_json::from_str::<Status>("7").is_err());
    }
}
