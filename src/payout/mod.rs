//! Bank payouts: payment instructions (from the two-subsidies system's
//! monthly payout list, mapped by a feed) are recorded once each in the
//! payout register, grouped into batches per bank and period, and delivered
//! to the bank as ISO 20022 pain.001 files (or in the bank's layout) with a
//! checksum, through the outbox like every other delivery.
//!
//! - [`PaymentsSink`] is the sink of the payment target: delivering an
//!   instruction records it in the register (idempotent by payment id).
//! - [`build`] (`tongban payouts build --period YYYY-MM`) makes batches of
//!   every payment of the period that is in no live batch, and puts one
//!   outbox message per batch (its id only) on the files target
//!   (`<connector.operation>/files`, ordered per bank). The store's unique
//!   index keeps a payment out of a second live batch.
//! - [`FilesSink`] delivers those messages: it renders the batch from the
//!   register at delivery time (its content and `CreDtTm` are stored, so
//!   every rendering is byte-identical), refuses to send a file that would
//!   differ from one sent before, and drops it into the bank's directory
//!   (atomically, checksum file last) or uploads it over HTTP. Retries,
//!   dead letters, pauses and replays are the outbox's.

use crate::config::hub::PayoutsConfig;
use crate::config::{Config, ConnectorKind, OpRef};
use crate::dispatch::failure::DeliveryError;
use crate::dispatch::{Delivered, Sink};
use crate::formats::layout::Layout;
use crate::formats::pain::{GroupHeader, Pain001Writer, PaymentBlock, Transfer, Version};
use crate::store::{BatchRow, Claimed, PaymentRow, Store};
use futures::future::BoxFuture;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Records payment instructions in the payout register.
pub struct PaymentsSink {
    store: Arc<dyn crate::store::Register>,
}

