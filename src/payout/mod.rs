//! Bank payouts: payment instructions (from the two-subsidies system's
//! monthly payout list, mapped by a feed) are recorded once each in the
//! payout register, grouped into batches per bank and period, and written
//! as ISO 20022 pain.001 files with a checksum file beside them, into the
//! bank connector's outbound directory.
//!
//! - [`PaymentsSink`] is the sink of the pain.001 target: delivering an
//!   instruction records it in the register (idempotent by payment id).
//! - [`build`] (`tongban payouts build --period YYYY-MM`) makes batches of
//!   every payment of the period that is in no live batch, and writes the
//!   file of every live batch whose file is missing. A batch's content and
//!   `CreDtTm` are stored, so a file written again after a crash is
//!   byte-identical; the store's unique index keeps a payment out of a
//!   second live batch.

use crate::config::{Config, ConnectorKind, OpRef};
use crate::dispatch::failure::DeliveryError;
use crate::dispatch::{Delivered, Sink};
use crate::formats::layout::Layout;
use crate::formats::pain::{GroupHeader, Pain001Writer, PaymentBlock, Transfer, Version};
use crate::store::{BatchRow, Claimed, PaymentRow, Store};
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;

/// Records payment instructions in the payout register.
pub struct PaymentsSink {
    store: Arc<Store>,
}

impl PaymentsSink {
    /// A sink writing into `store`'s register.
    pub fn new(store: Arc<Store>) -> Self {
        PaymentsSink { store }
    }

    async fn record(&self, ms: &[Claimed]) -> Result<Delivered, DeliveryError> {
        let mut rows = Vec::with_capacity(ms.len());
        for m in ms {
            rows.push(payment_row(&m.payload).map_err(DeliveryError::Request)?);
        }
        let n = self
            .store
            .record_payments(rows)
            .await
            .map_err(|e| DeliveryError::Io(format!("the payout register: {e}")))?;
        Ok(Delivered {
            status_code: None,
            excerpt: Some(format!("{n} new in the payout register")),
        })
    }
}

/// A `PaymentInstruction` (JSON) as a register row.
pub fn payment_row(record: &[u8]) -> Result<PaymentRow, String> {
    let v: serde_json::Value = serde_json::from_slice(record)
        .map_err(|e| format!("the payment instruction is not JSON: {e}"))?;
    let s = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("the payment instruction has no {k}"))
    };
    Ok(PaymentRow {
        payment_id: s("payment_id")?,
        period: s("period")?,
        bank_code: s("creditor_bank_code")?,
        amount_fen: v["amount_fen"]
            .as_i64()
            .ok_or("the payment instruction has no amount_fen")?,
        record: record.to_vec(),
    })
}

impl Sink for PaymentsSink {
    fn deliver<'a>(&'a self, m: &'a Claimed) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.record(std::slice::from_ref(m)))
    }

    fn max_batch(&self) -> usize {
        1000
    }

    fn deliver_batch<'a>(
        &'a self,
        ms: &'a [Claimed],
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.record(ms))
    }
}

/// Whether an operation is a pain.001 target, and which version.
pub fn pain_version(op: &crate::config::connector::Operation) -> Option<Version> {
    match op.xml_namespace.as_deref()? {
        "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03" => Some(Version::V03),
        "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09" => Some(Version::V09),
        _ => None,
    }
}

/// How a bank takes its payment files.
#[derive(Clone, Debug)]
pub enum BankFormat {
    /// ISO 20022 pain.001 of this version.
    Pain(Version),
    /// A delimited or fixed-width layout.
    Layout(Arc<Layout>),
}

/// A bank's payment-file target.
#[derive(Clone, Debug)]
pub struct BankTarget {
    /// The sink operation.
    pub op: OpRef,
    /// Where its files go.
    pub dir: PathBuf,
    /// What they look like.
    pub format: BankFormat,
}

