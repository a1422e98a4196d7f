//! The outbox: source records into the inbox and their messages into
//! the queue in one transaction, claims in key order, settles, leases.

mod postgres;
mod sqlite;

use super::*;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// One source record to store, with what the mappings made of it.
#[derive(Clone, Debug)]
pub struct Ingest {
    /// `connector.operation` the record came from.
    pub source: String,
    /// The record's id at the source (dedupe key).
    pub source_id: String,
    /// The record as received.
    pub record: Vec<u8>,
    /// Target messages the mappings produced.
    pub messages: Vec<NewMessage>,
    /// Mappings that could not map the record.
    pub quarantine: Vec<Quarantined>,
    /// The source's cursor after this record, stored in the same transaction.
    pub cursor: Option<String>,
}

/// A mapped record for one target.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// The mapping that made it.
    pub mapping: String,
    /// `connector.operation` it goes to.
    pub target: String,
    /// Ordering key (the person).
    pub key: String,
    /// The encoded target record.
    pub payload: Vec<u8>,
    /// Its idempotency key when its feed names the effect
    /// ([`effect_key`]); otherwise the store makes it from the source
    /// record and the feed ([`idempotency_key`]).
    pub idem_key: Option<String>,
}

impl NewMessage {
    /// The message's idempotency key, given or made.
    pub fn idempotency_key_for(&self, source: &str, source_id: &str) -> String {
        self.idem_key
            .clone()
            .unwrap_or_else(|| idempotency_key(source, source_id, &self.mapping))
    }
}

/// The idempotency key of a message whose feed names its effect: the same
/// for every message with that effect on that target, whichever feed and
/// record made it, so the target applies the effect once.
pub fn effect_key(target: &str, effect: &str) -> String {
    let mut h = Sha256::new();
    for part in ["effect", target, effect] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A mapping's failure on a record.
#[derive(Clone, Debug)]
pub struct Quarantined {
    /// The mapping.
    pub mapping: String,
    /// Field, `when`, `key` or input path.
    pub part: String,
    /// The reason.
    pub reason: String,
}

/// What [`Store::ingest`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Source records stored.
    pub stored: usize,
    /// Source records already stored earlier (nothing new was made of them).
    pub duplicates: usize,
    /// Messages created.
    pub messages: usize,
    /// Quarantine rows created.
    pub quarantined: usize,
}

/// A message claimed for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// Message id.
    pub id: i64,
    /// Target.
    pub target: String,
    /// Ordering key.
    pub key: String,
    /// Stable idempotency key, the same at every attempt.
    pub idem_key: String,
    /// Encoded record.
    pub payload: Vec<u8>,
    /// Attempts made before this one.
    pub attempts: i64,
    /// Lease token: settling needs it.
    pub lease: i64,
}

/// A claim's hold on a key: what [`Store::release`] gives back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The target.
    pub target: String,
    /// The key.
    pub key: String,
    /// The lease token from the claim.
    pub lease: i64,
}

impl From<&Claimed> for Lease {
    fn from(c: &Claimed) -> Lease {
        Lease {
            target: c.target.clone(),
            key: c.key.clone(),
            lease: c.lease,
        }
    }
}

/// One delivery attempt, as recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attempt {
    /// When it started, ms since the epoch.
    pub at: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// HTTP status or similar, if any.
    pub status_code: Option<i64>,
    /// Class of error (`timeout`, `connect`, `http_503`, …), if it failed.
    pub error_class: Option<String>,
    /// A short excerpt of the response or error (never personal data).
    pub excerpt: Option<String>,
    /// SHA-256 (hex) of the target's answer, for the exchange log (not kept
    /// with the attempt).
    pub response_sha256: Option<String>,
}

/// How a claimed message ended its attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered: the key's next message may go.
    Delivered,
    /// Failed transiently: try again at this time (ms since the epoch).
    Retry {
        /// When.
        at: i64,
    },
    /// Failed for good: the key is parked until an operator acts.
    Dead {
        /// Why, in words an operator understands.
        reason: String,
    },
}

/// The result of an attempt for one claimed message.
#[derive(Clone, Debug)]
pub struct Settle {
    /// The claimed message.
    pub id: i64,
    /// Its target.
    pub target: String,
    /// Its key.
    pub key: String,
    /// The lease token from the claim.
    pub lease: i64,
    /// What happened.
    pub outcome: Outcome,
    /// The attempt, recorded append-only.
    pub attempt: Attempt,
}

