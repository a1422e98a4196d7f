//! Operations: messages found by filter, attempts, replay and skip,
//! pauses, bulk-replay tasks, the quarantine, API tokens and the audit.

mod postgres;
mod sqlite;

use super::*;

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
    /// Its state.
    pub status: Status,
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
    /// In this state (stored as its code).
    pub status: Option<Status>,
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
            w.push(format!("m.status = {}", s.code()));
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
    /// When it expires (or expired).
    pub expires_at: Option<i64>,
}

/// Why a feed could not map a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineReason {
    /// The feed.
    pub mapping: String,
    /// Where it failed: a field, `when`, `key` or an input path.
    pub part: String,
    /// Why.
    pub reason: String,
}

/// The source record a message was made from, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    /// `connector.operation` it came from.
    pub source: String,
    /// The record as received.
    pub record: Vec<u8>,
}

/// What rotating a token does, the same on both stores.
pub(crate) struct Rotation {
    /// The old token's new name, `NAME@<ms>`.
    pub retired: String,
    /// When the old token stops: the overlap's end, or its own expiry if
    /// sooner.
    pub until: i64,
    /// The new token's expiry: as given, or else the old one's lifetime
    /// again from now (none if the old one had none).
    pub expires_at: Option<i64>,
    /// The audit row's subject.
    pub subject: String,
}

impl Rotation {
    /// The rotation of the live token `name` (`role`, made at `made`,
    /// expiring at `old_expiry`) at `now`.
    pub(crate) fn new(
        name: &str,
        role: &str,
        made: i64,
        old_expiry: Option<i64>,
        overlap_until: i64,
        given: Option<i64>,
        now: i64,
    ) -> Rotation {
        let retired = format!("{name}@{now}");
        let until = old_expiry.map_or(overlap_until, |e| e.min(overlap_until));
        Rotation {
            subject: format!("token {name} ({role}); the old one is {retired} until {until}"),
            retired,
            until,
            expires_at: given.or(old_expiry.map(|e| now + (e - made))),
        }
    }
}

/// Who holds a live token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenHolder {
    /// The token's name (the actor of its actions).
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
}

/// Messages of a target in one state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateCount {
    /// `connector.operation`.
    pub target: String,
    /// The state.
    pub status: Status,
    /// How many messages.
    pub messages: i64,
}

/// Failed attempts of a target that were tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryCount {
    /// `connector.operation`.
    pub target: String,
    /// How many attempts.
    pub retried: i64,
}

/// Quarantine rows of a source and feed, resolved ones included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineCount {
    /// `connector.operation` of the records.
    pub source: String,
    /// The feed that could not map them.
    pub mapping: String,
    /// How many rows.
    pub records: i64,
}

/// What [`Store::counts`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Per target and state.
    pub messages: Vec<StateCount>,
    /// Per target.
    pub retries: Vec<RetryCount>,
    /// Per source and feed.
    pub quarantined: Vec<QuarantineCount>,
}

impl Counts {
    /// Messages of a target in a state.
    pub fn messages(&self, target: &str, status: Status) -> i64 {
        self.messages
            .iter()
            .filter(|c| c.target == target && c.status == status)
            .map(|c| c.messages)
            .sum()
    }

    /// Retried attempts of a target.
    pub fn retries(&self, target: &str) -> i64 {
        self.retries
            .iter()
            .filter(|c| c.target == target)
            .map(|c| c.retried)
            .sum()
    }

    /// Quarantine rows of a mapping.
    pub fn quarantined(&self, mapping: &str) -> i64 {
        self.quarantined
            .iter()
            .filter(|c| c.mapping == mapping)
            .map(|c| c.records)
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

impl Store {
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
    pub async fn source_of(&self, id: i64) -> Result<Option<SourceRecord>, StoreError> {
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

    /// Stores a new API token by its SHA-256 (`hash`), audited; it lets no
    /// one in after `expires_at` (ms since the epoch), if given.
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        hash: &str,
        expires_at: Option<i64>,
        actor: &str,
    ) -> Result<(), StoreError> {
        both!(self, s => s.create_token(name, role, hash, expires_at, actor).await)
    }

    /// Rotates the live token `name` without a gap: the old one is renamed
    /// `NAME@<ms>` and expires at `overlap_until` (or earlier, if it expired
    /// sooner); a new one (`hash`) takes the name and role, expiring at
    /// `expires_at` (none given: the old one's lifetime again, from now). Audited. The old token's new name, or `None` if there
    /// is no live token of that name.
    pub async fn rotate_token(
        &self,
        name: &str,
        hash: &str,
        overlap_until: i64,
        expires_at: Option<i64>,
        actor: &str,
        reason: &str,
    ) -> Result<Option<String>, StoreError> {
        both!(self, s => s.rotate_token(name, hash, overlap_until, expires_at, actor, reason).await)
    }

    /// The live token with this SHA-256: its name and role.
    pub async fn token(&self, hash: &str) -> Result<Option<TokenHolder>, StoreError> {
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
    pub async fn quarantine_counts(&self) -> Result<Vec<QuarantineCount>, StoreError> {
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
        status: Status,
        limit: usize,
    ) -> Result<Vec<MessageRow>, StoreError> {
        both!(self, s => s.messages(target, status, limit).await)
    }

    /// Why each record of a source was quarantined, oldest first.
    pub async fn quarantine(&self, source: &str) -> Result<Vec<QuarantineReason>, StoreError> {
        both!(self, s => s.quarantine(source).await)
    }

    /// Audit rows, oldest first.
    pub async fn audit(&self) -> Result<Vec<AuditRow>, StoreError> {
        both!(self, s => s.audit().await)
    }

    /// Messages per target and state, failed attempts retried per target,
    /// and quarantine rows per source and mapping.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        both!(self, s => s.counts().await)
    }
}

/// A state's name, for messages.
pub fn status_name(s: Status) -> &'static str {
    s.name()
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
        Some((t, k, s)) if s == Status::Dead.code() => Ok((t, k)),
        Some((_, _, s)) => Err(StoreError::Refused(format!(
            "message {id} is {}: only dead messages are {verb}",
            Status::from_code(s).map_or("in an unknown state", Status::name)
        ))),
    }
}
