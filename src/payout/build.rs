//! Batches: `tongban payouts build` makes them, queues their files on the
//! bank's files target and says where each file stands.

use super::*;

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
) -> Result<Plan, PayoutError> {
    if let Err(reason) = crate::schema::Format::Period.check(period) {
        return Err(PayoutError::Period {
            period: period.to_string(),
            reason,
        });
    }
    let bank = bank_target(cfg, target)?;
    let created = crate::domain::china_now()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let new: std::collections::HashSet<String> = store
        .build_batches(period, cfg.hub.payouts.max_per_file, &created)
        .await?
        .into_iter()
        .map(|b| b.batch_id)
        .collect();
    let batches = store.batches(period).await?;
    if let Some((r, _, _)) = resend {
        if !batches.iter().any(|b| b.batch_id == r) {
            return Err(PayoutError::NoLiveBatch {
                batch: r.to_string(),
                period: period.to_string(),
            });
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
                idem_key: None,
            }],
            quarantine: Vec::new(),
            cursor: None,
        }
    };
    for b in &batches {
        if store.written(&b.batch_id).await?.is_some() {
            sent_before.insert(b.batch_id.clone());
            if let Some((r, actor, reason)) = resend {
                if r == b.batch_id {
                    store
                        .note(actor, "resend_file", &format!("batch {r}"), reason)
                        .await?;
                    let id = format!("{r}/resend/{}", crate::store::now_ms());
                    queue.push(message(b, id, true));
                }
            }
        } else {
            queue.push(message(b, b.batch_id.clone(), false));
        }
    }
    let queued = store.ingest(queue).await?.messages;
    Ok(Plan {
        bank,
        batches,
        new,
        sent_before,
        queued,
    })
}

/// The batch a files-target message is for.
pub(super) fn batch_of(m: &crate::store::MessageRow) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
    v["batch_id"].as_str().map(str::to_string)
}

/// Ids of the files target's delivered messages.
pub async fn delivered_ids(
    store: &Store,
    target: &str,
) -> Result<std::collections::HashSet<i64>, PayoutError> {
    Ok(store
        .messages(target, crate::store::status::DELIVERED, usize::MAX >> 1)
        .await?
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
) -> Result<(), PayoutError> {
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
            .await?;
        if pending.iter().all(|m| m.attempts > 0) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    Ok(task
        .await
        .map_err(|e| PayoutError::Dispatcher(e.to_string()))??)
}

/// Where each batch's file stands, after [`deliver_now`]: `before` holds the
/// files target's delivered messages from before it ran.
pub async fn outcome(
    store: &Store,
    plan: &Plan,
    before: &std::collections::HashSet<i64>,
) -> Result<Vec<Built>, PayoutError> {
    use crate::store::status;
    let target = plan.bank.files_target();
    let mut latest: std::collections::HashMap<String, crate::store::MessageRow> =
        std::collections::HashMap::new();
    for st in [status::DELIVERED, status::PENDING, status::DEAD] {
        for m in store.messages(&target, st, usize::MAX >> 1).await? {
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
