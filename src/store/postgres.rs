//! The PostgreSQL store, through deadpool-postgres. Several hub processes
//! may share it: claims lock head rows with `FOR UPDATE SKIP LOCKED`, so
//! they never hand one message to two workers, and work spreads.

use super::*;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use std::time::Duration;
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("src/store/migrations/postgres");
}

/// Advisory lock held while migrating, so that hubs starting together
/// migrate one at a time.
const MIGRATION_LOCK: i64 = 0x7467_6261_6e01;

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
}

/// The delivery path's statements (ingest, claim, settle, release, and the
/// advance of a head that skip shares with settle) have one right plan:
/// probes of the primary keys and of the partial indexes, joined by nested
/// loops. The planner is told to use nothing else, in the transaction only.
/// The queue tables change faster than their statistics (autovacuum
/// analyses at most once a minute, and a new database has none), and with
/// stale figures it chose, under auto_explain on the end-to-end
/// benchmark, a bitmap scan of `heads_due` that read every dead index entry
/// (199,000 for 1,000 heads) and a hash join over a sequential scan of all
/// messages to fetch 500 payloads.
pub(in crate::store) const INDEX_PLANS: &str =
    "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
                           SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/// A transaction of the delivery path: see [`INDEX_PLANS`].
pub(in crate::store) async fn delivery_tx(
    c: &mut deadpool_postgres::Object,
) -> Result<Transaction<'_>, StoreError> {
    let tx = c.transaction().await?;
    tx.batch_execute(INDEX_PLANS).await?;
    Ok(tx)
}

/// Moves each key's head to its next pending message, or removes it.
pub(in crate::store) const ADVANCE: &str = concat!(
    "WITH nxt AS (
         SELECT u.t, u.k, (SELECT m.id FROM messages m
                           WHERE m.target = u.t AND m.key = u.k AND m.status = ",
    status_sql!(PENDING),
    "
                           ORDER BY m.id LIMIT 1) AS id
         FROM UNNEST($1::text[], $2::text[]) AS u(t, k)),
     moved AS (
         UPDATE heads h SET message_id = nxt.id, due_at = $3
         FROM nxt WHERE h.target = nxt.t AND h.key = nxt.k AND nxt.id IS NOT NULL)
     DELETE FROM heads h USING nxt
     WHERE h.target = nxt.t AND h.key = nxt.k AND nxt.id IS NULL"
);

pub(in crate::store) fn pool_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Pool(e.to_string())
}

impl PgStore {
    /// Connects and migrates.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let mut cfg: tokio_postgres::Config = url.parse()?;
        // Plan each statement for the tables as they are now: a generic
        // plan cached while the tables were small (a seq scan of `heads`)
        // would stay in use after they grew, and settle 10× slower.
        let opts = format!(
            "{} -c plan_cache_mode=force_custom_plan",
            cfg.get_options().unwrap_or("")
        );
        cfg.options(opts.trim());
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(16)
            .wait_timeout(Some(Duration::from_secs(30)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(pool_err)?;
        let mut obj = pool.get().await.map_err(pool_err)?;
        let client: &mut tokio_postgres::Client = &mut obj;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let migrated = embedded::migrations::runner().run_async(client).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        migrated.map_err(|e| StoreError::Migration(e.to_string()))?;
        drop(obj);
        Ok(PgStore { pool })
    }

    pub(in crate::store) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }
}

/// Moves each key's head to its next pending message, or removes it. The
/// caller holds the heads' locks.
pub(in crate::store) async fn advance_many(
    tx: &Transaction<'_>,
    targets: &[&str],
    keys: &[&str],
    now: i64,
) -> Result<(), StoreError> {
    let st = tx.prepare_cached(ADVANCE).await?;
    tx.execute(&st, &[&targets, &keys, &now]).await?;
    Ok(())
}

pub(in crate::store) async fn audit(
    tx: &Transaction<'_>,
    actor: &str,
    action: &str,
    subject: &str,
    reason: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, subject, reason) VALUES ($1, $2, $3, $4, $5)",
        &[&now_ms(), &actor, &action, &subject, &reason],
    )
    .await?;
    evidence::postgres::append(tx, Some(evidence::operator(actor, action, subject, reason))).await
}
