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

mod postgres;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Message states.
pub mod status {
    /// Waiting for delivery (or being delivered).
    pub const PENDING: i64 = 0;
    /// Delivered.
    pub const DELIVERED: i64 = 1;
    /// Failed permanently or ran out of retries.
    pub const DEAD: i64 = 2;
    /// Skipped by an operator.
    pub const SKIPPED: i64 = 3;
}

/// A message as operations see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRow {
    /// Id.
    pub id: i64,
    /// Target.
    pub target: String,
    /// Key.
    pub key: String,
    /// Mapping.
    pub mapping: String,
    /// Idempotency key.
    pub idem_key: String,
    /// One of [`status`].
    pub status: i64,
    /// Attempts made.
    pub attempts: i64,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// Encoded record.
    pub payload: Vec<u8>,
    /// When it was made, ms since the epoch.
    pub created_at: i64,
    /// When its state last changed, ms since the epoch.
    pub updated_at: i64,
}

/// Which messages [`Store::find_messages`] returns: every field set narrows
/// the search; pages go by id (`after`: the last id of the previous page).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessageFilter {
    /// `connector.operation`.
    pub target: Option<String>,
    /// One of [`status`].
    pub status: Option<i64>,
    /// The ordering key (the person).
    pub key: Option<String>,
    /// An attempt failed with this class (`http_422`, `timeout`, …).
    pub error_class: Option<String>,
    /// Last changed at or after this time, ms since the epoch.
    pub since: Option<i64>,
    /// Last changed before this time, ms since the epoch.
    pub until: Option<i64>,
    /// Text in the last error (the reason), case as written.
    pub text: Option<String>,
    /// Ids above this one.
    pub after: Option<i64>,
}

/// A bound value of a [`MessageFilter`] query.
#[derive(Clone, Debug)]
pub enum Param {
    /// A text value.
    Text(String),
    /// An integer value.
    Int(i64),
}

impl MessageFilter {
    /// The `WHERE` clause (over `messages m`) and its values, with `ph(n)`
    /// the placeholder of the n-th value (from 1).
    pub fn sql(&self, ph: impl Fn(usize) -> String) -> (String, Vec<Param>) {
        let mut w = Vec::new();
        let mut p = Vec::new();
        let mut add = |cond: &str, v: Param| {
            p.push(v);
            w.push(cond.replace('?', &ph(p.len())));
        };
        if let Some(t) = &self.target {
            add("m.target = ?", Param::Text(t.clone()));
        }
        if let Some(k) = &self.key {
            add("m.key = ?", Param::Text(k.clone()));
        }
        if let Some(c) = &self.error_class {
            add(
                "EXISTS (SELECT 1 FROM attempts a WHERE a.message_id = m.id AND a.error_class = ?)",
                Param::Text(c.clone()),
            );
        }
        if let Some(t) = self.since {
            add("m.updated_at >= ?", Param::Int(t));
        }
        if let Some(t) = self.until {
            add("m.updated_at < ?", Param::Int(t));
        }
        if let Some(t) = &self.text {
            let escaped = t
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            add(
                "m.last_error LIKE ? ESCAPE '\\'",
                Param::Text(format!("%{escaped}%")),
            );
        }
        if let Some(a) = self.after {
            add("m.id > ?", Param::Int(a));
        }
        if let Some(s) = self.status {
            // A literal, so that SQLite's planner sees which partial index
            // holds the status (its plans do not look at bound values).
            w.push(format!("m.status = {s}"));
        }
        let clause = if w.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", w.join(" AND "))
        };
        (clause, p)
    }
}

/// A target as operations see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetRow {
    /// `connector.operation`.
    pub target: String,
    /// Messages waiting (or being delivered).
    pub pending: i64,
    /// Messages delivered.
    pub delivered: i64,
    /// Dead letters.
    pub dead: i64,
    /// Skipped by an operator.
    pub skipped: i64,
    /// When the oldest pending message was made, ms since the epoch.
    pub oldest_pending_at: Option<i64>,
    /// Paused by an operator.
    pub paused: bool,
}

/// A bulk replay by filter, as operations see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TaskRow {
    /// Id.
    pub id: i64,
    /// `bulk_replay`.
    pub kind: String,
    /// Which dead messages it replays.
    pub filter: MessageFilter,
    /// At most this many.
    pub cap: i64,
    /// `running`, `paused`, `cancelled` or `done`.
    pub status: String,
    /// Dead messages matching when it was made (at most `cap`).
    pub total: i64,
    /// Replayed so far.
    pub done: i64,
    /// Who made it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When it was made, ms since the epoch.
    pub created_at: i64,
    /// When it last moved.
    pub updated_at: i64,
}