impl BankTarget {
    /// The file name of a batch.
    pub fn file_name(&self, batch: &BatchRow) -> String {
        match &self.format {
            BankFormat::Pain(_) => format!("{}.pain001.xml", batch.batch_id),
            BankFormat::Layout(l) => l.payment_file_name(&batch.batch_id),
        }
    }
}

/// Whether a connector's operation is a payment-file target (a file sink
/// writing pain.001 or a bank layout), and how.
pub fn bank_format(c: &crate::config::Connector, op_name: &str) -> Option<BankFormat> {
    let op = c.spec.operations.get(op_name)?.get_ref();
    if c.spec.kind != ConnectorKind::File
        || op.direction != crate::config::connector::Direction::Sink
    {
        return None;
    }
    if let Some(v) = pain_version(op) {
        return Some(BankFormat::Pain(v));
    }
    c.layouts.get(op_name).cloned().map(BankFormat::Layout)
}

/// The bank's payment-file target: the operation, its outbound directory
/// and its format. With several, `name` picks one.
pub fn bank_target(cfg: &Config, name: Option<&str>) -> Result<BankTarget, String> {
    let mut found = Vec::new();
    for (cname, c) in &cfg.connectors {
        for (oname, op) in &c.spec.operations {
            let op = op.get_ref();
            if let Some(format) = bank_format(c, oname) {
                let r = OpRef {
                    connector: cname.clone(),
                    operation: oname.clone(),
                };
                if name.is_none_or(|n| n == r.to_string()) {
                    let dir = cfg
                        .dir
                        .join(c.spec.directory.as_deref().unwrap_or("."))
                        .join(op.path.as_deref().unwrap_or("out"));
                    found.push(BankTarget { op: r, dir, format });
                }
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err("no file connector operation writes payment files (xml_namespace urn:iso:std:iso:20022:tech:xsd:pain.001.001.03 or .09, or format = \"layout\")".into()),
        _ => Err(format!(
            "several payment-file targets ({}); name one with --target",
            found.iter().map(|f| f.op.to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// A batch as its bank's file.
pub async fn render(
    cfg: &Config,
    store: &Store,
    batch: &BatchRow,
    format: &BankFormat,
) -> Result<Vec<u8>, String> {
    let payments = store
        .batch_payments(&batch.batch_id)
        .await
        .map_err(|e| e.to_string())?;
    match format {
        BankFormat::Pain(v) => render_pain(cfg, batch, &payments, *v),
        BankFormat::Layout(l) => render_layout(cfg, batch, &payments, l),
    }
}

/// A batch in a bank's layout: the header, one detail line per payment in
/// the batch's order, the trailer.
pub fn render_layout(
    cfg: &Config,
    batch: &BatchRow,
    payments: &[PaymentRow],
    layout: &Layout,
) -> Result<Vec<u8>, String> {
    let p = &cfg.hub.payouts;
    let date = batch.created.get(..10).unwrap_or_default().replace('-', "");
    let execution_date = format!("{}{:02}", batch.period.replace('-', ""), p.execution_day);
    let group = |k: &str| -> Option<String> {
        Some(match k {
            "batch_id" => batch.batch_id.clone(),
            "period" => batch.period.clone(),
            "created" => batch.created.clone(),
            "date" => date.clone(),
            "execution_date" => execution_date.clone(),
            "count" => batch.count.to_string(),
            "total_fen" => batch.total_fen.to_string(),
            "total" => crate::formats::pain::amount(batch.total_fen),
            "debtor_account" => p.debtor_account.clone(),
            "debtor_name" => p.debtor_name.clone(),
            "debtor_bank" => p.debtor_bank.clone(),
            "initiator" => p.initiator.clone(),
            _ => return None,
        })
    };
    let err = |e: String| format!("batch {}: {e}", batch.batch_id);
    let mut out = Vec::with_capacity(payments.len() * 160 + 256);
    let mut line = 1;
    if !layout.payments.header.is_empty() {
        layout
            .write_line(&layout.payments.header, line, &group, &mut out)
            .map_err(err)?;
        line += 1;
    }
    for (i, pay) in payments.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_slice(&pay.record)
            .map_err(|e| format!("payment {}: {e}", pay.payment_id))?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let detail = |k: &str| -> Option<String> {
            Some(match k {
                "seq" => (i + 1).to_string(),
                "payment_id" => pay.payment_id.clone(),
                "creditor_account" => s("creditor_account"),
                "creditor_name" => s("creditor_name"),
                "bank_code" => pay.bank_code.clone(),
                "amount_fen" => pay.amount_fen.to_string(),
                "amount" => crate::formats::pain::amount(pay.amount_fen),
                "remittance" => s("remittance_info"),
                _ => return None,
            })
        };
        layout
            .write_line(&layout.payments.detail, line, &detail, &mut out)
            .map_err(|e| err(format!("payment {}: {e}", pay.payment_id)))?;
        line += 1;
    }
    if !layout.payments.trailer.is_empty() {
        layout
            .write_line(&layout.payments.trailer, line, &group, &mut out)
            .map_err(err)?;
    }
    Ok(out)
}

/// A batch as a pain.001 document: one payment block from the payer's
/// account, the transfers in the batch's order.
pub fn render_pain(
    cfg: &Config,
    batch: &BatchRow,
    payments: &[PaymentRow],
    version: Version,
) -> Result<Vec<u8>, String> {
    let p = &cfg.hub.payouts;
    let mut w = Pain001Writer::start(
        Vec::with_capacity(payments.len() * 420 + 1024),
        version,
        GroupHeader {
            msg_id: batch.batch_id.clone(),
            created: batch.created.clone(),
            count: batch.count,
            total_fen: batch.total_fen,
            initiator: p.initiator.clone(),
        },
    )
    .map_err(|e| e.to_string())?;
    w.block(PaymentBlock {
        id: batch.batch_id.clone(),
        execution_date: format!("{}-{:02}", batch.period, p.execution_day),
        debtor_name: p.debtor_name.clone(),
        debtor_account: p.debtor_account.clone(),
        debtor_bank: p.debtor_bank.clone(),
        count: batch.count,
        total_fen: batch.total_fen,
    })
    .map_err(|e| e.to_string())?;
    for pay in payments {
        let v: serde_json::Value = serde_json::from_slice(&pay.record)
            .map_err(|e| format!("payment {}: {e}", pay.payment_id))?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        w.transfer(&Transfer {
            end_to_end_id: pay.payment_id.clone(),
            amount_fen: pay.amount_fen,
            creditor_name: s("creditor_name"),
            creditor_account: s("creditor_account"),
            creditor_bank: Some(pay.bank_code.clone()),
            remittance: s("remittance_info"),
        })
        .map_err(|e| format!("batch {}: {e}", batch.batch_id))?;
    }
    w.finish()
        .map_err(|e| format!("batch {}: {e}", batch.batch_id))
}

/// What [`build`] did with one batch.
#[derive(Debug)]
pub struct Built {
    /// The batch.
    pub batch: BatchRow,
    /// Its file.
    pub file: PathBuf,
    /// Made by this build (else an earlier build made it).
    pub new: bool,
    /// Its file was written now (new, or missing after a crash).
    pub written: bool,
}

/// `tongban payouts build`: batches every unbatched payment of `period`,
/// then writes the file of every live batch of the period whose file was
/// never written (a crash between making a batch and writing its file
/// leaves such a batch), and of the batch `resend` names (a file the bank
/// lost). Files are byte-identical however often they are written; a file
/// the bank already read is refused by it as a duplicate (AM05).
pub async fn build(
    cfg: &Config,
    store: &Store,
    period: &str,
    target: Option<&str>,
    resend: Option<&str>,
) -> Result<Vec<Built>, String> {
    if let Err(e) = crate::schema::Format::Period.check(period) {
        return Err(format!("period {period:?}: {e}"));
    }
    let bank = bank_target(cfg, target)?;
    let dir = &bank.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let created = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8"))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let e = |e: crate::store::StoreError| e.to_string();
    let new: std::collections::HashSet<String> = store
        .build_batches(period, cfg.hub.payouts.max_per_file, &created)
        .await
        .map_err(e)?
        .into_iter()
        .map(|b| b.batch_id)
        .collect();
    let batches = store.batches(period).await.map_err(e)?;
    if let Some(r) = resend {
        if !batches.iter().any(|b| b.batch_id == r) {
            return Err(format!("there is no live batch {r} in {period}"));
        }
    }
    let mut out = Vec::new();
    for batch in batches {
        let name = bank.file_name(&batch);
        let file = dir.join(&name);
        let earlier = store.written(&batch.batch_id).await.map_err(e)?;
        let written = earlier.is_none() || resend == Some(batch.batch_id.as_str());
        if written {
            let bytes = render(cfg, store, &batch, &bank.format).await?;
            let digest = crate::connectors::file::sha256_hex(&bytes);
            if let Some(before) = &earlier {
                if before != &digest {
                    return Err(format!(
                        "batch {}: its file would differ from the one sent (SHA-256 {before}); not sent",
                        batch.batch_id
                    ));
                }
            }
            crate::connectors::file::write_with_checksum(dir, &name, &bytes)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            store
                .mark_written(&batch.batch_id, &digest)
                .await
                .map_err(e)?;
        }
        out.push(Built {
            new: new.contains(&batch.batch_id),
            batch,
            file,
            written,
        });
    }
    Ok(out)
}

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
fn refusal(code: &str) -> &'static str {
    match code {
        "AM05" => "the bank refused the file as a duplicate",
        "FF01" => "the bank refused the file: invalid file format or totals",
        _ => "the bank refused the file",
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
) -> Result<Reconciled, String> {
    let mut out = Reconciled {
        batch_id: report.original_msg_id.clone(),
        ..Reconciled::default()
    };
    let e = |e: crate::store::StoreError| e.to_string();
    let Some(batch) = store.batch(&report.original_msg_id).await.map_err(e)? else {
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
                    .map(|(k, d)| (out.batch_id.clone(), k.clone(), d.clone()))
                    .collect(),
            )
            .await
            .map_err(e)?;
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
    let payments: std::collections::HashMap<String, PaymentRow> = store
        .batch_payments(&batch.batch_id)
        .await
        .map_err(e)?
        .into_iter()
        .map(|p| (p.payment_id.clone(), p))
        .collect();
    let today = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8"))
        .date_naive()
        .to_string();
    let mut results = Vec::with_capacity(txs.len());
    for tx in txs {
        let Some(p) = payments.get(&tx.end_to_end_id) else {
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
                out.accepted.1 += p.amount_fen;
            }
            "REJECTED" => {
                out.rejected.0 += 1;
                out.rejected.1 += p.amount_fen;
            }
            _ => out.pending += 1,
        }
        results.push((p.payment_id.clone(), result.to_string(), tx.reason.clone()));
        out.results.push(
            serde_json::to_vec(&serde_json::json!({
                "payment_id": p.payment_id,
                "batch_id": batch.batch_id,
                "status": result,
                "reason_code": tx.reason,
                "amount_fen": p.amount_fen,
                "settled_on": if result == "ACCEPTED" { serde_json::json!(today) } else { serde_json::Value::Null },
            }))
            .unwrap_or_default(),
        );
    }
    store.set_results(results).await.map_err(e)?;
    store
        .raise_alarms(
            out.alarms
                .iter()
                .map(|(k, d)| (batch.batch_id.clone(), k.clone(), d.clone()))
                .collect(),
        )
        .await
        .map_err(e)?;
    Ok(out)
}