impl PaymentsSink {
    /// A sink writing into `store`'s register.
    pub fn new(store: Arc<dyn crate::store::Register>) -> Self {
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

/// Where a bank's payment files go.
#[derive(Clone, Debug)]
pub enum Destination {
    /// Dropped into this directory (a file connector).
    Dir(PathBuf),
    /// Uploaded to this URL, one request per file (an http connector).
    Upload(String),
}

/// A bank's payment-file target.
#[derive(Clone, Debug)]
pub struct BankTarget {
    /// The sink operation (its messages are the payment instructions).
    pub op: OpRef,
    /// Where its files go.
    pub dest: Destination,
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

    /// The outbox target of its batch files.
    pub fn files_target(&self) -> String {
        files_target(&self.op)
    }

    /// Where a batch's file goes, in words.
    pub fn place(&self, batch: &BatchRow) -> String {
        match &self.dest {
            Destination::Dir(d) => d.join(self.file_name(batch)).display().to_string(),
            Destination::Upload(u) => format!("{u} as {}", self.file_name(batch)),
        }
    }
}

/// The outbox target of a payment target's batch files.
pub fn files_target(op: &OpRef) -> String {
    format!("{op}/files")
}

/// Whether a connector's operation is a payment-file target (a file or http
/// sink writing pain.001 or a bank layout), and how.
pub fn bank_format(c: &crate::config::Connector, op_name: &str) -> Option<BankFormat> {
    let op = c.spec.operations.get(op_name)?.get_ref();
    if !matches!(c.spec.kind, ConnectorKind::File | ConnectorKind::Http)
        || op.direction != crate::config::connector::Direction::Sink
    {
        return None;
    }
    if let Some(v) = pain_version(op) {
        return Some(BankFormat::Pain(v));
    }
    c.layouts.get(op_name).cloned().map(BankFormat::Layout)
}

/// The bank's payment-file target: the operation, where its files go and
/// their format. With several, `name` picks one.
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
                    let dest = match c.spec.kind {
                        ConnectorKind::Http => Destination::Upload(c.spec.url(op)),
                        _ => Destination::Dir(
                            cfg.dir
                                .join(c.spec.directory.as_deref().unwrap_or("."))
                                .join(op.path.as_deref().unwrap_or("out")),
                        ),
                    };
                    found.push(BankTarget {
                        op: r,
                        dest,
                        format,
                    });
                }
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err("no file or http connector operation takes payment files (xml_namespace urn:iso:std:iso:20022:tech:xsd:pain.001.001.03 or .09, or format = \"layout\")".into()),
        _ => Err(format!(
            "several payment-file targets ({}); name one with --target",
            found.iter().map(|f| f.op.to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Why a payout step failed: its reason, a store error as its text (the
/// error type [`Store::each_batch_payment`] is called with here).
struct Reason(String);

impl From<crate::store::StoreError> for Reason {
    fn from(e: crate::store::StoreError) -> Self {
        Reason(e.to_string())
    }
}

/// A batch as its bank's file, in memory.
pub async fn render(
    p: &PayoutsConfig,
    store: &Store,
    batch: &BatchRow,
    format: &BankFormat,
) -> Result<Vec<u8>, String> {
    render_to(p, store, batch, format, Vec::new()).await
}

/// A batch as its bank's file, written to `out` as the register is read
/// (a page of payments at a time): a file of any size is rendered in the
/// memory of one page.
pub async fn render_to<W: Write>(
    p: &PayoutsConfig,
    store: &Store,
    batch: &BatchRow,
    format: &BankFormat,
    out: W,
) -> Result<W, String> {
    let mut file = BatchFile::start(p, batch, format, out)?;
    store
        .each_batch_payment(&batch.batch_id, |pay| file.payment(&pay).map_err(Reason))
        .await
        .map_err(|Reason(r)| r)?;
    file.finish()
}

/// A batch's file as it is written, payment by payment: a pain.001
/// document (one payment block from the payer's account, the transfers in
/// the batch's order) or the bank's layout (the header, one detail line per
/// payment, the trailer).
pub struct BatchFile<'a, W: Write> {
    p: &'a PayoutsConfig,
    batch: &'a BatchRow,
    form: Form<'a, W>,
    /// Payments written.
    written: usize,
}

enum Form<'a, W: Write> {
    Pain(Box<Pain001Writer<W>>),
    Layout(LayoutFile<'a, W>),
}

/// A file in a bank's layout, as it is written.
struct LayoutFile<'a, W> {
    layout: &'a Layout,
    out: W,
    /// The line being written.
    buf: Vec<u8>,
    /// The next line's number.
    line: usize,
}

impl<W: Write> LayoutFile<'_, W> {
    /// One line: `fields`, their values from `get`.
    fn line(
        &mut self,
        fields: &[crate::formats::layout::Field],
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        self.buf.clear();
        self.layout
            .write_line(fields, self.line, get, &mut self.buf)?;
        self.out.write_all(&self.buf).map_err(|e| e.to_string())?;
        self.line += 1;
        Ok(())
    }
}

impl<'a, W: Write> BatchFile<'a, W> {
    /// The file's beginning, written to `out`.
    pub fn start(
        p: &'a PayoutsConfig,
        batch: &'a BatchRow,
        format: &'a BankFormat,
        out: W,
    ) -> Result<Self, String> {
        let form = match format {
            BankFormat::Pain(version) => {
                let mut w = Pain001Writer::start(
                    out,
                    *version,
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
                Form::Pain(Box::new(w))
            }
            BankFormat::Layout(layout) => {
                let mut file = LayoutFile {
                    layout,
                    out,
                    buf: Vec::with_capacity(256),
                    line: 1,
                };
                if !layout.payments.header.is_empty() {
                    file.line(&layout.payments.header, &Self::group(p, batch))
                        .map_err(|e| format!("batch {}: {e}", batch.batch_id))?;
                }
                Form::Layout(file)
            }
        };
        Ok(BatchFile {
            p,
            batch,
            form,
            written: 0,
        })
    }

    /// The values a layout's header and trailer may name.
    fn group(p: &'a PayoutsConfig, batch: &'a BatchRow) -> impl Fn(&str) -> Option<String> + 'a {
        move |k: &str| -> Option<String> {
            Some(match k {
                "batch_id" => batch.batch_id.clone(),
                "period" => batch.period.clone(),
                "created" => batch.created.clone(),
                "date" => batch.created.get(..10).unwrap_or_default().replace('-', ""),
                "execution_date" => {
                    format!("{}{:02}", batch.period.replace('-', ""), p.execution_day)
                }
                "count" => batch.count.to_string(),
                "total_fen" => batch.total_fen.to_string(),
                "total" => crate::formats::pain::amount(batch.total_fen),
                "debtor_account" => p.debtor_account.clone(),
                "debtor_name" => p.debtor_name.clone(),
                "debtor_bank" => p.debtor_bank.clone(),
                "initiator" => p.initiator.clone(),
                _ => return None,
            })
        }
    }

    /// The next payment in the batch's order.
    pub fn payment(&mut self, pay: &PaymentRow) -> Result<(), String> {
        let v: serde_json::Value = serde_json::from_slice(&pay.record)
            .map_err(|e| format!("payment {}: {e}", pay.payment_id))?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        self.written += 1;
        let batch_id = &self.batch.batch_id;
        match &mut self.form {
            Form::Pain(w) => w
                .transfer(&Transfer {
                    end_to_end_id: pay.payment_id.clone(),
                    amount_fen: pay.amount_fen,
                    creditor_name: s("creditor_name"),
                    creditor_account: s("creditor_account"),
                    creditor_bank: Some(pay.bank_code.clone()),
                    remittance: s("remittance_info"),
                })
                .map_err(|e| format!("batch {batch_id}: {e}")),
            Form::Layout(file) => {
                let seq = self.written;
                let detail = |k: &str| -> Option<String> {
                    Some(match k {
                        "seq" => seq.to_string(),
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
                file.line(&file.layout.payments.detail, &detail)
                    .map_err(|e| format!("batch {batch_id}: payment {}: {e}", pay.payment_id))
            }
        }
    }

    /// The file's end (a pain.001 checks the count and total it declared);
    /// the writer, flushed.
    pub fn finish(self) -> Result<W, String> {
        let batch_id = &self.batch.batch_id;
        let err = |e: String| format!("batch {batch_id}: {e}");
        let mut out = match self.form {
            Form::Pain(w) => w.finish().map_err(|e| err(e.to_string()))?,
            Form::Layout(mut file) => {
                if !file.layout.payments.trailer.is_empty() {
                    file.line(
                        &file.layout.payments.trailer,
                        &Self::group(self.p, self.batch),
                    )
                    .map_err(err)?;
                }
                file.out
            }
        };
        out.flush().map_err(|e| err(e.to_string()))?;
        Ok(out)
    }
}

/// Where a batch's file stands after `payouts build`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Delivered by this build (written or uploaded).
    Sent,
    /// Delivered before this build.
    SentEarlier,
    /// In the outbox after a failed attempt (the last error); `tongban run`
    /// goes on trying.
    Waiting(Option<String>),
    /// Dead letter: the reason. Replay it once the cause is fixed.
    Dead(String),
}

/// What `payouts build` did with one batch.
#[derive(Debug)]
pub struct Built {
    /// The batch.
    pub batch: BatchRow,
    /// Where its file goes (a path, or a URL and file name).
    pub place: String,
    /// Made by this build (else an earlier build made it).
    pub new: bool,
    /// Its file.
    pub file: FileState,
}

/// What [`build`] made and queued.
#[derive(Debug)]
pub struct Plan {
    /// The bank's payment-file target.
    pub bank: BankTarget,
    /// The period's live batches.
    pub batches: Vec<BatchRow>,
    /// Those made by this build.
    pub new: std::collections::HashSet<String>,
    /// Those whose file was delivered before this build.
    pub sent_before: std::collections::HashSet<String>,
    /// Messages put on the files target now.
    pub queued: usize,
}

/// The source name of batch records in the inbox.
pub const BATCH_SOURCE: &str = "payouts.batches";

/// `tongban payouts build`: batches every unbatched payment of `period`,
/// and puts one message per batch whose file was never delivered on the
/// files target (a crash between making a batch and queueing its file is
/// mended here: queueing is idempotent by batch id). `resend` (a batch id,
/// the operator and the reason) queues a batch's file once more (the bank
/// lost it); audited. The file is the same, byte for byte, and a bank that
/// had read it refuses it as a duplicate (AM05).
pub async fn build(
    cfg: &Config,
    store: &Store,
    period: &str,
    target: Option<&str>,
    resend: Option<(&str, &str, &str)>,
) -> Result<Plan, String> {
    if let Err(e) = crate::schema::Format::Period.check(period) {
        return Err(format!("period {period:?}: {e}"));
    }
    let bank = bank_target(cfg, target)?;
    let created = crate::domain::china_now()
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
    if let Some((r, _, _)) = resend {
        if !batches.iter().any(|b| b.batch_id == r) {
            return Err(format!("there is no live batch {r} in {period}"));
        }
    }
    let mut sent_before = std::collections::HashSet::new();
    let mut queue = Vec::new();
    let message = |b: &BatchRow, source_id: String, resend: bool| {
        let record = serde_json::json!({
            "batch_id": b.batch_id, "period": b.period, "bank_code": b.bank_code,
            "count": b.count, "total_fen": b.total_fen, "resend": resend,
        });
        crate::store::Ingest {
            source: BATCH_SOURCE.into(),
            source_id,
            record: record.to_string().into_bytes(),
            messages: vec![crate::store::NewMessage {
                mapping: "payouts.build".into(),
                target: bank.files_target(),
                key: b.bank_code.clone(),
                payload: serde_json::json!({ "batch_id": b.batch_id, "resend": resend })
                    .to_string()
                    .into_bytes(),
            }],
            quarantine: Vec::new(),
            cursor: None,
        }
    };
    for b in &batches {
        if store.written(&b.batch_id).await.map_err(e)?.is_some() {
            sent_before.insert(b.batch_id.clone());
            if let Some((r, actor, reason)) = resend {
                if r == b.batch_id {
                    store
                        .note(actor, "resend_file", &format!("batch {r}"), reason)
                        .await
                        .map_err(e)?;
                    let id = format!("{r}/resend/{}", crate::store::now_ms());
                    queue.push(message(b, id, true));
                }
            }
        } else {
            queue.push(message(b, b.batch_id.clone(), false));
        }
    }
    let queued = store.ingest(queue).await.map_err(e)?.messages;
    Ok(Plan {
        bank,
        batches,
        new,
        sent_before,
        queued,
    })
}

/// The batch a files-target message is for.
fn batch_of(m: &crate::store::MessageRow) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
    v["batch_id"].as_str().map(str::to_string)
}

/// Ids of the files target's delivered messages.
pub async fn delivered_ids(
    store: &Store,
    target: &str,
) -> Result<std::collections::HashSet<i64>, String> {
    Ok(store
        .messages(target, crate::store::status::DELIVERED, usize::MAX >> 1)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|m| m.id)
        .collect())
}

/// Runs the files target's dispatcher until every message on it has had an
/// attempt (or `wait` is over), then stops it. A running hub may deliver
/// some of them instead: claims are exclusive.
pub async fn deliver_now(
    store: Arc<Store>,
    sink: Arc<dyn Sink>,
    settings: crate::dispatch::TargetSettings,
    wait: std::time::Duration,
) -> Result<(), String> {
    let target = settings.target.clone();
    let (stop, watch) = tokio::sync::watch::channel(false);
    let stats = Arc::new(crate::dispatch::TargetStats::default());
    let task = tokio::spawn(crate::dispatch::run_target(
        store.clone(),
        sink,
        settings,
        stats,
        watch,
    ));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let pending = store
            .messages(&target, crate::store::status::PENDING, 100_000)
            .await
            .map_err(|e| e.to_string())?;
        if pending.iter().all(|m| m.attempts > 0) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    task.await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Where each batch's file stands, after [`deliver_now`]: `before` holds the
/// files target's delivered messages from before it ran.
pub async fn outcome(
    store: &Store,
    plan: &Plan,
    before: &std::collections::HashSet<i64>,
) -> Result<Vec<Built>, String> {
    use crate::store::status;
    let target = plan.bank.files_target();
    let mut latest: std::collections::HashMap<String, crate::store::MessageRow> =
        std::collections::HashMap::new();
    for st in [status::DELIVERED, status::PENDING, status::DEAD] {
        for m in store
            .messages(&target, st, usize::MAX >> 1)
            .await
            .map_err(|e| e.to_string())?
        {
            if let Some(b) = batch_of(&m) {
                if latest.get(&b).is_none_or(|l| l.id < m.id) {
                    latest.insert(b, m);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(plan.batches.len());
    for batch in &plan.batches {
        let file = match latest.get(&batch.batch_id) {
            Some(m) if m.status == status::DEAD => {
                FileState::Dead(m.last_error.clone().unwrap_or_default())
            }
            Some(m) if m.status == status::PENDING => FileState::Waiting(m.last_error.clone()),
            Some(m) if m.status == status::DELIVERED && !before.contains(&m.id) => FileState::Sent,
            _ if plan.sent_before.contains(&batch.batch_id) => FileState::SentEarlier,
            Some(_) => FileState::SentEarlier,
            None => FileState::Waiting(None),
        };
        out.push(Built {
            place: plan.bank.place(batch),
            new: plan.new.contains(&batch.batch_id),
            batch: batch.clone(),
            file,
        });
    }
    Ok(out)
}

/// Delivers batch files: each message on a files target names a batch,
/// which is rendered from the payout register (byte-identical every time),
/// checked against the SHA-256 of any earlier delivery, and dropped into the
/// bank's directory with its checksum file, or uploaded.
pub struct FilesSink {
    store: Arc<Store>,
    payouts: PayoutsConfig,
    bank: BankTarget,
    upload: Option<crate::connectors::http::HttpSink>,
}

impl FilesSink {
    /// A sink for `bank`'s files: `upload` is the client for an http bank
    /// connector (its URL, TLS and authentication).
    pub fn new(
        store: Arc<Store>,
        payouts: PayoutsConfig,
        bank: BankTarget,
        upload: Option<crate::connectors::http::HttpSink>,
    ) -> Self {
        FilesSink {
            store,
            payouts,
            bank,
            upload,
        }
    }

    async fn send(&self, m: &Claimed) -> Result<Delivered, DeliveryError> {
        let v: serde_json::Value = serde_json::from_slice(&m.payload)
            .map_err(|e| DeliveryError::Request(format!("not a batch file message: {e}")))?;
        let id = v["batch_id"]
            .as_str()
            .ok_or_else(|| DeliveryError::Request("the message names no batch_id".into()))?;
        let io =
            |e: crate::store::StoreError| DeliveryError::Io(format!("the payout register: {e}"));
        let batch = self
            .store
            .batch(id)
            .await
            .map_err(io)?
            .ok_or_else(|| DeliveryError::Request(format!("there is no batch {id}")))?;
        // A file made again must be the one sent before, byte for byte.
        let before = self.store.written(id).await.map_err(io)?;
        let same = |digest: &str| match &before {
            Some(before) if before != digest => Err(DeliveryError::Request(format!(
                "batch {id}: its file would differ from the one sent (SHA-256 {before}); not sent"
            ))),
            _ => Ok(()),
        };
        let name = self.bank.file_name(&batch);
        let (delivered, digest) = match (&self.bank.dest, &self.upload) {
            (_, Some(http)) => {
                let bytes = render(&self.payouts, &self.store, &batch, &self.bank.format)
                    .await
                    .map_err(DeliveryError::Request)?;
                let digest = crate::connectors::file::sha256_hex(&bytes);
                same(&digest)?;
                let content_type = match self.bank.format {
                    BankFormat::Pain(_) => "application/xml",
                    BankFormat::Layout(_) => "application/octet-stream",
                };
                let headers = [
                    ("X-File-Name", name.clone()),
                    ("X-Checksum-SHA256", digest.clone()),
                ];
                let mut d = http
                    .upload(bytes, &m.idem_key, &headers, content_type)
                    .await?;
                d.excerpt = Some(format!("uploaded to {} as {name}", http.url()));
                (d, digest)
            }
            (Destination::Dir(dir), None) => {
                // Rendered straight into a dot-file beside its place and
                // hashed as it goes (a file is never held in memory whole),
                // then put in place, and its checksum file after it.
                let failed = |e: String| DeliveryError::Io(format!("{name}: {e}"));
                let tmp = crate::connectors::file::temp_path(dir, &name);
                let file = std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::File::create(&tmp))
                    .map_err(|e| failed(e.to_string()))?;
                let out = crate::connectors::file::Hashing::new(std::io::BufWriter::with_capacity(
                    1 << 16,
                    file,
                ));
                let written =
                    match render_to(&self.payouts, &self.store, &batch, &self.bank.format, out)
                        .await
                    {
                        Ok(out) => {
                            let (w, digest) = out.finish();
                            same(&digest)
                                .and_then(|()| {
                                    w.into_inner().map_err(|e| failed(e.error().to_string()))
                                })
                                .map(|file| (file, digest))
                        }
                        Err(e) => Err(DeliveryError::Request(e)),
                    };
                let (file, digest) = match written {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(e);
                    }
                };
                let (dir, file_name, sum) = (dir.clone(), name.clone(), digest.clone());
                tokio::task::spawn_blocking(move || {
                    crate::connectors::file::place_with_checksum(&dir, &file_name, file, &sum)
                })
                .await
                .map_err(|e| DeliveryError::Io(e.to_string()))?
                .map_err(|e| failed(e.to_string()))?;
                let d = Delivered {
                    status_code: None,
                    excerpt: Some(format!("written to {}", self.bank.place(&batch))),
                };
                (d, digest)
            }
            (Destination::Upload(u), None) => {
                return Err(DeliveryError::Request(format!(
                    "no HTTP client for the upload to {u}"
                )))
            }
        };
        self.store.mark_written(id, &digest).await.map_err(io)?;
        Ok(delivered)
    }
}

impl Sink for FilesSink {
    fn deliver<'a>(&'a self, m: &'a Claimed) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.send(m))
    }
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

    async fn records(&self, name: &str, contents: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let (report, txs) = match &self.layout {
            Some(l) => read_layout_result(l, name, contents)
                .map_err(|e| format!("not a readable result file: {e}"))?,
            None => {
                let mut txs = Vec::new();
                let report = crate::formats::pain::read_pain002(contents, |t| txs.push(t))
                    .map_err(|e| format!("not a readable pain.002: {e}"))?;
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
    ) -> futures::future::BoxFuture<'a, Result<Vec<Vec<u8>>, String>> {
        Box::pin(self.records(name, contents))
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
    // Each payment's amount (the records are not kept).
    let mut payments: std::collections::HashMap<String, i64> =
        std::collections::HashMap::with_capacity(batch.count.max(0) as usize);
    store
        .each_batch_payment(&batch.batch_id, |p| {
            payments.insert(p.payment_id, p.amount_fen);
            Ok::<_, Reason>(())
        })
        .await
        .map_err(|Reason(r)| r)?;
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
        results.push((payment_id.clone(), result.to_string(), tx.reason.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Register, StoreError};
    use std::sync::Mutex;

    /// A register in memory: what the sink recorded.
    #[derive(Default)]
    struct MemRegister(Mutex<Vec<PaymentRow>>);

    impl Register for MemRegister {
        fn record_payments(
            &self,
            rows: Vec<PaymentRow>,
        ) -> BoxFuture<'_, Result<usize, StoreError>> {
            Box::pin(async move {
                let mut all = self.0.lock().unwrap();
                let new = rows
                    .into_iter()
                    .filter(|r| all.iter().all(|a| a.payment_id != r.payment_id))
                    .collect::<Vec<_>>();
                let n = new.len();
                all.extend(new);
                Ok(n)
            })
        }
    }

    fn claimed(id: i64, payload: &str) -> Claimed {
        Claimed {
            id,
            target: "bank.payment_instructions".into(),
            key: format!("k{id}"),
            idem_key: format!("i{id}"),
            payload: payload.as_bytes().to_vec(),
            attempts: 0,
            lease: 1,
        }
    }

    #[tokio::test]
    async fn the_payments_sink_records_each_instruction_once_and_refuses_a_bad_one_for_good() {
        let reg = Arc::new(MemRegister::default());
        let sink = PaymentsSink::new(reg.clone());
        let p = |id: &str, fen: i64| {
            format!(
                r#"{{"payment_id":"{id}","period":"2026-11","creditor_bank_code":"105100000017","amount_fen":{fen}}}"#
            )
        };
        let batch = [
            claimed(1, &p("LIVING-A-2026-11", 41000)),
            claimed(2, &p("CARE-A-2026-11", 30000)),
        ];
        let d = sink.deliver_batch(&batch).await.unwrap();
        assert_eq!(d.excerpt.as_deref(), Some("2 new in the payout register"));
        let again = sink.deliver(&batch[0]).await.unwrap();
        assert_eq!(
            again.excerpt.as_deref(),
            Some("0 new in the payout register")
        );
        let rows = reg.0.lock().unwrap().clone();
        assert_eq!(rows.iter().map(|r| r.amount_fen).sum::<i64>(), 71000);
        let bad = claimed(
            3,
            r#"{"payment_id":"X","period":"2026-11","creditor_bank_code":"1"}"#,
        );
        let e = sink.deliver(&bad).await.unwrap_err();
        assert_eq!(e.class(), crate::dispatch::failure::Class::Permanent, "{e}");
        assert!(e.to_string().contains("no amount_fen"), "{e}");
    }
}
