//! Statements both dialects run as written but for their placeholders,
//! written once here in SQLite's `?N` form; [`Shared::pg`] gives
//! PostgreSQL's `$N` form (made once, on first use). Statements that really
//! differ (PostgreSQL's `UNNEST` batches, `FOR UPDATE SKIP LOCKED` claims and
//! `ANY($1)` lists; SQLite's one row at a time inside its group commit) stay
//! in each concern's `sqlite.rs` and `postgres.rs`.

use std::sync::LazyLock;

/// One statement, for both dialects.
pub(in crate::store) struct Shared {
    sqlite: &'static str,
    pg: LazyLock<String>,
}

impl Shared {
    /// As SQLite runs it (`?1`, `?2`, …).
    pub(in crate::store) fn sqlite(&self) -> &'static str {
        self.sqlite
    }

    /// As PostgreSQL runs it (`$1`, `$2`, …).
    pub(in crate::store) fn pg(&'static self) -> &'static str {
        self.pg.as_str()
    }
}

/// `?N` placeholders as `$N`, outside quoted text.
fn to_pg(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

/// The columns of a task, in the order both dialects' `task_row` reads.
pub(in crate::store) const TASK_SELECT: &str =
    "SELECT id, kind, filter, cap, status, total, done, actor, reason, created_at, updated_at FROM tasks";

/// The columns of a message, in the order both dialects' `message_row` reads.
pub(in crate::store) const MESSAGE_SELECT: &str =
    "SELECT id, target, key, mapping, idem_key, status, attempts, last_error, payload, created_at, updated_at FROM messages";

macro_rules! shared {
    ($($(#[$m:meta])* $name:ident = $sql:expr;)*) => {$(
        $(#[$m])*
        pub(in crate::store) static $name: Shared = Shared {
            sqlite: $sql,
            pg: LazyLock::new(|| to_pg($sql)),
        };
    )*
        /// Every shared statement, for the unit test.
        #[cfg(test)]
        static ALL: &[&Shared] = &[$(&$name),*];
    };
}

shared! {
    /// Ends an application's open stages at the start of the next one
    /// (later in time, or at the same instant and later in order).
    END_EARLIER_STAGES = "UPDATE case_stages SET done_ms = (
            SELECT MIN(l.entered_ms) FROM case_stages l
            WHERE l.application_id = case_stages.application_id
              AND (l.entered_ms > case_stages.entered_ms
                   OR (l.entered_ms = case_stages.entered_ms AND l.stage_rank > case_stages.stage_rank)))
        WHERE application_id = ?1 AND done_ms IS NULL";
    /// Per stage: open with a deadline, overdue at ?1, due by ?2.
    OPEN_COUNTS = "SELECT stage,
            COUNT(*),
            SUM(CASE WHEN due_ms < ?1 THEN 1 ELSE 0 END),
            SUM(CASE WHEN due_ms >= ?1 AND due_ms <= ?2 THEN 1 ELSE 0 END)
        FROM case_stages WHERE done_ms IS NULL AND due_ms IS NOT NULL GROUP BY stage";
    /// Per stage: ended after the deadline.
    LATE_COUNTS = "SELECT stage, COUNT(*) FROM case_stages WHERE done_ms > due_ms GROUP BY stage";
    /// Open stages due from ?1 to ?2, the earliest due first.
    OPEN_DUE_BETWEEN = "SELECT application_id, stage, stage_rank, holder_id, office_region, entered_ms, due_ms, done_ms
        FROM case_stages WHERE done_ms IS NULL AND due_ms IS NOT NULL AND due_ms >= ?1 AND due_ms <= ?2
        ORDER BY due_ms, application_id LIMIT ?3";
    /// Stages ended after their deadline, the latest first.
    LATE = "SELECT application_id, stage, stage_rank, holder_id, office_region, entered_ms, due_ms, done_ms
        FROM case_stages WHERE done_ms > due_ms ORDER BY done_ms DESC, application_id LIMIT ?1";
    /// One application's stages, in order.
    OF_APPLICATION = "SELECT application_id, stage, stage_rank, holder_id, office_region, entered_ms, due_ms, done_ms
        FROM case_stages WHERE application_id = ?1 ORDER BY entered_ms, stage_rank";
    /// A stage, unless it is there.
    INSERT_STAGE = "INSERT INTO case_stages (application_id, stage, stage_rank, holder_id, office_region, entered_ms, due_ms)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (application_id, stage) DO NOTHING";
    SET_CURSOR = "INSERT INTO cursors (source, cursor, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at";
    CURSOR = "SELECT cursor FROM cursors WHERE source = ?1";
    INBOX_LEN = "SELECT count(*) FROM inbox";
    MESSAGES_PER_STATE = "SELECT target, status, count(*) FROM messages GROUP BY target, status";
    PAUSED_TARGETS = "SELECT target FROM targets WHERE paused = 1";
    INSERT_TOKEN = "INSERT INTO tokens (name, role, hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)";
    LIVE_TOKEN = "SELECT name, role FROM tokens WHERE hash = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)";
    ALL_TOKENS = "SELECT name, role, created_at, revoked_at, expires_at FROM tokens ORDER BY id";
    LIVE_TOKEN_BY_NAME = "SELECT role, expires_at, created_at FROM tokens WHERE name = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)";
    RETIRE_TOKEN = "UPDATE tokens SET name = ?2, expires_at = ?3 WHERE name = ?1";
    REVOKE_TOKEN = "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL";
    RUNNING_TASKS = "SELECT id FROM tasks WHERE status = 'running' ORDER BY id";
    SET_TASK_STATUS = "UPDATE tasks SET status = ?2, updated_at = ?3 WHERE id = ?1";
    TASK_CURSOR = "SELECT cursor FROM tasks WHERE id = ?1";
    TASK_PROGRESS = "UPDATE tasks SET done = ?2, cursor = ?3, status = ?4, updated_at = ?5 WHERE id = ?1";
    RESOLVE_QUARANTINE = "UPDATE quarantine SET resolved_at = ?2 WHERE id = ?1";
    NEW_HEAD = "INSERT INTO heads (target, key, message_id, due_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (target, key) DO NOTHING";
    IS_PAUSED = "SELECT paused FROM targets WHERE target = ?1";
    SOURCE_OF = "SELECT i.source, i.record FROM messages m JOIN inbox i ON i.id = m.inbox_id WHERE m.id = ?1";
    ATTEMPTS = "SELECT at, duration_ms, status_code, error_class, excerpt FROM attempts WHERE message_id = ?1 ORDER BY id";
    QUARANTINE_OF_SOURCE = "SELECT q.mapping, q.part, q.reason FROM quarantine q JOIN inbox i ON i.id = q.inbox_id
                 WHERE i.source = ?1 ORDER BY q.id";
    AUDIT_ROWS = "SELECT at, actor, action, subject, reason FROM audit ORDER BY id";
    QUARANTINE_COUNTS = "SELECT i.source, q.mapping, count(*) FROM quarantine q JOIN inbox i ON i.id = q.inbox_id GROUP BY i.source, q.mapping";
    NEXT_BATCH_SEQ = "SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE period = ?1 AND bank_code = ?2";
    CLEAR_RESULT = "UPDATE payments SET result = NULL, reason_code = NULL, result_at = NULL WHERE payment_id = ?1";
    CORRECT_PAYMENT = "UPDATE payments SET record = ?2, bank_code = ?3 WHERE payment_id = ?1";
    HOLD = "INSERT INTO payout_holds (holder_id, from_period, reason, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (holder_id) DO UPDATE SET from_period = excluded.from_period, reason = excluded.reason, at = excluded.at
             WHERE excluded.from_period < payout_holds.from_period";
    HELD_IN_BATCHES = "SELECT p.payment_id, p.period, p.amount_fen, i.batch_id, p.result, i.position
             FROM payout_holds h JOIN payments p ON p.holder_id = h.holder_id AND p.period >= h.from_period
             JOIN batch_items i ON i.payment_id = p.payment_id AND i.live = 1
             WHERE h.holder_id = ?1";
    PERIOD_PAYMENTS = "SELECT count(*), COALESCE(SUM(amount_fen), 0) FROM payments WHERE period = ?1";
    PAYMENT = "SELECT payment_id, period, bank_code, amount_fen, record, result, reason_code, holder_id FROM payments WHERE payment_id = ?1";
    MARK_WRITTEN = "UPDATE batches SET file_sha256 = ?2 WHERE batch_id = ?1";
    WRITTEN = "SELECT file_sha256 FROM batches WHERE batch_id = ?1";
    BATCH = "SELECT batch_id, period, bank_code, seq, created, count, total_fen FROM batches WHERE batch_id = ?1";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_postgres_ones_and_nothing_else_changes() {
        assert_eq!(
            to_pg("UPDATE t SET a = ?2, b = '?1' WHERE id = ?1 AND c = ?"),
            "UPDATE t SET a = $2, b = '?1' WHERE id = $1 AND c = ?"
        );
        for s in ALL {
            let pg = s.pg();
            assert!(!pg.contains('?'), "{pg}");
            assert_eq!(pg.replace('$', "?"), s.sqlite());
        }
    }
}
