//! The store beneath the outbox: inbox, messages, per-key heads, attempts,
//! quarantine, cursors, targets and audit, behind one [`Store`] with two
//! implementations that pass one conformance suite: embedded SQLite (the
//! default, one hub process) and PostgreSQL (several hub processes).
//!
//! Per-key order and a claim cost that does not grow with the backlog come
//! from the `heads` table: one row per (target, key) with pending work,
//! pointing at its oldest pending message. Claiming reads due heads through
//! an index on `(target, due_at)`; a claim pushes `due_at` to the end of the
//! lease, so a message whose worker died comes due again by itself, and
//! bumps a lease counter, so a stale worker cannot settle it. A dead message
//! parks its head (`due_at` NULL): its key waits, other keys flow.
//!
//! Layer 2: uses the domain only; everything that persists goes through it.

#[macro_use]
mod state;
mod postgres;
mod sql;
mod sqlite;

pub use state::{status, AttemptOutcome, StateError, Status};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use std::time::{SystemTime, UNIX_EPOCH};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL is not `sqlite://…` or `postgres://…`.
    #[error("store URL {0:?} must start with sqlite:// or postgres://")]
    Url(String),
    /// A `sqlite://` URL's option is unknown or its value is not valid.
    #[error(
        "store URL {0:?}: {1} (the one option is cache_mib=N, the page cache in MiB, 1 to 4096)"
    )]
    UrlOption(String, String),
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had from the pool.
    #[error("PostgreSQL pool: {0}")]
    Pool(String),
    /// Applying the schema migrations failed.
    #[error("migrating the store: {0}")]
    Migration(String),
    /// An operator action that does not fit the message's state.
    #[error("{0}")]
    Refused(String),
    /// A blocking task failed.
    #[error("store task failed: {0}")]
    Task(String),
    /// The store's directory could not be made.
    #[error("store directory: {0}")]
    Io(#[from] std::io::Error),
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The store: embedded SQLite or PostgreSQL.
pub enum Store {
    /// Embedded SQLite (one hub process).
    Sqlite(SqliteStore),
    /// PostgreSQL (several hub processes may share it).
    Postgres(PgStore),
}

/// A `sqlite://PATH[?cache_mib=N]` URL's path and page cache in MiB; `None`
/// when the URL is not a SQLite one. Checked by `tongban check` and used by
/// [`Store::open`], so both refuse the same URLs.
pub fn sqlite_url(url: &str) -> Option<Result<(&str, u32), StoreError>> {
    let rest = url.strip_prefix("sqlite://")?;
    let (path, options) = rest.split_once('?').unwrap_or((rest, ""));
    let mut cache_mib = sqlite::DEFAULT_CACHE_MIB;
    for option in options.split('&').filter(|o| !o.is_empty()) {
        let bad = |why: String| Some(Err(StoreError::UrlOption(url.to_string(), why)));
        match option.split_once('=') {
            Some(("cache_mib", v)) => match v.parse().ok().filter(|n| (1..=4096).contains(n)) {
                Some(n) => cache_mib = n,
                None => return bad(format!("cache_mib={v} is not a number from 1 to 4096")),
            },
            _ => return bad(format!("unknown option {option:?}")),
        }
    }
    Some(Ok((path, cache_mib)))
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

// Each concern's types, `Store` methods and SQL for both dialects live in
// a folder of their own; the dialects' engines (connections, group commit,
// migrations, shared statements) stay in `sqlite.rs` and `postgres.rs`.
mod deadlines;
pub mod evidence;
mod ops;
mod outbox;
mod payouts;

pub use deadlines::*;
pub use ops::*;
pub use outbox::*;
pub use payouts::*;

impl Store {
    /// Opens a store by URL and applies its migrations. A relative SQLite
    /// path is taken relative to `base`.
    pub async fn open(url: &str, base: &std::path::Path) -> Result<Store, StoreError> {
        if let Some(parsed) = sqlite_url(url) {
            let (path, cache_mib) = parsed?;
            let p = std::path::Path::new(path);
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            };
            Ok(Store::Sqlite(SqliteStore::open(&p, cache_mib).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgStore::open(url).await?))
        } else {
            Err(StoreError::Url(url.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_stable_and_distinct() {
        let a = idempotency_key("national_cert.events", "EV-1", "card_load");
        assert_eq!(
            a,
            idempotency_key("national_cert.events", "EV-1", "card_load")
        );
        assert_eq!(a.len(), 32);
        assert_ne!(
            a,
            idempotency_key("national_cert.events", "EV-1", "subsidy")
        );
        assert_ne!(
            a,
            idempotency_key("national_cert.events", "EV-2", "card_load")
        );
        // Length-prefixed parts: no ambiguity from concatenation.
        assert_ne!(
            idempotency_key("a", "bc", "d"),
            idempotency_key("ab", "c", "d")
        );
    }

    #[tokio::test]
    async fn a_sqlite_url_takes_the_page_cache_and_refuses_other_options() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("sqlite://a.db?cache_mib=8", dir.path())
            .await
            .unwrap();
        assert!(matches!(store, Store::Sqlite(_)));
        for (url, says) in [
            ("sqlite://b.db?cache_mb=8", "unknown option \"cache_mb=8\""),
            ("sqlite://b.db?cache_mib=0", "cache_mib=0 is not a number"),
            (
                "sqlite://b.db?cache_mib=lots",
                "cache_mib=lots is not a number",
            ),
        ] {
            let e = Store::open(url, dir.path()).await.err().unwrap();
            assert!(e.to_string().contains(says), "{url}: {e}");
        }
        assert!(!dir.path().join("b.db").exists());
    }
}