/// The stable idempotency key of the message a mapping makes of a source
/// record: the same however often the record is read, replayed or retried.
pub fn idempotency_key(source: &str, source_id: &str, mapping: &str) -> String {
    let mut h = Sha256::new();
    for part in [source, source_id, mapping] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Stores source records with their messages, quarantine rows and cursor,
    /// all in one transaction. A record already stored (same source and
    /// source id) makes nothing new.
    pub async fn ingest(&self, batch: Vec<Ingest>) -> Result<IngestOutcome, StoreError> {
        both!(self, s => s.ingest(batch).await)
    }

    /// Claims up to `limit` due messages of a target, at most one per key
    /// (each key's oldest pending message), leased for `lease`.
    pub async fn claim(
        &self,
        target: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        both!(self, s => s.claim(target, limit, lease).await)
    }

    /// Records the outcome of attempts. A settle whose lease is stale (the
    /// message was claimed again after its lease ran out) is ignored; the
    /// number of settles applied is returned.
    pub async fn settle(&self, settles: Vec<Settle>) -> Result<usize, StoreError> {
        both!(self, s => s.settle(settles).await)
    }

    /// PostgreSQL: the plans of the delivery path's statements (claim,
    /// insert messages, lock heads, advance) for one target and key, for
    /// tests that hold them to index probes. SQLite: none (its statements
    /// are held to one plan each by a unit test of its own).
    #[doc(hidden)]
    pub async fn delivery_plans(
        &self,
        target: &str,
        key: &str,
    ) -> Result<Vec<(&'static str, String)>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(s) => s.delivery_plans(target, key).await,
        }
    }

    /// Gives claimed messages back without an attempt: their keys are due
    /// again at once.
    pub async fn release(&self, claims: Vec<Lease>) -> Result<(), StoreError> {
        both!(self, s => s.release(claims).await)
    }

    /// A source's cursor.
    pub async fn cursor(&self, source: &str) -> Result<Option<String>, StoreError> {
        both!(self, s => s.cursor(source).await)
    }

    /// Moves a source's cursor without records: a page that held none of
    /// the source's records (a system that serves a filtered view of its
    /// feed) is not asked again.
    pub async fn set_cursor(&self, source: &str, cursor: &str) -> Result<(), StoreError> {
        both!(self, s => s.set_cursor(source, cursor).await)
    }

    /// Pending messages of a target (read from the pending index alone, so
    /// cheap however many messages were delivered).
    pub async fn pending(&self, target: &str) -> Result<i64, StoreError> {
        both!(self, s => s.pending(target).await)
    }

    /// Number of inbox rows.
    pub async fn inbox_len(&self) -> Result<i64, StoreError> {
        both!(self, s => s.inbox_len().await)
    }

    /// Records the nonces of signed requests, in one transaction shared by
    /// every hub on the store, and says of each whether it is new: `false`
    /// for a nonce seen since `now - 2 × window` (by any hub, before any
    /// restart), or earlier in this list. Older nonces are forgotten (the
    /// timestamp check refuses their requests).
    pub async fn first_use_nonces(
        &self,
        uses: Vec<NonceUse>,
        now: i64,
        window_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        if uses.is_empty() {
            return Ok(Vec::new());
        }
        both!(self, s => s.first_use_nonces(uses, now, window_ms).await)
    }

    /// Forgets nonces recorded by [`Store::first_use_nonces`] whose requests
    /// were then not stored (the store failed): the sender may send the
    /// same request again.
    pub async fn forget_nonces(&self, uses: Vec<NonceUse>, now: i64) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        both!(self, s => s.forget_nonces(uses, now).await)
    }
}

/// A signed request's nonce, per connector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NonceUse {
    /// The connector that verified the request.
    pub connector: String,
    /// The nonce it carried.
    pub nonce: String,
}

/// The positions of `uses` that repeat an earlier one in the same list.
pub(crate) fn repeated_in_list(uses: &[NonceUse]) -> Vec<bool> {
    let mut seen = std::collections::HashSet::with_capacity(uses.len());
    uses.iter().map(|u| !seen.insert(u)).collect()
}

/// The part of a store the dispatcher uses: claim due messages, settle
/// them. [`Store`] has it for both dialects; a unit test can give the
/// dispatcher an in-memory queue instead.
pub trait Queue: Send + Sync + 'static {
    /// See [`Store::claim`].
    fn claim<'a>(
        &'a self,
        target: &'a str,
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>>;

    /// See [`Store::settle`].
    fn settle(&self, settles: Vec<Settle>) -> BoxFuture<'_, Result<usize, StoreError>>;
}

impl Queue for Store {
    fn claim<'a>(
        &'a self,
        target: &'a str,
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
        Box::pin(Store::claim(self, target, limit, lease))
    }

    fn settle(&self, settles: Vec<Settle>) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(Store::settle(self, settles))
    }
}

/// The outcome as stored in `attempts.outcome`.
pub(crate) fn outcome_code(o: &Outcome) -> i64 {
    match o {
        Outcome::Delivered => AttemptOutcome::Delivered,
        Outcome::Retry { .. } => AttemptOutcome::Retried,
        Outcome::Dead { .. } => AttemptOutcome::Dead,
    }
    .code()
}

/// The text kept as a message's last error.
pub(crate) fn error_text(s: &Settle) -> Option<String> {
    match &s.outcome {
        Outcome::Delivered => None,
        Outcome::Dead { reason } => Some(reason.clone()),
        Outcome::Retry { .. } => Some(
            [
                s.attempt.error_class.as_deref(),
                s.attempt.excerpt.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": "),
        ),
    }
}