/// A source record a feed could not map, waiting for a fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineRow {
    /// Its id.
    pub id: i64,
    /// `connector.operation` of the record.
    pub source: String,
    /// The record's id at the source.
    pub source_id: String,
    /// The feed that could not map it.
    pub mapping: String,
    /// Where it failed (field or stage).
    pub part: String,
    /// Why.
    pub reason: String,
    /// The record as stored.
    pub record: Vec<u8>,
}

/// An API token as stored (its hash only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    /// Its name (who or what holds it).
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// When it was made, ms since the epoch.
    pub created_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// A payment instruction in the payout register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRow {
    /// Subsidy type + holder + period: unique.
    pub payment_id: String,
    /// `YYYY-MM`.
    pub period: String,
    /// The creditor's bank (CNAPS code): batches are per bank.
    pub bank_code: String,
    /// Amount, fen.
    pub amount_fen: i64,
    /// The `PaymentInstruction` as JSON.
    pub record: Vec<u8>,
}

/// A payment batch: one bank file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRow {
    /// `TB-<period>-<bank>-<seq>`: the file's `MsgId`.
    pub batch_id: String,
    /// `YYYY-MM`.
    pub period: String,
    /// The bank.
    pub bank_code: String,
    /// 1, 2, … per period and bank.
    pub seq: i64,
    /// The file's `CreDtTm`, fixed when the batch was made.
    pub created: String,
    /// Payments in it.
    pub count: i64,
    /// Their sum, fen.
    pub total_fen: i64,
}

/// The id of a batch.
pub fn batch_id(period: &str, bank_code: &str, seq: i64) -> String {
    format!("TB-{period}-{bank_code}-{seq:04}")
}

/// Groups unbatched payments into batches: per bank (in bank order), in
/// payment id order, at most `max` each, numbered after `next_seq(bank)`.
pub(crate) fn plan_batches(
    period: &str,
    created: &str,
    max: usize,
    unbatched: &[(String, String, i64)],
    mut next_seq: impl FnMut(&str) -> Result<i64, StoreError>,
) -> Result<Vec<(BatchRow, Vec<String>)>, StoreError> {
    let mut out: Vec<(BatchRow, Vec<String>)> = Vec::new();
    let max = max.max(1);
    let mut i = 0;
    while i < unbatched.len() {
        let bank = unbatched[i].1.clone();
        let mut seq = next_seq(&bank)?;
        while i < unbatched.len() && unbatched[i].1 == bank {
            let end = (i..unbatched.len())
                .take(max)
                .take_while(|&j| unbatched[j].1 == bank)
                .last()
                .unwrap_or(i)
                + 1;
            let chunk = &unbatched[i..end];
            out.push((
                BatchRow {
                    batch_id: batch_id(period, &bank, seq),
                    period: period.to_string(),
                    bank_code: bank.clone(),
                    seq,
                    created: created.to_string(),
                    count: chunk.len() as i64,
                    total_fen: chunk.iter().map(|c| c.2).sum(),
                },
                chunk.iter().map(|c| c.0.clone()).collect(),
            ));
            seq += 1;
            i = end;
        }
    }
    Ok(out)
}

/// An alarm operations must see: a bank result that does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmRow {
    /// When it was raised, ms since the epoch.
    pub at: i64,
    /// The batch (the `OrgnlMsgId` of the report).
    pub batch_id: String,
    /// `unknown_batch`, `unknown_payment`, `totals_disagree`, `file_refused`.
    pub kind: String,
    /// What exactly.
    pub detail: String,
}

/// Why a re-issue is refused, in words, or None if it may go ahead.
pub(crate) fn reissue_refusal(payment_id: &str, result: Option<&str>) -> Option<String> {
    match result {
        Some("REJECTED") => None,
        Some("ACCEPTED") => Some(format!(
            "payment {payment_id} was accepted by the bank: an accepted payment is never paid again"
        )),
        Some(other) => Some(format!(
            "payment {payment_id} is {}: only payments the bank rejected are re-issued",
            other.to_lowercase()
        )),
        None => Some(format!(
            "payment {payment_id} has no bank result yet: only payments the bank rejected are re-issued"
        )),
    }
}

/// Per batch and result: (batch id, result or None while waiting, payments, fen).
pub type ResultCounts = Vec<(String, Option<String>, i64, i64)>;

/// What [`Store::counts`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// (target, state, messages).
    pub messages: Vec<(String, i64, i64)>,
    /// (target, attempts that failed and were retried).
    pub retries: Vec<(String, i64)>,
    /// (source, mapping, quarantine rows).
    pub quarantined: Vec<(String, String, i64)>,
}

