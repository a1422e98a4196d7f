//! The exchange log on PostgreSQL.

use super::*;
use crate::store::postgres::*;
use deadpool_postgres::Transaction;

/// Only one hub chains at a time.
const CHAIN_LOCK: i64 = 0x7467_6261_6e02;

/// Writes a fact, unchained, in the caller's transaction.
pub(in crate::store) async fn append(
    tx: &Transaction<'_>,
    fact: Option<Fact>,
) -> Result<(), StoreError> {
    if let Some(f) = fact {
        let st = tx
            .prepare_cached(
                "WITH e AS (INSERT INTO evidence (at, kind, body) VALUES ($1, $2, $3) RETURNING id)
                 INSERT INTO evidence_pending (id) SELECT id FROM e",
            )
            .await?;
        tx.execute(&st, &[&now_ms(), &f.kind, &f.body]).await?;
    }
    Ok(())
}

fn seal_row(r: &tokio_postgres::Row) -> Seal {
    Seal {
        pos: r.get(0),
        at: r.get(1),
        hash: hash_of(r.get(2)),
        algorithm: r.get(3),
        key_id: r.get(4),
        signature: r.get(5),
    }
}

const SEAL_COLUMNS: &str = "SELECT pos, at, hash, algorithm, key_id, signature FROM evidence_seals";
const HEAD: &str = "SELECT c.pos, c.hash, e.at FROM evidence_chain c JOIN evidence e ON e.id = c.id
     ORDER BY c.pos DESC LIMIT 1";

fn head_row(r: &tokio_postgres::Row) -> Head {
    Head {
        pos: r.get(0),
        hash: hash_of(r.get(1)),
        at: r.get(2),
    }
}

impl PgStore {
    pub(in crate::store) async fn chain_evidence(
        &self,
        limit: usize,
    ) -> Result<Chained, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&CHAIN_LOCK])
            .await?
            .get(0);
        if !locked {
            return Ok(Chained::default());
        }
        let mut last = tx.query_opt(HEAD, &[]).await?.map(|r| head_row(&r));
        let todo = tx
            .query(
                "SELECT e.id, e.at, e.kind, e.body FROM evidence_pending p JOIN evidence e ON e.id = p.id
                 ORDER BY p.id LIMIT $1",
                &[&(limit as i64)],
            )
            .await?;
        let (mut ids, mut pos_, mut prevs, mut hashes) = (vec![], vec![], vec![], vec![]);
        for r in &todo {
            let (id, at, kind, body): (i64, i64, &str, &str) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let (pos, prev) = last.map_or((1, GENESIS), |h| (h.pos + 1, h.hash));
            let hash = entry_hash(&prev, pos, at, kind, body);
            ids.push(id);
            pos_.push(pos);
            prevs.push(prev.to_vec());
            hashes.push(hash.to_vec());
            last = Some(Head { pos, hash, at });
        }
        if !ids.is_empty() {
            tx.execute(
                "WITH c AS (INSERT INTO evidence_chain (pos, id, prev, hash)
                            SELECT * FROM UNNEST($2::bigint[], $1::bigint[], $3::bytea[], $4::bytea[]))
                 DELETE FROM evidence_pending WHERE id = ANY($1)",
                &[&ids, &pos_, &prevs, &hashes],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Chained {
            chained: ids.len(),
            head: last,
        })
    }

    pub(in crate::store) async fn add_seal(&self, seal: Seal) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO evidence_seals (pos, at, hash, algorithm, key_id, signature)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (pos) DO NOTHING",
            &[
                &seal.pos,
                &seal.at,
                &seal.hash.as_slice(),
                &seal.algorithm,
                &seal.key_id,
                &seal.signature,
            ],
        )
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn last_seal(&self) -> Result<Option<Seal>, StoreError> {
        let c = self.client().await?;
        Ok(
            c.query_opt(&format!("{SEAL_COLUMNS} ORDER BY pos DESC LIMIT 1"), &[])
                .await?
                .map(|r| seal_row(&r)),
        )
    }

    pub(in crate::store) async fn seal_after(&self, pos: i64) -> Result<Option<Seal>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            &format!("{SEAL_COLUMNS} WHERE pos >= $1 ORDER BY pos LIMIT 1"),
            &[&pos],
        )
        .await?
        .map(|r| seal_row(&r)))
    }

    pub(in crate::store) async fn evidence(
        &self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT c.pos, e.at, e.kind, e.body, c.prev, c.hash FROM evidence_chain c
                 JOIN evidence e ON e.id = c.id
                 WHERE c.pos >= $1 AND c.pos <= $2 ORDER BY c.pos LIMIT $3",
                &[&from, &to, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Entry {
                pos: r.get(0),
                at: r.get(1),
                kind: r.get(2),
                body: r.get(3),
                prev: hash_of(r.get(4)),
                hash: hash_of(r.get(5)),
            })
            .collect())
    }

    pub(in crate::store) async fn seals(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<Seal>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("{SEAL_COLUMNS} WHERE pos >= $1 AND pos <= $2 ORDER BY pos"),
                &[&from, &to],
            )
            .await?;
        Ok(rows.iter().map(seal_row).collect())
    }

    pub(in crate::store) async fn evidence_position_at(
        &self,
        ms: i64,
        last: bool,
    ) -> Result<Option<i64>, StoreError> {
        let c = self.client().await?;
        let sql = if last {
            "SELECT max(c.pos) FROM evidence e JOIN evidence_chain c ON c.id = e.id WHERE e.at <= $1"
        } else {
            "SELECT min(c.pos) FROM evidence e JOIN evidence_chain c ON c.id = e.id WHERE e.at >= $1"
        };
        Ok(c.query_one(sql, &[&ms]).await?.get(0))
    }

    pub(in crate::store) async fn log_counts(&self) -> Result<LogCounts, StoreError> {
        let c = self.client().await?;
        let chained = c
            .query_opt(HEAD, &[])
            .await?
            .map_or(0, |r| head_row(&r).pos);
        let unchained: i64 = c
            .query_one("SELECT count(*) FROM evidence_pending", &[])
            .await?
            .get(0);
        let r = c
            .query_one("SELECT count(*), max(pos) FROM evidence_seals", &[])
            .await?;
        Ok(LogCounts {
            chained,
            unchained,
            seals: r.get(0),
            sealed_to: r.get(1),
        })
    }
}
