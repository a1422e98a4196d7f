//! The payout register on SQLite.

use crate::store::sql;
use crate::store::sqlite::*;
use crate::store::*;
use rusqlite::OptionalExtension;

impl SqliteStore {
    pub(in crate::store) async fn record_payments(
        &self,
        rows: Vec<PaymentRow>,
    ) -> Result<usize, StoreError> {
        self.with(move |c| {
            let mut n = 0;
            {
                let mut st = c.prepare_cached(
                    "INSERT INTO payments (payment_id, period, bank_code, amount_fen, record, created_at, holder_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (payment_id) DO NOTHING",
                )?;
                let now = now_ms();
                for r in &rows {
                    n += st.execute(rusqlite::params![r.payment_id, r.period, r.bank_code, r.amount_fen, r.record, now, r.holder_id])?;
                }
            }
            Ok(n)
        })
        .await
    }

    pub(in crate::store) async fn period_payments(
        &self,
        period: &str,
    ) -> Result<(i64, i64), StoreError> {
        let period = period.to_string();
        self.with(move |c| {
            Ok(c.query_row(sql::PERIOD_PAYMENTS.sqlite(), [&period], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?)
        })
        .await
    }

    pub(in crate::store) async fn hold_payments(
        &self,
        holder_id: &str,
        from_period: &str,
        reason: &str,
    ) -> Result<Vec<HeldPayment>, StoreError> {
        let (holder, from, reason) = (
            holder_id.to_string(),
            from_period.to_string(),
            reason.to_string(),
        );
        self.with(move |c| {
            c.execute(
                sql::HOLD.sqlite(),
                rusqlite::params![holder, from, reason, now_ms()],
            )?;
            let mut held = all(c, sql::HELD_IN_BATCHES.sqlite(), [&holder], |r| {
                Ok(HeldPayment {
                    payment_id: r.get(0)?,
                    period: r.get(1)?,
                    amount_fen: r.get(2)?,
                    batch_id: r.get(3)?,
                    result: r.get(4)?,
                    position: r.get(5)?,
                })
            })?;
            // In one order whatever the database's collation.
            held.sort_by(|a, b| (&a.period, &a.payment_id).cmp(&(&b.period, &b.payment_id)));
            Ok(held)
        })
        .await
    }

    pub(in crate::store) async fn build_batches(
        &self,
        period: &str,
        max: usize,
        created: &str,
    ) -> Result<Vec<BatchRow>, StoreError> {
        let (period, created) = (period.to_string(), created.to_string());
        self.with(move |c| {
            let unbatched: Vec<(String, String, i64)> = all(c, "SELECT p.payment_id, p.bank_code, p.amount_fen FROM payments p
                     WHERE p.period = ?1 AND NOT EXISTS
                       (SELECT 1 FROM batch_items i WHERE i.payment_id = p.payment_id AND i.live = 1)
                     AND NOT EXISTS
                       (SELECT 1 FROM payout_holds h WHERE h.holder_id = p.holder_id AND h.from_period <= p.period)
                     ORDER BY p.bank_code, p.payment_id", [&period], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            let plan = plan_batches(&period, &created, max, &unbatched, |bank| {
                Ok(c.query_row(
                    sql::NEXT_BATCH_SEQ.sqlite(),
                    [&period, bank],
                    |r| r.get(0),
                )?)
            })?;
            {
                let mut b = c.prepare_cached(
                    "INSERT INTO batches (batch_id, period, bank_code, seq, created, count, total_fen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                let mut item = c.prepare_cached(
                    "INSERT INTO batch_items (batch_id, payment_id, position) VALUES (?1, ?2, ?3)",
                )?;
                for (row, ids) in &plan {
                    b.execute(rusqlite::params![row.batch_id, row.period, row.bank_code, row.seq, row.created, row.count, row.total_fen])?;
                    for (pos, id) in ids.iter().enumerate() {
                        item.execute(rusqlite::params![row.batch_id, id, pos as i64])?;
                    }
                }
            }
            Ok(plan.into_iter().map(|(b, _)| b).collect())
        })
        .await
    }

