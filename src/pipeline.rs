//! A source record through every feed that reads its operation: the
//! messages for the outbox, the quarantine rows for the feeds that could not
//! map it, and its source id, ready for one [`Store::ingest`] transaction.
//!
//! [`Store::ingest`]: crate::store::Store::ingest

use crate::config::{Config, Mapping, OpRef, Rejection};
use crate::mapping::Outcome;
use crate::schema::{encode_json, Datum};
use crate::store::{effect_key, Ingest, NewMessage, Quarantined};
use sha2::{Digest, Sha256};

/// Why a feed cannot be set up, or a stored record not mapped again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// No mapping reads from the source.
    #[error("no mapping reads from {0:?}")]
    NoFeed(String),
    /// The source operation is not configured.
    #[error("no operation {0:?}")]
    NoOperation(String),
    /// No message has the id.
    #[error("there is no message {0}")]
    NoMessage(i64),
    /// Only dead messages are replayed re-mapped.
    #[error("message {id} is {status}, not dead: only dead messages are replayed")]
    NotDead {
        /// The message.
        id: i64,
        /// Its state.
        status: &'static str,
    },
    /// The message's feed is no longer configured.
    #[error("message {id}: its mapping {mapping:?} is no longer configured")]
    MappingGone {
        /// The message.
        id: i64,
        /// Its feed.
        mapping: String,
    },
    /// The inbox has no source record for the message.
    #[error("message {0}: its source record is missing")]
    NoSource(i64),
    /// The current mapping cannot read the source record.
    #[error("message {id}: the current mapping cannot read its source record: {reason}")]
    Unreadable {
        /// The message.
        id: i64,
        /// Why.
        reason: String,
    },
    /// A re-mapped message would change its ordering key.
    #[error("message {0}: the current mapping gives it another ordering key; replay it as is or skip it")]
    OtherKey(i64),
    /// The current mapping filters the record out.
    #[error("message {0}: the current mapping filters its source record out; skip it instead")]
    Filtered(i64),
    /// The current mapping rejects the record.
    #[error("message {id}: the current mapping rejects it: {reason}")]
    Rejected {
        /// The message.
        id: i64,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The feeds of one source operation.
pub struct Pipeline<'c> {
    source: OpRef,
    feeds: Vec<&'c Mapping>,
    id_field: Option<usize>,
}

impl<'c> Pipeline<'c> {
    /// The pipeline of `source` (`connector.operation`).
    pub fn new(cfg: &'c Config, source: &str) -> Result<Self, PipelineError> {
        let feeds: Vec<&Mapping> = cfg
            .mappings
            .values()
            .filter(|m| m.from.to_string() == source)
            .collect();
        let Some(first) = feeds.first() else {
            return Err(PipelineError::NoFeed(source.to_string()));
        };
        let op = cfg
            .operation(&first.from)
            .ok_or_else(|| PipelineError::NoOperation(source.to_string()))?;
        let id_field = op
            .id_field
            .as_ref()
            .and_then(|f| first.source.record.field_index(f.get_ref()));
        Ok(Pipeline {
            source: first.from.clone(),
            feeds,
            id_field,
        })
    }

    /// Maps one JSON record through every feed. Its source id is its
    /// `id_field`, or else a hash of its bytes.
    pub fn record(&self, raw: &[u8], cursor: Option<String>) -> Ingest {
        self.record_as(raw, None, cursor)
    }

    /// The source operation.
    pub fn source(&self) -> &OpRef {
        &self.source
    }

    /// The source record's type (every feed of a source reads the same schema).
    pub fn source_type(&self) -> &crate::schema::Type {
        self.feeds[0].source_type()
    }

    /// A record that could not even be read (bad XML, an Avro record of
    /// another schema…): stored verbatim and quarantined for every feed with
    /// the reason, so nothing is lost and an operator sees why.
    pub fn unreadable(
        &self,
        raw: &[u8],
        source_id: Option<String>,
        reason: &str,
        cursor: Option<String>,
    ) -> Ingest {
        Ingest {
            source: self.source.to_string(),
            source_id: source_id.unwrap_or_else(|| content_id(raw)),
            record: raw.to_vec(),
            messages: Vec::new(),
            quarantine: self
                .feeds
                .iter()
                .map(|m| Quarantined {
                    mapping: m.name.clone(),
                    part: String::new(),
                    reason: format!("input: {reason}"),
                })
                .collect(),
            cursor,
        }
    }

    /// Maps one JSON record through every feed. Its source id is its
    /// `id_field`, or else `fallback_id` (a file name and line, a Kafka
    /// partition and offset), or else a hash of its bytes.
    pub fn record_as(
        &self,
        raw: &[u8],
        fallback_id: Option<String>,
        cursor: Option<String>,
    ) -> Ingest {
        let mut ingest = Ingest {
            source: self.source.to_string(),
            source_id: String::new(),
            record: raw.to_vec(),
            messages: Vec::new(),
            quarantine: Vec::new(),
            cursor,
        };
        match self.feeds[0].decode_json(raw) {
            Err(r) => {
                ingest.source_id = fallback_id.unwrap_or_else(|| content_id(raw));
                for m in &self.feeds {
                    ingest.quarantine.push(quarantined(m, &r));
                }
            }
            Ok(d) => {
                let from_field = match (&d, self.id_field) {
                    (Datum::Record(fs), Some(i)) => match &fs[i] {
                        Datum::Str(s) => Some(s.to_string()),
                        _ => None,
                    },
                    _ => None,
                };
                ingest.source_id = from_field
                    .or(fallback_id)
                    .unwrap_or_else(|| content_id(raw));
                for m in &self.feeds {
                    match m.apply(&d) {
                        Ok(Outcome::Mapped {
                            key,
                            record,
                            idempotency,
                        }) => {
                            let mut payload = Vec::with_capacity(256);
                            encode_json(&record, m.target_type(), &mut payload);
                            let target = m.to.to_string();
                            ingest.messages.push(NewMessage {
                                mapping: m.name.clone(),
                                idem_key: idempotency.map(|e| effect_key(&target, &e)),
                                target,
                                key: key.to_string(),
                                payload,
                            });
                        }
                        Ok(Outcome::Filtered) => {}
                        Err(r) => ingest.quarantine.push(quarantined(m, &r)),
                    }
                }
            }
        }
        ingest
    }
}

