//! Bank results: pain.002 and layout result files reconciled against the
//! register, payment by payment, with alarms for what does not add up.

use super::*;

/// A bank's result file in its layout, as a status report and its
/// transactions: the header or trailer names the batch (`batch_id`), may
/// declare `count` and `total`, and a file refused whole carries `status`
/// `RJCT` and its `reason_code` with no detail lines.
pub fn read_layout_result(
    layout: &Layout,
    name: &str,
    bytes: &[u8],
) -> Result<
    (
        crate::formats::pain::StatusReport,
        Vec<crate::formats::pain::TxStatus>,
    ),
    String,
> {
    let (header, details, trailer) = layout.read_file(&layout.results, bytes)?;
    let get = |k: &str| {
        trailer
            .get(k)
            .or_else(|| header.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let batch_id = get("batch_id")
        .or_else(|| {
            let (pre, post) = layout.result_file.split_once("{batch_id}")?;
            Some(name.strip_prefix(pre)?.strip_suffix(post)?.to_string())
        })
        .ok_or("the result file names no batch (batch_id)")?;
    let (count, total) = crate::formats::layout::declared(&header, &trailer);
    let mut txs = Vec::with_capacity(details.len());
    for (line, d) in details {
        let id = d
            .get("payment_id")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("line {line}: no payment_id"))?;
        let status = d.get("status").cloned().unwrap_or_else(|| "ACSC".into());
        txs.push(crate::formats::pain::TxStatus {
            end_to_end_id: id.clone(),
            status,
            reason: d.get("reason_code").filter(|v| !v.is_empty()).cloned(),
        });
    }
    Ok((
        crate::formats::pain::StatusReport {
            msg_id: name.to_string(),
            original_msg_id: batch_id,
            original_count: count,
            original_total_fen: total,
            group_status: get("status"),
            group_reason: get("reason_code"),
        },
        txs,
    ))
}

/// What reconciling one bank status report did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// The batch it answers (`OrgnlMsgId`).
    pub batch_id: String,
    /// Payments accepted, and their fen.
    pub accepted: (i64, i64),
    /// Payments rejected, and their fen.
    pub rejected: (i64, i64),
    /// Payments the bank has not decided yet.
    pub pending: i64,
    /// Alarms raised: (kind, detail).
    pub alarms: Vec<(String, String)>,
    /// One `PaymentResult` (JSON) per payment of the batch the report
    /// decides, for the feeds back to the two-subsidies system.
    pub results: Vec<Vec<u8>>,
}

/// Words for a whole-file refusal.
pub(super) fn refusal(code: &str) -> &'static str {
    match code {
        "AM05" => "the bank refused the file as a duplicate",
        "FF01" => "the bank refused the file: invalid file format or totals",
        _ => "the bank refused the file",
    }
}

/// The payout register's handler of a bank's result files: each file is
/// read (pain.002, or the bank's layout), reconciled against the register,
/// and its per-payment results are the records a file source passes on.
pub struct Reconciler {
    store: Arc<Store>,
    layout: Option<Arc<Layout>>,
    source: String,
}

impl Reconciler {
    /// For the source `source` (named in logs), reading the bank's `layout`
    /// if it has one, pain.002 otherwise.
    pub fn new(store: Arc<Store>, layout: Option<Arc<Layout>>, source: String) -> Self {
        Reconciler {
            store,
            layout,
            source,
        }
    }

    async fn records(&self, name: &str, contents: &[u8]) -> Result<Vec<Vec<u8>>, PayoutError> {
        let (report, txs) = match &self.layout {
            Some(l) => read_layout_result(l, name, contents)
                .map_err(|e| PayoutError::ResultFile(format!("not a readable result file: {e}")))?,
            None => {
                let mut txs = Vec::new();
                let report = crate::formats::pain::read_pain002(contents, |t| txs.push(t))
                    .map_err(|e| {
                        PayoutError::ResultFile(format!("not a readable pain.002: {e}"))
                    })?;
                (report, txs)
            }
        };
        let r = reconcile(&self.store, &report, &txs).await?;
        tracing::info!(source = %self.source, file = %name, batch = %r.batch_id,
            accepted = r.accepted.0, accepted_fen = r.accepted.1, rejected = r.rejected.0,
            rejected_fen = r.rejected.1, pending = r.pending, "Bank results reconciled");
        for (kind, detail) in &r.alarms {
            tracing::warn!(batch = %r.batch_id, kind = %kind, detail = %detail, "Payout alarm");
        }
        Ok(r.results)
    }
}

impl crate::connectors::file::ResultFiles for Reconciler {
    fn read<'a>(
        &'a self,
        name: &'a str,
        contents: &'a [u8],
    ) -> futures::future::BoxFuture<'a, Result<Vec<Vec<u8>>, crate::connectors::file::RefusedFile>>
    {
        Box::pin(async move { Ok(self.records(name, contents).await?) })
    }
}