impl Counts {
    /// Messages of a target in a state.
    pub fn messages(&self, target: &str, status: i64) -> i64 {
        self.messages
            .iter()
            .filter(|(t, s, _)| t == target && *s == status)
            .map(|r| r.2)
            .sum()
    }

    /// Retried attempts of a target.
    pub fn retries(&self, target: &str) -> i64 {
        self.retries
            .iter()
            .filter(|(t, _)| t == target)
            .map(|r| r.1)
            .sum()
    }

    /// Quarantine rows of a mapping.
    pub fn quarantined(&self, mapping: &str) -> i64 {
        self.quarantined
            .iter()
            .filter(|(_, m, _)| m == mapping)
            .map(|r| r.2)
            .sum()
    }
}

/// An audit row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// When.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What (`replay`, `skip`, `pause`, `resume`).
    pub action: String,
    /// On what (`message 42`, `target sscard.load_certificate`).
    pub subject: String,
    /// Why.
    pub reason: String,
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

    /// Gives claimed messages back without an attempt (graceful shutdown).
    pub async fn release(&self, claims: Vec<(String, String, i64)>) -> Result<(), StoreError> {
        both!(self, s => s.release(claims).await)
    }

    /// Puts a dead message back at the head of its key, as is or with a new
    /// payload (re-mapped), and writes an audit row.
    pub async fn replay(
        &self,
        id: i64,
        payload: Option<Vec<u8>>,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        both!(self, s => s.replay(id, payload, actor, reason).await)
    }

    /// The source and stored source record a message was made from.
    pub async fn source_of(&self, id: i64) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        both!(self, s => s.source_of(id).await)
    }

    /// Writes an audit row for an operator's action that changes no
    /// message by itself (a batch file sent again, say).
    pub async fn note(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        both!(self, s => s.note(actor, action, subject, reason).await)
    }

    /// Messages matching `filter`, by id, at most `limit`.
    pub async fn find_messages(
        &self,
        filter: &MessageFilter,
        limit: usize,
    ) -> Result<Vec<MessageRow>, StoreError> {
        both!(self, s => s.find_messages(filter, limit).await)
    }

    /// Every target with messages or a pause: counts per state, the age of
    /// its oldest pending message, whether it is paused.
    pub async fn targets(&self) -> Result<Vec<TargetRow>, StoreError> {
        both!(self, s => s.targets().await)
    }

    /// Stores a new API token by its SHA-256 (`hash`), audited.
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        hash: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        both!(self, s => s.create_token(name, role, hash, actor).await)
    }

    /// The live token with this SHA-256: its name and role.
    pub async fn token(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        both!(self, s => s.token(hash).await)
    }

    /// Every token, live or revoked (no hashes).
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        both!(self, s => s.tokens().await)
    }

    /// Revokes a token by name, audited; false if there is no live one.
    pub async fn revoke_token(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        both!(self, s => s.revoke_token(name, actor, reason).await)
    }

    /// Makes a bulk replay of the dead messages matching `filter` (its
    /// status is forced to dead), at most `cap`; one audit row.
    pub async fn create_task(
        &self,
        filter: &MessageFilter,
        cap: i64,
        actor: &str,
        reason: &str,
    ) -> Result<TaskRow, StoreError> {
        let mut f = filter.clone();
        f.status = Some(status::DEAD);
        f.after = None;
        both!(self, s => s.create_task(&f, cap, actor, reason).await)
    }

    /// The ids of the running tasks (what the hub's task runner polls).
    pub async fn running_tasks(&self) -> Result<Vec<i64>, StoreError> {
        both!(self, s => s.running_tasks().await)
    }

    /// Quarantine rows per (source, feed), resolved ones included.
    pub async fn quarantine_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        both!(self, s => s.quarantine_counts().await)
    }

    /// One task.
    pub async fn task(&self, id: i64) -> Result<Option<TaskRow>, StoreError> {
        both!(self, s => s.task(id).await)
    }

    /// Every task, newest first.
    pub async fn tasks(&self) -> Result<Vec<TaskRow>, StoreError> {
        both!(self, s => s.tasks().await)
    }

    /// Moves a task from one of `from` to `to` (pause, resume, cancel);
    /// audited. False when it is in none of `from`.
    pub async fn set_task_status(
        &self,
        id: i64,
        from: &[&str],
        to: &str,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        both!(self, s => s.set_task_status(id, from, to, actor, reason).await)
    }

    /// Replays the next `n` dead messages of a running task (each back at
    /// the head of its key) and records its progress, in one transaction;
    /// a task that runs out of matches or reaches its cap is done. Several
    /// hubs may call it at once: the task row is locked.
    pub async fn run_task(&self, id: i64, n: usize) -> Result<Option<TaskRow>, StoreError> {
        both!(self, s => s.run_task(id, n).await)
    }

    /// Unresolved quarantine rows, oldest first, of a source and feed if given.
    pub async fn quarantined(
        &self,
        source: Option<&str>,
        mapping: Option<&str>,
        limit: usize,
    ) -> Result<Vec<QuarantineRow>, StoreError> {
        both!(self, s => s.quarantined(source, mapping, limit).await)
    }

    /// Resolves quarantine rows after a mapping fix: each with the message
    /// its feed now makes (queued in order behind its key's messages), or
    /// none (the feed now filters it out). Rows already resolved are left
    /// alone. One audit row; the number resolved is returned.
    pub async fn resolve_quarantine(
        &self,
        items: Vec<(i64, Option<NewMessage>)>,
        actor: &str,
        reason: &str,
    ) -> Result<usize, StoreError> {
        both!(self, s => s.resolve_quarantine(items, actor, reason).await)
    }

    /// Skips a dead message with a reason: its key moves on. Audited.
    pub async fn skip(&self, id: i64, actor: &str, reason: &str) -> Result<(), StoreError> {
        both!(self, s => s.skip(id, actor, reason).await)
    }

    /// Pauses or resumes a target. Audited.
    pub async fn set_paused(
        &self,
        target: &str,
        paused: bool,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        both!(self, s => s.set_paused(target, paused, actor, reason).await)
    }

    /// Whether a target is paused.
    pub async fn is_paused(&self, target: &str) -> Result<bool, StoreError> {
        both!(self, s => s.is_paused(target).await)
    }

    /// A source's cursor.
    pub async fn cursor(&self, source: &str) -> Result<Option<String>, StoreError> {
        both!(self, s => s.cursor(source).await)
    }

    /// One message.
    pub async fn message(&self, id: i64) -> Result<Option<MessageRow>, StoreError> {
        both!(self, s => s.message(id).await)
    }

    /// A message's attempts, oldest first.
    pub async fn attempts(&self, id: i64) -> Result<Vec<Attempt>, StoreError> {
        both!(self, s => s.attempts(id).await)
    }

    /// Messages of a target in a state, by id.
    pub async fn messages(
        &self,
        target: &str,
        status: i64,
        limit: usize,
    ) -> Result<Vec<MessageRow>, StoreError> {
        both!(self, s => s.messages(target, status, limit).await)
    }

    /// Quarantine rows of a source: (mapping, part, reason).
    pub async fn quarantine(
        &self,
        source: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        both!(self, s => s.quarantine(source).await)
    }

    /// Audit rows, oldest first.
    pub async fn audit(&self) -> Result<Vec<AuditRow>, StoreError> {
        both!(self, s => s.audit().await)
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

    /// Records payment instructions in the payout register; one already
    /// there (same payment id) is left as it is. Returns how many are new.
    pub async fn record_payments(&self, rows: Vec<PaymentRow>) -> Result<usize, StoreError> {
        both!(self, s => s.record_payments(rows).await)
    }

    /// Puts every payment of `period` that is in no live batch into new
    /// batches (per bank, at most `max` each, stamped `created`), in one
    /// transaction, and returns them. A payment never gets into two live
    /// batches: a unique index refuses it, whoever builds at the same time.
    pub async fn build_batches(
        &self,
        period: &str,
        max: usize,
        created: &str,
    ) -> Result<Vec<BatchRow>, StoreError> {
        both!(self, s => s.build_batches(period, max, created).await)
    }

    /// The live batches of a period, by bank and number.
    pub async fn batches(&self, period: &str) -> Result<Vec<BatchRow>, StoreError> {
        both!(self, s => s.batches(period).await)
    }

    /// A batch's payments, in file order, all at once (a file is rendered
    /// and a result reconciled with [`Store::each_batch_payment`]).
    pub async fn batch_payments(&self, batch_id: &str) -> Result<Vec<PaymentRow>, StoreError> {
        let mut all = Vec::new();
        self.each_batch_payment(batch_id, |p| {
            all.push(p);
            Ok::<_, StoreError>(())
        })
        .await?;
        Ok(all)
    }

    /// Calls `f` with each payment of a batch in file order, read a page of
    /// 1,000 at a time, so that a batch of any size is never held whole;
    /// stops at the first error, the store's or `f`'s.
    pub async fn each_batch_payment<E: From<StoreError>>(
        &self,
        batch_id: &str,
        mut f: impl FnMut(PaymentRow) -> Result<(), E>,
    ) -> Result<(), E> {
        const PAGE: usize = 1000;
        let mut after = -1;
        loop {
            let page = self.batch_payments_page(batch_id, after, PAGE).await?;
            let full = page.len() == PAGE;
            for (position, p) in page {
                after = position;
                f(p)?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// At most `limit` payments of a batch after position `after` (-1: from
    /// the first), in file order, each with its position.
    pub async fn batch_payments_page(
        &self,
        batch_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, PaymentRow)>, StoreError> {
        both!(self, s => s.batch_payments_page(batch_id, after, limit).await)
    }

    /// Re-issues a rejected payment (an operator action, audited): it
    /// leaves its batch (the membership is kept, no longer live), takes the
    /// corrected instruction if given (`record`, and its bank), and goes into
    /// the next batch built. Refused for a payment that was accepted or has
    /// no result yet: an accepted payment is never paid again.
    pub async fn reissue(
        &self,
        payment_id: &str,
        corrected: Option<(Vec<u8>, String)>,
        actor: &str,
        reason: &str,
    ) -> Result<String, StoreError> {
        both!(self, s => s.reissue(payment_id, corrected, actor, reason).await)
    }

    /// One payment of the register with its result: (row, result, reason code).
    pub async fn payment(
        &self,
        payment_id: &str,
    ) -> Result<Option<(PaymentRow, Option<String>, Option<String>)>, StoreError> {
        both!(self, s => s.payment(payment_id).await)
    }

    /// Records that a batch's file was written, with its SHA-256.
    pub async fn mark_written(&self, batch_id: &str, sha256: &str) -> Result<(), StoreError> {
        both!(self, s => s.mark_written(batch_id, sha256).await)
    }

    /// The SHA-256 of a batch's file, if it was written.
    pub async fn written(&self, batch_id: &str) -> Result<Option<String>, StoreError> {
        both!(self, s => s.written(batch_id).await)
    }

    /// One batch.
    pub async fn batch(&self, batch_id: &str) -> Result<Option<BatchRow>, StoreError> {
        both!(self, s => s.batch(batch_id).await)
    }

    /// Records bank results: (payment id, `ACCEPTED` | `REJECTED` | `PENDING`, reason code).
    pub async fn set_results(
        &self,
        results: Vec<(String, String, Option<String>)>,
    ) -> Result<(), StoreError> {
        both!(self, s => s.set_results(results).await)
    }

    /// Raises alarms (batch id, kind, detail); one already raised stays as it was.
    pub async fn raise_alarms(
        &self,
        alarms: Vec<(String, String, String)>,
    ) -> Result<(), StoreError> {
        both!(self, s => s.raise_alarms(alarms).await)
    }

    /// Every alarm, oldest first.
    pub async fn alarms(&self) -> Result<Vec<AlarmRow>, StoreError> {
        both!(self, s => s.alarms().await)
    }

    /// Results of the live batches of a period: per batch and result, the
    /// payments and their fen.
    pub async fn results(&self, period: &str) -> Result<ResultCounts, StoreError> {
        both!(self, s => s.results(period).await)
    }

    /// Messages per target and state, failed attempts retried per target,
    /// and quarantine rows per source and mapping.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        both!(self, s => s.counts().await)
    }
}

/// The outcome as stored in `attempts.outcome`.
pub(crate) fn outcome_code(o: &Outcome) -> i64 {
    match o {
        Outcome::Delivered => status::DELIVERED,
        Outcome::Retry { .. } => status::PENDING,
        Outcome::Dead { .. } => status::DEAD,
    }
}

/// A state's name, for messages.
pub fn status_name(s: i64) -> &'static str {
    match s {
        status::PENDING => "pending",
        status::DELIVERED => "delivered",
        status::DEAD => "dead",
        status::SKIPPED => "skipped",
        _ => "unknown",
    }
}

/// The target and key of a message that must be dead for an operator
/// action (`verb`: "replayed", "skipped"); refuses any other state.
pub(crate) fn require_dead(
    id: i64,
    row: Option<(String, String, i64)>,
    verb: &str,
) -> Result<(String, String), StoreError> {
    match row {
        None => Err(StoreError::Refused(format!("there is no message {id}"))),
        Some((t, k, status::DEAD)) => Ok((t, k)),
        Some((_, _, s)) => Err(StoreError::Refused(format!(
            "message {id} is {}: only dead messages are {verb}",
            status_name(s)
        ))),
    }
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
