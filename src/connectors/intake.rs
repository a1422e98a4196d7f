//! The one path from any source into the store: a record as it arrived
//! (JSON, XML or Avro single-object encoded) is read against the source
//! operation's schema, run through every feed of that operation, and stored
//! with its messages, quarantine rows and cursor in one transaction.
//!
//! JSON records are kept in the inbox exactly as received. XML and Avro
//! records are kept in their canonical JSON form (read losslessly against
//! the schema), so that a replay re-mapped reads every stored record the
//! same way. A record that cannot be read at all is kept as received and
//! quarantined for every feed with the reason.

use crate::config::{BodyFormat, Config, OpRef};
use crate::connectors::BuildError;
use crate::pipeline::Pipeline;
use crate::pipeline::PipelineError;
use crate::schema::encode_json;
use crate::schema::AvroCodec;
use crate::store::{Ingest, IngestOutcome, NonceUse, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A source operation's way into the store.
pub struct Intake {
    pipeline: Pipeline<'static>,
    store: Arc<Store>,
    format: BodyFormat,
    avro: Option<AvroCodec>,
}

impl Intake {
    /// The intake of `source` (`connector.operation`), which at least one
    /// mapping must read.
    pub fn new(
        cfg: &'static Config,
        store: Arc<Store>,
        source: &OpRef,
    ) -> Result<Self, BuildError> {
        let pipeline = Pipeline::new(cfg, &source.to_string())?;
        let op = cfg
            .operation(source)
            .ok_or_else(|| PipelineError::NoOperation(source.to_string()))?;
        let avro = match op.format {
            BodyFormat::Avro => {
                let schema = cfg
                    .schemas
                    .get(op.schema.get_ref())
                    .ok_or_else(|| BuildError::NoSchema(op.schema.get_ref().clone()))?;
                Some(AvroCodec::new(schema.clone()))
            }
            _ => None,
        };
        Ok(Intake {
            pipeline,
            store,
            format: op.format,
            avro,
        })
    }

    /// The source operation.
    pub fn source(&self) -> &OpRef {
        self.pipeline.source()
    }

    /// The source operation's record type.
    pub fn source_type(&self) -> &crate::schema::Type {
        self.pipeline.source_type()
    }

    /// A record that cannot be read, kept as received and quarantined for
    /// every feed with `reason`.
    pub fn unreadable(
        &self,
        raw: &[u8],
        id: Option<String>,
        reason: &str,
        cursor: Option<String>,
    ) -> Ingest {
        self.pipeline.unreadable(raw, id, reason, cursor)
    }

    /// The store records go to.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// One record as received, ready for [`Intake::commit`]. `fallback_id`
    /// is the record's id when its operation has no `id_field` (a file's
    /// digest and line, a Kafka partition and offset).
    pub fn prepare(
        &self,
        raw: &[u8],
        fallback_id: Option<String>,
        cursor: Option<String>,
    ) -> Ingest {
        let ty = self.pipeline.source_type();
        match self.format {
            BodyFormat::Json | BodyFormat::Pain002 | BodyFormat::Layout => {
                self.pipeline.record_as(raw, fallback_id, cursor)
            }
            BodyFormat::Xml => {
                let read = std::str::from_utf8(raw)
                    .map_err(|e| format!("not UTF-8 (byte {})", e.valid_up_to()))
                    .and_then(|doc| {
                        crate::formats::xml::document_to_json(doc, ty).map_err(|e| e.to_string())
                    });
                match read {
                    Ok(v) => {
                        let json = serde_json::to_vec(&v).unwrap_or_default();
                        self.pipeline.record_as(&json, fallback_id, cursor)
                    }
                    Err(e) => self.pipeline.unreadable(
                        raw,
                        fallback_id,
                        &format!("not a readable XML record: {e}"),
                        cursor,
                    ),
                }
            }
            BodyFormat::Avro => {
                let codec = self.avro.as_ref().expect("Avro operations have a codec");
                match codec.decode(raw) {
                    Ok(d) => {
                        let mut json = Vec::with_capacity(raw.len() * 2);
                        encode_json(&d, ty, &mut json);
                        self.pipeline.record_as(&json, fallback_id, cursor)
                    }
                    Err(e) => self
                        .pipeline
                        .unreadable(raw, fallback_id, &e.to_string(), cursor),
                }
            }
        }
    }

    /// Stores a batch in one transaction.
    pub async fn commit(&self, batch: Vec<Ingest>) -> Result<IngestOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(IngestOutcome::default());
        }
        self.store.ingest(batch).await
    }
}