/// Reconciles a bank status report against the payout register: each
/// transaction matched by its `EndToEndId` and recorded as accepted,
/// rejected (with its reason code) or pending; an alarm for a report on an
/// unknown batch, a file refused whole, totals that disagree with the
/// batch, and a transaction the batch does not hold. Doing it again with
/// the same report changes nothing.
pub async fn reconcile(
    store: &Store,
    report: &crate::formats::pain::StatusReport,
    txs: &[crate::formats::pain::TxStatus],
) -> Result<Reconciled, PayoutError> {
    let mut out = Reconciled {
        batch_id: report.original_msg_id.clone(),
        ..Reconciled::default()
    };
    let Some(batch) = store.batch(&report.original_msg_id).await? else {
        out.alarms.push((
            "unknown_batch".into(),
            format!(
                "a status report ({}) for a batch the hub never made",
                report.msg_id
            ),
        ));
        store
            .raise_alarms(
                out.alarms
                    .iter()
                    .map(|(kind, detail)| NewAlarm {
                        batch_id: out.batch_id.clone(),
                        kind: kind.clone(),
                        detail: detail.clone(),
                    })
                    .collect(),
            )
            .await?;
        return Ok(out);
    };
    if let (Some("RJCT"), Some(code), true) = (
        report.group_status.as_deref(),
        report.group_reason.as_deref(),
        txs.is_empty(),
    ) {
        out.alarms.push((
            "file_refused".into(),
            format!("{code}: {} (report {})", refusal(code), report.msg_id),
        ));
    }
    let disagree = report.original_count.is_some_and(|n| n != batch.count)
        || report
            .original_total_fen
            .is_some_and(|t| t != batch.total_fen);
    if disagree {
        out.alarms.push((
            "totals_disagree".into(),
            format!(
                "the bank counts {} payments, {} yuan; the batch has {}, {} yuan",
                report.original_count.map_or("?".into(), |n| n.to_string()),
                report
                    .original_total_fen
                    .map_or("?".into(), crate::formats::pain::amount),
                batch.count,
                crate::formats::pain::amount(batch.total_fen)
            ),
        ));
    }
    // Each payment's amount (the records are not kept).
    let mut payments: std::collections::HashMap<String, i64> =
        std::collections::HashMap::with_capacity(batch.count.max(0) as usize);
    store
        .each_batch_payment(&batch.batch_id, |p| {
            payments.insert(p.payment_id, p.amount_fen);
            Ok::<_, PayoutError>(())
        })
        .await?;
    let today = crate::domain::china_now().date_naive().to_string();
    let mut results = Vec::with_capacity(txs.len());
    for tx in txs {
        let Some((payment_id, &amount_fen)) = payments.get_key_value(&tx.end_to_end_id) else {
            out.alarms.push((
                "unknown_payment".into(),
                format!(
                    "the bank reports {} ({}), which is not in the batch",
                    tx.end_to_end_id, tx.status
                ),
            ));
            continue;
        };
        let result = match tx.status.as_str() {
            "ACSC" | "ACSP" | "ACCP" => "ACCEPTED",
            "RJCT" => "REJECTED",
            _ => "PENDING",
        };
        match result {
            "ACCEPTED" => {
                out.accepted.0 += 1;
                out.accepted.1 += amount_fen;
            }
            "REJECTED" => {
                out.rejected.0 += 1;
                out.rejected.1 += amount_fen;
            }
            _ => out.pending += 1,
        }
        if result == "REJECTED" && tx.reason.as_deref() == Some("MD07") {
            // The holder died: the feeds stop the person's subsidies (as a
            // death); an office must close the case.
            let holder = payment_id.split('-').nth(1).unwrap_or_default();
            out.alarms.push((
                "holder_deceased".into(),
                format!(
                    "the bank reports the holder of {} deceased (MD07): the person's subsidies are stopped from the next month",
                    payment_id.replace(holder, &crate::domain::mask::id_number(holder))
                ),
            ));
        }
        results.push(BankResult {
            payment_id: payment_id.clone(),
            result: result.to_string(),
            reason_code: tx.reason.clone(),
        });
        out.results.push(
            serde_json::to_vec(&serde_json::json!({
                "payment_id": payment_id,
                "batch_id": batch.batch_id,
                "status": result,
                "reason_code": tx.reason,
                "amount_fen": amount_fen,
                "settled_on": if result == "ACCEPTED" { serde_json::json!(today) } else { serde_json::Value::Null },
            }))
            .unwrap_or_default(),
        );
    }
    store.set_results(results).await?;
    store
        .raise_alarms(
            out.alarms
                .iter()
                .map(|(kind, detail)| NewAlarm {
                    batch_id: batch.batch_id.clone(),
                    kind: kind.clone(),
                    detail: detail.clone(),
                })
                .collect(),
        )
        .await?;
    Ok(out)
}