    pub(in crate::store) async fn batches(
        &self,
        period: &str,
    ) -> Result<Vec<BatchRow>, StoreError> {
        let period = period.to_string();
        self.with(move |c| {
            all(
                c,
                "SELECT batch_id, period, bank_code, seq, created, count, total_fen FROM batches
                 WHERE period = ?1 AND live = 1 ORDER BY bank_code, seq",
                [&period],
                |r| {
                    Ok(BatchRow {
                        batch_id: r.get(0)?,
                        period: r.get(1)?,
                        bank_code: r.get(2)?,
                        seq: r.get(3)?,
                        created: r.get(4)?,
                        count: r.get(5)?,
                        total_fen: r.get(6)?,
                    })
                },
            )
        })
        .await
    }

    pub(in crate::store) async fn batch_payments_page(
        &self,
        batch_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, PaymentRow)>, StoreError> {
        let batch_id = batch_id.to_string();
        self.with(move |c| {
            all(
                c,
                "SELECT i.position, p.payment_id, p.period, p.bank_code, p.amount_fen, p.record, p.holder_id
                 FROM batch_items i JOIN payments p ON p.payment_id = i.payment_id
                 WHERE i.batch_id = ?1 AND i.position > ?2 ORDER BY i.position LIMIT ?3",
                rusqlite::params![batch_id, after, limit as i64],
                |r| Ok((r.get(0)?, payment_at(r, 1, 6)?)),
            )
        })
        .await
    }

    pub(in crate::store) async fn reissue(
        &self,
        payment_id: &str,
        corrected: Option<(Vec<u8>, String)>,
        actor: &str,
        reason: &str,
    ) -> Result<String, StoreError> {
        let (payment_id, actor, reason) = (
            payment_id.to_string(),
            actor.to_string(),
            reason.to_string(),
        );
        self.with(move |c| {
            let result: Option<Option<String>> = c
                .query_row(
                    "SELECT result FROM payments WHERE payment_id = ?1",
                    [&payment_id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(result) = result else {
                return Err(StoreError::Refused(format!(
                    "there is no payment {payment_id}"
                )));
            };
            if let Some(why) = reissue_refusal(&payment_id, result.as_deref()) {
                return Err(StoreError::Refused(why));
            }
            let batch: Option<String> = c
                .query_row(
                    "SELECT batch_id FROM batch_items WHERE payment_id = ?1 AND live = 1",
                    [&payment_id],
                    |r| r.get(0),
                )
                .optional()?;
            c.execute(
                "UPDATE batch_items SET live = 0 WHERE payment_id = ?1 AND live = 1",
                [&payment_id],
            )?;
            c.execute(sql::CLEAR_RESULT.sqlite(), [&payment_id])?;
            if let Some((record, bank)) = &corrected {
                c.execute(
                    sql::CORRECT_PAYMENT.sqlite(),
                    rusqlite::params![payment_id, record, bank],
                )?;
            }
            let batch = batch.unwrap_or_default();
            audit(
                c,
                &actor,
                "reissue",
                &format!("payment {payment_id} (rejected in batch {batch})"),
                &reason,
            )?;
            Ok(batch)
        })
        .await
    }

    pub(in crate::store) async fn payment(
        &self,
        payment_id: &str,
    ) -> Result<Option<PaymentState>, StoreError> {
        let payment_id = payment_id.to_string();
        self.with(move |c| {
            Ok(c.query_row(sql::PAYMENT.sqlite(), [&payment_id], |r| {
                Ok(PaymentState {
                    row: payment_at(r, 0, 7)?,
                    result: r.get(5)?,
                    reason_code: r.get(6)?,
                })
            })
            .optional()?)
        })
        .await
    }

    pub(in crate::store) async fn mark_written(
        &self,
        batch_id: &str,
        sha256: &str,
    ) -> Result<(), StoreError> {
        let (b, h) = (batch_id.to_string(), sha256.to_string());
        self.with(move |c| {
            c.execute(sql::MARK_WRITTEN.sqlite(), [&b, &h])?;
            evidence::sqlite::append(c, Some(evidence::payment_file(&b, &h)))
        })
        .await
    }

    pub(in crate::store) async fn written(
        &self,
        batch_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let b = batch_id.to_string();
        self.with(move |c| {
            Ok(c.query_row(sql::WRITTEN.sqlite(), [&b], |r| r.get(0))
                .optional()?
                .flatten())
        })
        .await
    }

    pub(in crate::store) async fn batch(
        &self,
        batch_id: &str,
    ) -> Result<Option<BatchRow>, StoreError> {
        let batch_id = batch_id.to_string();
        self.with(move |c| {
            Ok(c.query_row(sql::BATCH.sqlite(), [&batch_id], |r| {
                Ok(BatchRow {
                    batch_id: r.get(0)?,
                    period: r.get(1)?,
                    bank_code: r.get(2)?,
                    seq: r.get(3)?,
                    created: r.get(4)?,
                    count: r.get(5)?,
                    total_fen: r.get(6)?,
                })
            })
            .optional()?)
        })
        .await
    }

    pub(in crate::store) async fn set_results(
        &self,
        results: Vec<BankResult>,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            {
                let mut st = c.prepare_cached(
                    "UPDATE payments SET result = ?2, reason_code = ?3, result_at = ?4 WHERE payment_id = ?1",
                )?;
                let now = now_ms();
                for r in &results {
                    st.execute(rusqlite::params![r.payment_id, r.result, r.reason_code, now])?;
                }
            }
            evidence::sqlite::append(c, evidence::bank_results(&results))
        })
        .await
    }