/// A record waiting for its group commit, the nonce of its request, and
/// who to tell.
struct Pending {
    ingest: Ingest,
    nonce: Option<NonceUse>,
    answer: oneshot::Sender<Result<IngestOutcome, IngestError>>,
}

/// Why a group-committed record was not stored.
#[derive(Clone, Debug, thiserror::Error)]
pub enum IngestError {
    /// The batch's transaction failed (every record in it hears this).
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The committing task is gone (the hub is stopping).
    #[error("the store writer has stopped")]
    Stopped,
    /// The request's nonce was used before within the window (by this hub
    /// or another on the same store, before or after a restart).
    #[error("this nonce was already used: a replayed request")]
    Replayed,
}

/// Group commit for sources that receive one record per request
/// (webhooks): requests that arrive together share one transaction, so a
/// burst costs one disk flush, not one per request. Each caller learns
/// only once its record is durable.
///
/// A signed request's nonce is recorded in the store, for the whole group
/// in one transaction, before its record is: a request whose nonce was seen
/// within the window is answered [`IngestError::Replayed`] and its record
/// is not stored; a record the store then fails to take has its nonce
/// forgotten again, so the sender may retry the same request.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts the committing task; it ends when every handle is dropped.
    /// Nonces are kept for twice `window`.
    pub fn start(store: Arc<Store>, max_batch: usize, window: Duration) -> GroupCommit {
        let (tx, mut rx) = mpsc::channel::<Pending>(max_batch * 4);
        let window_ms = window.as_millis() as i64;
        tokio::spawn(async move {
            let mut buf: Vec<Pending> = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut buf, max_batch).await > 0 {
                let now = crate::store::now_ms();
                let group = std::mem::replace(&mut buf, Vec::with_capacity(max_batch));
                let (signed, uses): (Vec<usize>, Vec<NonceUse>) = group
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.nonce.clone().map(|n| (i, n)))
                    .unzip();
                let mut fresh = vec![true; group.len()];
                match store.first_use_nonces(uses.clone(), now, window_ms).await {
                    Ok(first) => {
                        for (i, f) in signed.iter().zip(first) {
                            fresh[*i] = f;
                        }
                    }
                    Err(e) => {
                        let e = IngestError::Store(Arc::new(e));
                        for p in group {
                            let _ = p.answer.send(Err(e.clone()));
                        }
                        continue;
                    }
                }
                let mut batch = Vec::with_capacity(group.len());
                let mut waiters = Vec::with_capacity(group.len());
                let mut taken = Vec::new();
                for (p, fresh) in group.into_iter().zip(fresh) {
                    if !fresh {
                        let _ = p.answer.send(Err(IngestError::Replayed));
                        continue;
                    }
                    taken.extend(p.nonce);
                    batch.push(p.ingest);
                    waiters.push(p.answer);
                }
                if batch.is_empty() {
                    continue;
                }
                let result = store
                    .ingest(batch)
                    .await
                    .map_err(|e| IngestError::Store(Arc::new(e)));
                if result.is_err() {
                    if let Err(e) = store.forget_nonces(taken, now).await {
                        tracing::warn!(error = %e, "Nonces of requests not stored were not forgotten");
                    }
                }
                for w in waiters {
                    // Each waiter hears the batch's outcome; a caller that
                    // went away no longer listens, which is fine.
                    let _ = w.send(result.clone());
                }
            }
        });
        GroupCommit { tx }
    }

    /// Stores one record; returns once it is durable (or failed). With a
    /// nonce, the record is stored only if the nonce is new.
    pub async fn commit(
        &self,
        ingest: Ingest,
        nonce: Option<NonceUse>,
    ) -> Result<IngestOutcome, IngestError> {
        let (answer, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                ingest,
                nonce,
                answer,
            })
            .await
            .map_err(|_| IngestError::Stopped)?;
        rx.await.map_err(|_| IngestError::Stopped)?
    }
}
