//! The exchange log on SQLite.

use super::*;
use crate::store::sqlite::*;
use rusqlite::{params, Connection, OptionalExtension};

/// Writes a fact, unchained, in the caller's transaction.
pub(in crate::store) fn append(c: &Connection, fact: Option<Fact>) -> Result<(), StoreError> {
    if let Some(f) = fact {
        let id: i64 = c
            .prepare_cached(
                "INSERT INTO evidence (at, kind, body) VALUES (?1, ?2, ?3) RETURNING id",
            )?
            .query_row(params![now_ms(), f.kind, f.body], |r| r.get(0))?;
        c.prepare_cached("INSERT INTO evidence_pending (id) VALUES (?1)")?
            .execute([id])?;
    }
    Ok(())
}

fn head(c: &Connection) -> Result<Option<Head>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT c.pos, c.hash, e.at FROM evidence_chain c JOIN evidence e ON e.id = c.id
         ORDER BY c.pos DESC LIMIT 1",
    )?
    .query_row([], |r| {
        Ok(Head {
            pos: r.get(0)?,
            hash: hash_of(r.get(1)?),
            at: r.get(2)?,
        })
    })
    .optional()?)
}

fn seal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Seal> {
    Ok(Seal {
        pos: r.get(0)?,
        at: r.get(1)?,
        hash: hash_of(r.get(2)?),
        algorithm: r.get(3)?,
        key_id: r.get(4)?,
        signature: r.get(5)?,
    })
}

const SEAL_COLUMNS: &str = "SELECT pos, at, hash, algorithm, key_id, signature FROM evidence_seals";

impl SqliteStore {
    pub(in crate::store) async fn chain_evidence(
        &self,
        limit: usize,
    ) -> Result<Chained, StoreError> {
        self.with(move |c| {
            let mut last = head(c)?;
            let todo: Vec<(i64, i64, String, String)> = all(
                c,
                "SELECT e.id, e.at, e.kind, e.body FROM evidence_pending p JOIN evidence e ON e.id = p.id
                 ORDER BY p.id LIMIT ?1",
                [limit as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            let mut set = c.prepare_cached(
                "INSERT INTO evidence_chain (pos, id, prev, hash) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut done = c.prepare_cached("DELETE FROM evidence_pending WHERE id = ?1")?;
            for (id, at, kind, body) in &todo {
                let (pos, prev) = last.map_or((1, GENESIS), |h| (h.pos + 1, h.hash));
                let hash = entry_hash(&prev, pos, *at, kind, body);
                set.execute(params![pos, id, prev.as_slice(), hash.as_slice()])?;
                done.execute([id])?;
                last = Some(Head { pos, hash, at: *at });
            }
            Ok(Chained {
                chained: todo.len(),
                head: last,
            })
        })
        .await
    }

    pub(in crate::store) async fn add_seal(&self, seal: Seal) -> Result<(), StoreError> {
        self.with(move |c| {
            c.prepare_cached(
                "INSERT INTO evidence_seals (pos, at, hash, algorithm, key_id, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (pos) DO NOTHING",
            )?
            .execute(params![
                seal.pos,
                seal.at,
                seal.hash.as_slice(),
                seal.algorithm,
                seal.key_id,
                seal.signature
            ])?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn last_seal(&self) -> Result<Option<Seal>, StoreError> {
        self.with(|c| {
            Ok(
                c.prepare_cached(&format!("{SEAL_COLUMNS} ORDER BY pos DESC LIMIT 1"))?
                    .query_row([], seal_row)
                    .optional()?,
            )
        })
        .await
    }

    pub(in crate::store) async fn seal_after(&self, pos: i64) -> Result<Option<Seal>, StoreError> {
        self.with(move |c| {
            Ok(c.prepare_cached(&format!(
                "{SEAL_COLUMNS} WHERE pos >= ?1 ORDER BY pos LIMIT 1"
            ))?
            .query_row([pos], seal_row)
            .optional()?)
        })
        .await
    }

    pub(in crate::store) async fn evidence(
        &self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.with(move |c| {
            all(
                c,
                "SELECT c.pos, e.at, e.kind, e.body, c.prev, c.hash FROM evidence_chain c
                 JOIN evidence e ON e.id = c.id
                 WHERE c.pos >= ?1 AND c.pos <= ?2 ORDER BY c.pos LIMIT ?3",
                params![from, to, limit as i64],
                |r| {
                    Ok(Entry {
                        pos: r.get(0)?,
                        at: r.get(1)?,
                        kind: r.get(2)?,
                        body: r.get(3)?,
                        prev: hash_of(r.get(4)?),
                        hash: hash_of(r.get(5)?),
                    })
                },
            )
        })
        .await
    }

    pub(in crate::store) async fn seals(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<Seal>, StoreError> {
        self.with(move |c| {
            all(
                c,
                &format!("{SEAL_COLUMNS} WHERE pos >= ?1 AND pos <= ?2 ORDER BY pos"),
                params![from, to],
                seal_row,
            )
        })
        .await
    }

    pub(in crate::store) async fn evidence_position_at(
        &self,
        ms: i64,
        last: bool,
    ) -> Result<Option<i64>, StoreError> {
        self.with(move |c| {
            let sql = if last {
                "SELECT max(c.pos) FROM evidence e JOIN evidence_chain c ON c.id = e.id WHERE e.at <= ?1"
            } else {
                "SELECT min(c.pos) FROM evidence e JOIN evidence_chain c ON c.id = e.id WHERE e.at >= ?1"
            };
            Ok(c.prepare_cached(sql)?.query_row([ms], |r| r.get(0))?)
        })
        .await
    }

    pub(in crate::store) async fn log_counts(&self) -> Result<LogCounts, StoreError> {
        self.with(|c| {
            let chained = head(c)?.map_or(0, |h| h.pos);
            let unchained: i64 = c
                .prepare_cached("SELECT count(*) FROM evidence_pending")?
                .query_row([], |r| r.get(0))?;
            let (seals, sealed_to): (i64, Option<i64>) = c
                .prepare_cached("SELECT count(*), max(pos) FROM evidence_seals")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(LogCounts {
                chained,
                unchained,
                seals,
                sealed_to,
            })
        })
        .await
    }
}
