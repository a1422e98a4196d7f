//! The payout register: payment instructions, batches (a payment in at
//! most one live batch), batch files written, bank results and alarms.

mod postgres;
mod sqlite;

use super::*;
use futures::future::BoxFuture;

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
    /// The person paid (ID number): a hold on them ([`Store::hold_payments`])
    /// keeps their payments out of batches.
    pub holder_id: String,
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

/// A bank's answer about one payment, as the register records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankResult {
    /// The payment.
    pub payment_id: String,
    /// `ACCEPTED`, `REJECTED` or `PENDING`.
    pub result: String,
    /// The bank's reason code (ISO 20022: `AC04`, `MD07`, …), if any.
    pub reason_code: Option<String>,
}

/// One payment of the register with the bank's latest answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentState {
    /// The payment.
    pub row: PaymentRow,
    /// `ACCEPTED`, `REJECTED` or `PENDING`; none before a result file.
    pub result: Option<String>,
    /// The bank's reason code, if any.
    pub reason_code: Option<String>,
}

/// An alarm to raise about a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAlarm {
    /// The batch (the `OrgnlMsgId` of the report).
    pub batch_id: String,
    /// `unknown_batch`, `unknown_payment`, `totals_disagree`, `file_refused`,
    /// `holder_deceased`.
    pub kind: String,
    /// What exactly.
    pub detail: String,
}

/// An alarm operations must see: a bank result that does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmRow {
    /// When it was raised, ms since the epoch.
    pub at: i64,
    /// The batch (the `OrgnlMsgId` of the report).
    pub batch_id: String,
    /// `unknown_batch`, `unknown_payment`, `totals_disagree`, `file_refused`,
    /// `holder_deceased`.
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

/// A payment of a held person that was already in a live batch when the
/// hold came: its file was made, and it may have been paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldPayment {
    /// The payment.
    pub payment_id: String,
    /// `YYYY-MM`.
    pub period: String,
    /// Amount, fen.
    pub amount_fen: i64,
    /// The batch it is in.
    pub batch_id: String,
    /// Its place in the batch's file, from 0.
    pub position: i64,
    /// The bank's answer, if any: `ACCEPTED` means paid.
    pub result: Option<String>,
}

/// One line of [`Store::results`]: the payments of a batch with one result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultCount {
    /// The batch.
    pub batch_id: String,
    /// `ACCEPTED`, `REJECTED` or `PENDING`; none before a result file.
    pub result: Option<String>,
    /// How many payments.
    pub payments: i64,
    /// Their sum, fen.
    pub fen: i64,
}

/// What [`Store::results`] returns: per batch and result.
pub type ResultCounts = Vec<ResultCount>;

impl Store {
    /// Records payment instructions in the payout register; one already
    /// there (same payment id) is left as it is. Returns how many are new.
    pub async fn record_payments(&self, rows: Vec<PaymentRow>) -> Result<usize, StoreError> {
        both!(self, s => s.record_payments(rows).await)
    }

    /// The payments of a period in the register: how many, and their sum
    /// in fen (an index probe, not a scan of the outbox).
    pub async fn period_payments(&self, period: &str) -> Result<(i64, i64), StoreError> {
        both!(self, s => s.period_payments(period).await)
    }

    /// Holds a person's payments from `from_period` on (a stop the register
    /// must keep to, e.g. a death): none of them goes into a batch any more.
    /// A second hold keeps the earliest month. Returns the person's payments
    /// from that month on that were already in a live batch: made before
    /// the hold, and perhaps paid.
    pub async fn hold_payments(
        &self,
        holder_id: &str,
        from_period: &str,
        reason: &str,
    ) -> Result<Vec<HeldPayment>, StoreError> {
        both!(self, s => s.hold_payments(holder_id, from_period, reason).await)
    }

    /// Puts every payment of `period` that is in no live batch and not held
    /// into new batches (per bank, at most `max` each, stamped `created`), in one
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
        f: impl FnMut(PaymentRow) -> Result<(), E>,
    ) -> Result<(), E> {
        (self as &dyn BatchFiles)
            .each_batch_payment(batch_id, f)
            .await
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

    /// One payment of the register with the bank's latest answer.
    pub async fn payment(&self, payment_id: &str) -> Result<Option<PaymentState>, StoreError> {
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

    /// Records the banks' answers.
    pub async fn set_results(&self, results: Vec<BankResult>) -> Result<(), StoreError> {
        both!(self, s => s.set_results(results).await)
    }

    /// Raises alarms; one already raised stays as it was.
    pub async fn raise_alarms(&self, alarms: Vec<NewAlarm>) -> Result<(), StoreError> {
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
}

/// The part of a store the payments sink uses: the register takes payment
/// instructions. [`Store`] has it for both dialects; a unit test can give
/// the sink an in-memory register.
pub trait Register: Send + Sync + 'static {
    /// See [`Store::record_payments`].
    fn record_payments(&self, rows: Vec<PaymentRow>) -> BoxFuture<'_, Result<usize, StoreError>>;
}

impl Register for Store {
    fn record_payments(&self, rows: Vec<PaymentRow>) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(Store::record_payments(self, rows))
    }
}

/// The part of a store the files sink and the renderer use: a batch, its
/// payments a page at a time, and the SHA-256 of its file once written.
pub trait BatchFiles: Send + Sync + 'static {
    /// See [`Store::batch`].
    fn batch<'a>(
        &'a self,
        batch_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<BatchRow>, StoreError>>;

    /// See [`Store::batch_payments_page`].
    fn batch_payments_page<'a>(
        &'a self,
        batch_id: &'a str,
        after: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(i64, PaymentRow)>, StoreError>>;

    /// See [`Store::written`].
    fn written<'a>(
        &'a self,
        batch_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// See [`Store::mark_written`].
    fn mark_written<'a>(
        &'a self,
        batch_id: &'a str,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

impl dyn BatchFiles {
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
}

impl BatchFiles for Store {
    fn batch<'a>(
        &'a self,
        batch_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<BatchRow>, StoreError>> {
        Box::pin(Store::batch(self, batch_id))
    }

    fn batch_payments_page<'a>(
        &'a self,
        batch_id: &'a str,
        after: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(i64, PaymentRow)>, StoreError>> {
        Box::pin(Store::batch_payments_page(self, batch_id, after, limit))
    }

    fn written<'a>(
        &'a self,
        batch_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(Store::written(self, batch_id))
    }

    fn mark_written<'a>(
        &'a self,
        batch_id: &'a str,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::mark_written(self, batch_id, sha256))
    }
}
