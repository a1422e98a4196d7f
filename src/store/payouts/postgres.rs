//! The payout register on PostgreSQL.

use crate::store::postgres::*;
use crate::store::sql;
use crate::store::*;

impl PgStore {
    pub(in crate::store) async fn record_payments(
        &self,
        rows: Vec<PaymentRow>,
    ) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let (mut id, mut period, mut bank, mut amount, mut record, mut holder) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for r in &rows {
            holder.push(r.holder_id.as_str());
            id.push(r.payment_id.as_str());
            period.push(r.period.as_str());
            bank.push(r.bank_code.as_str());
            amount.push(r.amount_fen);
            record.push(r.record.as_slice());
        }
        let n = c
            .execute(
                "INSERT INTO payments (payment_id, period, bank_code, amount_fen, record, created_at, holder_id)
                 SELECT i, p, b, a, r, $6, h FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[], $7::text[]) AS u(i, p, b, a, r, h)
                 ON CONFLICT (payment_id) DO NOTHING",
                &[&id, &period, &bank, &amount, &record, &now_ms(), &holder],
            )
            .await?;
        Ok(n as usize)
    }

    pub(in crate::store) async fn period_payments(
        &self,
        period: &str,
    ) -> Result<(i64, i64), StoreError> {
        let c = self.client().await?;
        let r = c.query_one(sql::PERIOD_PAYMENTS.pg(), &[&period]).await?;
        Ok((r.get(0), r.get::<_, i64>(1)))
    }

    pub(in crate::store) async fn hold_payments(
        &self,
        holder_id: &str,
        from_period: &str,
        reason: &str,
    ) -> Result<Vec<HeldPayment>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            sql::HOLD.pg(),
            &[&holder_id, &from_period, &reason, &now_ms()],
        )
        .await?;
        let mut held: Vec<HeldPayment> = tx
            .query(sql::HELD_IN_BATCHES.pg(), &[&holder_id])
            .await?
            .iter()
            .map(|r| HeldPayment {
                payment_id: r.get(0),
                period: r.get(1),
                amount_fen: r.get(2),
                batch_id: r.get(3),
                result: r.get(4),
                position: r.get(5),
            })
            .collect();
        tx.commit().await?;
        // In one order whatever the database's collation.
        held.sort_by(|a, b| (&a.period, &a.payment_id).cmp(&(&b.period, &b.payment_id)));
        Ok(held)
    }

    pub(in crate::store) async fn build_batches(
        &self,
        period: &str,
        max: usize,
        created: &str,
    ) -> Result<Vec<BatchRow>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Builders of one period take turns; the unique index on live
        // memberships is the guarantee either way.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('tongban.build_batches:' || $1))",
            &[&period],
        )
        .await?;
        let unbatched: Vec<(String, String, i64)> = tx
            .query(
                "SELECT p.payment_id, p.bank_code, p.amount_fen FROM payments p
                 WHERE p.period = $1 AND NOT EXISTS
                   (SELECT 1 FROM batch_items i WHERE i.payment_id = p.payment_id AND i.live = 1)
                 AND NOT EXISTS
                   (SELECT 1 FROM payout_holds h WHERE h.holder_id = p.holder_id AND h.from_period <= p.period)
                 ORDER BY p.bank_code COLLATE \"C\", p.payment_id COLLATE \"C\"",
                &[&period],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let banks: Vec<String> = {
            let mut b: Vec<String> = unbatched.iter().map(|u| u.1.clone()).collect();
            b.dedup();
            b
        };
        let mut seqs = std::collections::HashMap::new();
        for bank in &banks {
            let next: i64 = tx
                .query_one(sql::NEXT_BATCH_SEQ.pg(), &[&period, bank])
                .await?
                .get(0);
            seqs.insert(bank.clone(), next);
        }
        let plan = plan_batches(period, created, max, &unbatched, |bank| {
            Ok(seqs.get(bank).copied().unwrap_or(1))
        })?;
        for (row, ids) in &plan {
            tx.execute(
                "INSERT INTO batches (batch_id, period, bank_code, seq, created, count, total_fen)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &row.batch_id,
                    &row.period,
                    &row.bank_code,
                    &row.seq,
                    &row.created,
                    &row.count,
                    &row.total_fen,
                ],
            )
            .await?;
            let positions: Vec<i64> = (0..ids.len() as i64).collect();
            tx.execute(
                "INSERT INTO batch_items (batch_id, payment_id, position)
                 SELECT $1, i, p FROM UNNEST($2::text[], $3::bigint[]) AS u(i, p)",
                &[&row.batch_id, ids, &positions],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(plan.into_iter().map(|(b, _)| b).collect())
    }

    pub(in crate::store) async fn batches(
        &self,
        period: &str,
    ) -> Result<Vec<BatchRow>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT batch_id, period, bank_code, seq, created, count, total_fen FROM batches
             WHERE period = $1 AND live = 1 ORDER BY bank_code COLLATE \"C\", seq",
            &[&period],
        )
        .await?
        .iter()
        .map(|r| BatchRow {
            batch_id: r.get(0),
            period: r.get(1),
            bank_code: r.get(2),
            seq: r.get(3),
            created: r.get(4),
            count: r.get(5),
            total_fen: r.get(6),
        })
        .collect())
    }

    pub(in crate::store) async fn batch_payments_page(
        &self,
        batch_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, PaymentRow)>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT i.position, p.payment_id, p.period, p.bank_code, p.amount_fen, p.record, p.holder_id
             FROM batch_items i JOIN payments p ON p.payment_id = i.payment_id
             WHERE i.batch_id = $1 AND i.position > $2 ORDER BY i.position LIMIT $3",
            &[&batch_id, &after, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| {
            (
                r.get(0),
                PaymentRow {
                    payment_id: r.get(1),
                    period: r.get(2),
                    bank_code: r.get(3),
                    amount_fen: r.get(4),
                    record: r.get(5),
                    holder_id: r.get(6),
                },
            )
        })
        .collect())
    }

    pub(in crate::store) async fn reissue(
        &self,
        payment_id: &str,
        corrected: Option<(Vec<u8>, String)>,
        actor: &str,
        reason: &str,
    ) -> Result<String, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT result FROM payments WHERE payment_id = $1 FOR UPDATE",
                &[&payment_id],
            )
            .await?
        else {
            return Err(StoreError::Refused(format!(
                "there is no payment {payment_id}"
            )));
        };
        let result: Option<String> = row.get(0);
        if let Some(why) = reissue_refusal(payment_id, result.as_deref()) {
            return Err(StoreError::Refused(why));
        }
        let batch: String = tx
            .query_opt(
                "UPDATE batch_items SET live = 0 WHERE payment_id = $1 AND live = 1 RETURNING batch_id",
                &[&payment_id],
            )
            .await?
            .map(|r| r.get(0))
            .unwrap_or_default();
        tx.execute(sql::CLEAR_RESULT.pg(), &[&payment_id]).await?;
        if let Some((record, bank)) = &corrected {
            tx.execute(sql::CORRECT_PAYMENT.pg(), &[&payment_id, record, bank])
                .await?;
        }
        audit(
            &tx,
            actor,
            "reissue",
            &format!("payment {payment_id} (rejected in batch {batch})"),
            reason,
        )
        .await?;
        tx.commit().await?;
        Ok(batch)
    }

    pub(in crate::store) async fn payment(
        &self,
        payment_id: &str,
    ) -> Result<Option<PaymentState>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(sql::PAYMENT.pg(), &[&payment_id])
            .await?
            .map(|r| PaymentState {
                row: PaymentRow {
                    payment_id: r.get(0),
                    period: r.get(1),
                    bank_code: r.get(2),
                    amount_fen: r.get(3),
                    record: r.get(4),
                    holder_id: r.get(7),
                },
                result: r.get(5),
                reason_code: r.get(6),
            }))
    }

    pub(in crate::store) async fn mark_written(
        &self,
        batch_id: &str,
        sha256: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(sql::MARK_WRITTEN.pg(), &[&batch_id, &sha256])
            .await?;
        evidence::postgres::append(&tx, Some(evidence::payment_file(batch_id, sha256))).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(in crate::store) async fn written(
        &self,
        batch_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(sql::WRITTEN.pg(), &[&batch_id])
            .await?
            .and_then(|r| r.get(0)))
    }

    pub(in crate::store) async fn batch(
        &self,
        batch_id: &str,
    ) -> Result<Option<BatchRow>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(sql::BATCH.pg(), &[&batch_id])
            .await?
            .map(|r| BatchRow {
                batch_id: r.get(0),
                period: r.get(1),
                bank_code: r.get(2),
                seq: r.get(3),
                created: r.get(4),
                count: r.get(5),
                total_fen: r.get(6),
            }))
    }

    pub(in crate::store) async fn set_results(
        &self,
        results: Vec<BankResult>,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let (mut id, mut res, mut why) = (Vec::new(), Vec::new(), Vec::new());
        for r in &results {
            id.push(r.payment_id.as_str());
            res.push(r.result.as_str());
            why.push(r.reason_code.as_deref());
        }
        tx.execute(
            "UPDATE payments p SET result = u.r, reason_code = u.w, result_at = $4
             FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(i, r, w) WHERE p.payment_id = u.i",
            &[&id, &res, &why, &now_ms()],
        )
        .await?;
        evidence::postgres::append(&tx, evidence::bank_results(&results)).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(in crate::store) async fn raise_alarms(
        &self,
        alarms: Vec<NewAlarm>,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let (mut b, mut k, mut d) = (Vec::new(), Vec::new(), Vec::new());
        for a in &alarms {
            b.push(a.batch_id.as_str());
            k.push(a.kind.as_str());
            d.push(a.detail.as_str());
        }
        c.execute(
            "INSERT INTO alarms (at, batch_id, kind, detail)
             SELECT $4, b, k, d FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(b, k, d)
             ON CONFLICT (batch_id, kind, detail) DO NOTHING",
            &[&b, &k, &d, &now_ms()],
        )
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn alarms(&self) -> Result<Vec<AlarmRow>, StoreError> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT at, batch_id, kind, detail FROM alarms ORDER BY at, batch_id COLLATE \"C\", kind COLLATE \"C\", detail COLLATE \"C\"",
            &[],
        )
        .await?
        .iter()
        .map(|r| AlarmRow { at: r.get(0), batch_id: r.get(1), kind: r.get(2), detail: r.get(3) })
        .collect())
    }

    pub(in crate::store) async fn results(&self, period: &str) -> Result<ResultCounts, StoreError> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT b.batch_id, p.result, count(*), COALESCE(SUM(p.amount_fen), 0)::bigint
             FROM batches b JOIN batch_items i ON i.batch_id = b.batch_id AND i.live = 1
             JOIN payments p ON p.payment_id = i.payment_id
             WHERE b.period = $1 AND b.live = 1
             GROUP BY b.batch_id, p.result ORDER BY b.batch_id COLLATE \"C\", p.result COLLATE \"C\"",
            &[&period],
        )
        .await?
        .iter()
        .map(|r| ResultCount {
            batch_id: r.get(0),
            result: r.get(1),
            payments: r.get(2),
            fen: r.get(3),
        })
        .collect())
    }
}
