//! Every way a delivery can fail, and the one match that sorts them into
//! transient (retry) and permanent (dead at once: it would fail the same
//! way if retried), with the reason in words an operator understands.

use std::time::Duration;

/// A failed delivery.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The target could not be reached (refused, reset, DNS, TLS handshake).
    #[error("the target could not be reached: {0}")]
    Connect(String),
    /// No answer in time.
    #[error("the target did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke during the exchange.
    #[error("the exchange with the target broke off: {0}")]
    Io(String),
    /// The target answered with a status other than success.
    #[error("the target answered HTTP {status}{}", excerpt_suffix(.excerpt))]
    Status {
        /// HTTP status.
        status: u16,
        /// Its `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// The start of the response body, masked.
        excerpt: String,
    },
    /// A message broker (Kafka) could not take the message: unavailable,
    /// busy or timed out (transient), or refusing it for good (too large,
    /// not authorised, invalid record).
    #[error("the broker {}: {reason}", if *.transient { "could not take it for now" } else { "refused it for good" })]
    Broker {
        /// The broker's error, in words.
        reason: String,
        /// Whether trying again may succeed.
        transient: bool,
    },
    /// A database (a front-end table) could not take the row for now
    /// (down, busy, the connection broke) or refused it for good (a
    /// constraint, a value of the wrong type, no such table or column).
    #[error("the database {}: {reason}", if *.transient { "could not take it for now" } else { "refused it" })]
    Database {
        /// The database's error, in words (masked).
        reason: String,
        /// Whether trying again may succeed.
        transient: bool,
    },
    /// The request could not be made from the message (a configuration or
    /// payload problem on our side).
    #[error("the request could not be made: {0}")]
    Request(String),
}

fn excerpt_suffix(e: &str) -> String {
    if e.is_empty() {
        String::new()
    } else {
        format!(": {e}")
    }
}

/// Transient failures are retried; permanent ones are dead at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The target is down, slow or busy: try again later.
    Transient,
    /// The target refused this record: retrying would fail the same way.
    Permanent,
}

impl DeliveryError {
    /// Transient or permanent.
    pub fn class(&self) -> Class {
        match self {
            DeliveryError::Connect(_) | DeliveryError::Timeout(_) | DeliveryError::Io(_) => {
                Class::Transient
            }
            DeliveryError::Status { status, .. } => match status {
                408 | 425 | 429 | 500..=599 => Class::Transient,
                _ => Class::Permanent,
            },
            DeliveryError::Broker {
                transient: true, ..
            } => Class::Transient,
            DeliveryError::Broker {
                transient: false, ..
            } => Class::Permanent,
            DeliveryError::Database {
                transient: true, ..
            } => Class::Transient,
            DeliveryError::Database {
                transient: false, ..
            } => Class::Permanent,
            DeliveryError::Request(_) => Class::Permanent,
        }
    }

    /// A short class name for the attempts table and metrics.
    pub fn error_class(&self) -> String {
        match self {
            DeliveryError::Connect(_) => "connect".into(),
            DeliveryError::Timeout(_) => "timeout".into(),
            DeliveryError::Io(_) => "io".into(),
            DeliveryError::Status { status, .. } => format!("http_{status}"),
            DeliveryError::Broker {
                transient: true, ..
            } => "broker".into(),
            DeliveryError::Broker {
                transient: false, ..
            } => "broker_refused".into(),
            DeliveryError::Database {
                transient: true, ..
            } => "database".into(),
            DeliveryError::Database {
                transient: false, ..
            } => "database_refused".into(),
            DeliveryError::Request(_) => "request".into(),
        }
    }

    /// The target's `Retry-After`, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, if the target answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            DeliveryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The start of a response body, safe to keep: at most `max` characters,
/// and every run of 15 or more digits (ID numbers, bank cards) masked.
pub fn excerpt(body: &str, max: usize) -> String {
    let cut: String = body.chars().take(max).collect();
    let mut out = String::with_capacity(cut.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().count() >= 15 {
            out.push_str(&crate::domain::mask::id_number(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in cut.chars() {
        if c.is_ascii_digit() || (c == 'X' || c == 'x') && !run.is_empty() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    if body.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_match_sorts_every_failure() {
        let st = |s| DeliveryError::Status {
            status: s,
            retry_after: None,
            excerpt: String::new(),
        };
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(st(s).class(), Class::Transient, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413, 422] {
            assert_eq!(st(s).class(), Class::Permanent, "{s}");
        }
        assert_eq!(
            DeliveryError::Connect("refused".into()).class(),
            Class::Transient
        );
        assert_eq!(
            DeliveryError::Timeout(Duration::from_secs(10)).class(),
            Class::Transient
        );
        assert_eq!(
            DeliveryError::Request("bad URL".into()).class(),
            Class::Permanent
        );
        assert_eq!(st(503).error_class(), "http_503");
    }

    #[test]
    fn excerpts_are_short_and_masked() {
        assert_eq!(
            excerpt(
                "unknown person 110105199003070017 (card 6217000000000000004)",
                200
            ),
            "unknown person 110105********0017 (card 621700*********0004)"
        );
        assert_eq!(excerpt("order 12345 refused", 200), "order 12345 refused");
        assert_eq!(excerpt("abcdef", 3), "abc…");
        let e = DeliveryError::Status {
            status: 422,
            retry_after: None,
            excerpt: "unknown person".into(),
        };
        assert_eq!(
            e.to_string(),
            "the target answered HTTP 422: unknown person"
        );
    }
}