    pub(in crate::store) async fn raise_alarms(
        &self,
        alarms: Vec<NewAlarm>,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            {
                let mut st = c.prepare_cached(
                    "INSERT INTO alarms (at, batch_id, kind, detail) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (batch_id, kind, detail) DO NOTHING",
                )?;
                let now = now_ms();
                for a in &alarms {
                    st.execute(rusqlite::params![now, a.batch_id, a.kind, a.detail])?;
                }
            }
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn alarms(&self) -> Result<Vec<AlarmRow>, StoreError> {
        self.with(|c| {
            all(
                c,
                "SELECT at, batch_id, kind, detail FROM alarms ORDER BY at, batch_id, kind, detail",
                [],
                |r| {
                    Ok(AlarmRow {
                        at: r.get(0)?,
                        batch_id: r.get(1)?,
                        kind: r.get(2)?,
                        detail: r.get(3)?,
                    })
                },
            )
        })
        .await
    }

    pub(in crate::store) async fn results(&self, period: &str) -> Result<ResultCounts, StoreError> {
        let period = period.to_string();
        self.with(move |c| {
            all(
                c,
                "SELECT b.batch_id, p.result, count(*), COALESCE(SUM(p.amount_fen), 0)
                 FROM batches b JOIN batch_items i ON i.batch_id = b.batch_id AND i.live = 1
                 JOIN payments p ON p.payment_id = i.payment_id
                 WHERE b.period = ?1 AND b.live = 1
                 GROUP BY b.batch_id, p.result ORDER BY b.batch_id, p.result",
                [&period],
                |r| {
                    Ok(ResultCount {
                        batch_id: r.get(0)?,
                        result: r.get(1)?,
                        payments: r.get(2)?,
                        fen: r.get(3)?,
                    })
                },
            )
        })
        .await
    }
}

/// A payment from its six columns (payment_id, period, bank_code,
/// amount_fen, record, holder_id) starting at column `i`; `holder` is where
/// holder_id is.
fn payment_at(r: &rusqlite::Row<'_>, i: usize, holder: usize) -> rusqlite::Result<PaymentRow> {
    Ok(PaymentRow {
        payment_id: r.get(i)?,
        period: r.get(i + 1)?,
        bank_code: r.get(i + 2)?,
        amount_fen: r.get(i + 3)?,
        holder_id: r.get(holder)?,
        record: r.get(i + 4)?,
    })
}