fn quarantined(m: &Mapping, r: &Rejection) -> Quarantined {
    Quarantined {
        mapping: m.name.clone(),
        part: r.part.clone(),
        reason: r.to_string(),
    }
}

/// A record's id when its source gives none: a hash of its bytes.
pub fn content_id(raw: &[u8]) -> String {
    let d = Sha256::digest(raw);
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A dead message's payload as its mapping makes it now, from its stored
/// source record: the message and the new payload. Refused when the message
/// is not dead, when the current mapping rejects or filters the record, or
/// when it would give the record another ordering key.
pub async fn remap(
    cfg: &Config,
    store: &crate::store::Store,
    id: i64,
) -> Result<(crate::store::MessageRow, Vec<u8>), PipelineError> {
    let msg = store
        .message(id)
        .await?
        .ok_or(PipelineError::NoMessage(id))?;
    if msg.status != crate::store::status::DEAD {
        return Err(PipelineError::NotDead {
            id,
            status: crate::store::status_name(msg.status),
        });
    }
    let mapping = cfg
        .mappings
        .get(&msg.mapping)
        .ok_or_else(|| PipelineError::MappingGone {
            id,
            mapping: msg.mapping.clone(),
        })?;
    let record = store
        .source_of(id)
        .await?
        .ok_or(PipelineError::NoSource(id))?
        .record;
    let datum = mapping
        .decode_json(&record)
        .map_err(|r| PipelineError::Unreadable {
            id,
            reason: r.to_string(),
        })?;
    let payload = match mapping.apply(&datum) {
        Ok(Outcome::Mapped { key, record, .. }) => {
            if key.as_str() != msg.key {
                return Err(PipelineError::OtherKey(id));
            }
            let mut payload = Vec::with_capacity(256);
            encode_json(&record, mapping.target_type(), &mut payload);
            payload
        }
        Ok(Outcome::Filtered) => return Err(PipelineError::Filtered(id)),
        Err(r) => {
            return Err(PipelineError::Rejected {
                id,
                reason: r.to_string(),
            })
        }
    };
    Ok((msg, payload))
}

/// Replays a dead message re-mapped ([`remap`]), back at the head of its key
/// with the new payload (audited as `replay_remapped`).
pub async fn replay_remapped(
    cfg: &Config,
    store: &crate::store::Store,
    id: i64,
    actor: &str,
    reason: &str,
) -> Result<(), PipelineError> {
    let (_, payload) = remap(cfg, store, id).await?;
    Ok(store.replay(id, Some(payload), actor, reason).await?)
}

/// What [`remap_quarantine`] found.
#[derive(Debug, Default)]
pub struct Remapped {
    /// Records the feed now maps (queued, unless a dry run).
    pub mapped: usize,
    /// Records the feed now filters out (resolved without a message).
    pub filtered: usize,
    /// Records the feed still cannot map: quarantine id and reason.
    pub failing: Vec<(i64, String)>,
    /// Rows resolved (0 on a dry run).
    pub resolved: usize,
}

/// Maps quarantined records again with the feeds as configured now (after
/// a mapping fix): those that map are queued as messages, those now
/// filtered out are resolved, the others stay with their new reason. Up to
/// `limit` rows of `source` (and `mapping`) at a time. `apply` is the
/// operator and reason (one audit row); without it, a dry run.
pub async fn remap_quarantine(
    cfg: &Config,
    store: &crate::store::Store,
    source: Option<&str>,
    mapping: Option<&str>,
    limit: usize,
    apply: Option<(&str, &str)>,
) -> Result<Remapped, PipelineError> {
    let rows = store.quarantined(source, mapping, limit).await?;
    let mut out = Remapped::default();
    let mut items = Vec::new();
    for q in rows {
        let Some(m) = cfg.mappings.get(&q.mapping) else {
            out.failing.push((
                q.id,
                format!("the feed {:?} is no longer configured", q.mapping),
            ));
            continue;
        };
        let datum = match m.decode_json(&q.record) {
            Ok(d) => d,
            Err(r) => {
                out.failing.push((q.id, r.to_string()));
                continue;
            }
        };
        match m.apply(&datum) {
            Ok(Outcome::Mapped {
                key,
                record,
                idempotency,
            }) => {
                let mut payload = Vec::with_capacity(256);
                encode_json(&record, m.target_type(), &mut payload);
                out.mapped += 1;
                let target = m.to.to_string();
                items.push((
                    q.id,
                    Some(NewMessage {
                        mapping: m.name.clone(),
                        idem_key: idempotency.map(|e| effect_key(&target, &e)),
                        target,
                        key: key.to_string(),
                        payload,
                    }),
                ));
            }
            Ok(Outcome::Filtered) => {
                out.filtered += 1;
                items.push((q.id, None));
            }
            Err(r) => out.failing.push((q.id, r.to_string())),
        }
    }
    if let (Some((actor, reason)), false) = (apply, items.is_empty()) {
        out.resolved = store.resolve_quarantine(items, actor, reason).await?;
    }
    Ok(out)
}
