//! Kafka: topics as sources (a consumer group) and as sinks (an idempotent
//! producer), with values as Avro single-object encoding (the schema's
//! fingerprint in every value, schemas from `schemas/`) or JSON.
//!
//! Source: records are stored in the inbox (with their messages) first, and
//! the consumer's offsets are committed only after that transaction
//! commits; a hub that dies in between reads the same records again, and
//! the inbox keeps each once (its id is its `id_field`, or its topic,
//! partition and offset). A value that cannot be read (an unknown schema
//! fingerprint, bad JSON) is kept and quarantined with the reason.
//!
//! Sink: `enable.idempotence` and `acks=all`; the message key is the
//! ordering key, so one person's messages share a partition and keep their
//! order; headers carry `idempotency-key`, `content-type` and, for Avro,
//! `schema-fingerprint` (16 hex digits, the Rabin fingerprint as the value
//! carries it). A delivery of several messages enqueues them all and waits
//! for every acknowledgement.

pub mod settings;

use crate::connectors::intake::Intake;
use crate::connectors::BuildError;
use crate::dispatch::failure::DeliveryError;
use crate::dispatch::{Delivered, Sink};
use crate::schema::{decode_json, AvroCodec, Type};
use crate::store::Claimed;
use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::TopicPartitionList;
use std::time::Duration;
use tokio::sync::watch;

/// Records per inbox transaction when consuming.
const BATCH: usize = 1000;

/// Whether a producer error may go away by itself.
fn transient(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    !matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessage
                | C::InvalidMessageSize
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidRecord
                | C::UnknownTopic
                | C::InvalidTopic
        )
    )
}

fn broker_error(e: &KafkaError) -> DeliveryError {
    DeliveryError::Broker {
        reason: e.to_string(),
        transient: transient(e),
    }
}

/// Produces each message to a topic.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    /// Avro: the codec and the record type the stored JSON payload has.
    avro: Option<(AvroCodec, Type)>,
    fingerprint: String,
    batch: usize,
}

impl KafkaSink {
    /// A sink producing to `topic` on `brokers`; `avro` for Avro values.
    pub fn new(
        brokers: &str,
        topic: &str,
        avro: Option<(AvroCodec, Type)>,
        batch: usize,
        timeout: Duration,
    ) -> Result<Self, BuildError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .set("client.id", format!("tongban-{}", std::process::id()))
            .create()
            .map_err(|source| BuildError::Kafka {
                what: "producer",
                source,
            })?;
        let fingerprint = avro
            .as_ref()
            .map(|(c, _)| crate::connectors::http::sign::hex(&c.fingerprint()))
            .unwrap_or_default();
        Ok(KafkaSink {
            producer,
            topic: topic.to_string(),
            avro,
            fingerprint,
            batch: batch.max(1),
        })
    }

    /// The value of a message as it goes on the topic.
    fn value(&self, m: &Claimed) -> Result<Vec<u8>, DeliveryError> {
        match &self.avro {
            None => Ok(m.payload.clone()),
            Some((codec, ty)) => {
                let d = decode_json(&m.payload, ty).map_err(|e| {
                    DeliveryError::Request(format!(
                        "the stored record does not fit its schema: {e}"
                    ))
                })?;
                codec
                    .encode(&d)
                    .map_err(|e| DeliveryError::Request(e.to_string()))
            }
        }
    }

    async fn produce(&self, ms: &[Claimed]) -> Result<Delivered, DeliveryError> {
        let mut waits = Vec::with_capacity(ms.len());
        for m in ms {
            let value = self.value(m)?;
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: "idempotency-key",
                    value: Some(m.idem_key.as_bytes()),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some(if self.avro.is_some() {
                        "avro/binary".as_bytes()
                    } else {
                        "application/json".as_bytes()
                    }),
                });
            if self.avro.is_some() {
                headers = headers.insert(Header {
                    key: "schema-fingerprint",
                    value: Some(self.fingerprint.as_bytes()),
                });
            }
            let mut record = FutureRecord::to(&self.topic)
                .key(m.key.as_bytes())
                .payload(&value)
                .headers(headers);
            // Enqueue now (waiting while the local queue is full); the
            // acknowledgements are awaited together below.
            let wait = loop {
                match self.producer.send_result(record) {
                    Ok(f) => break f,
                    Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => return Err(broker_error(&e)),
                }
            };
            waits.push(wait);
        }
        let mut last = None;
        for w in waits {
            match w.await {
                Ok(Ok(d)) => last = Some(d),
                Ok(Err((e, _))) => return Err(broker_error(&e)),
                Err(_) => {
                    return Err(DeliveryError::Broker {
                        reason: "the producer stopped before the broker answered".into(),
                        transient: true,
                    })
                }
            }
        }
        Ok(Delivered {
            status_code: None,
            excerpt: last.map(|d| format!("{d:?}")),
            response_sha256: None,
        })
    }
}

impl Sink for KafkaSink {
    fn deliver<'a>(&'a self, m: &'a Claimed) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.produce(std::slice::from_ref(m)))
    }

    fn max_batch(&self) -> usize {
        self.batch
    }

    fn deliver_batch<'a>(
        &'a self,
        ms: &'a [Claimed],
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.produce(ms))
    }
}

/// Consumes a topic into the inbox.
pub struct KafkaSource {
    intake: Intake,
    consumer: StreamConsumer,
    topic: String,
}

impl KafkaSource {
    /// A consumer in group `group` (default `tongban.<connector>.<operation>`).
    pub fn new(
        intake: Intake,
        brokers: &str,
        topic: &str,
        group: &str,
    ) -> Result<Self, BuildError> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            // A hub that dies gives its partitions up within 10 s.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "2000")
            .set("auto.offset.reset", "earliest")
            .set("client.id", format!("tongban-{}", std::process::id()))
            .create()
            .map_err(|source| BuildError::Kafka {
                what: "consumer",
                source,
            })?;
        consumer
            .subscribe(&[topic])
            .map_err(|source| BuildError::Subscribe {
                topic: topic.to_string(),
                source,
            })?;
        Ok(KafkaSource {
            intake,
            consumer,
            topic: topic.to_string(),
        })
    }

    /// Consumes until `shutdown`: up to 1,000 records per transaction, then
    /// their offsets.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let source = self.intake.source().to_string();
        tracing::info!(source = %source, topic = %self.topic, "Consuming");
        loop {
            let mut batch = Vec::new();
            let mut offsets = TopicPartitionList::new();
            // Wait for a first record, then take what is there within 50 ms.
            let deadline = tokio::time::sleep(Duration::from_secs(3600));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = &mut deadline => break,
                    m = self.consumer.recv() => match m {
                        Err(e) => {
                            tracing::warn!(source = %source, error = %e, "Kafka consumer error");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Ok(m) => {
                            let id = format!("{}:{}:{}", m.topic(), m.partition(), m.offset());
                            let raw = m.payload().unwrap_or_default();
                            batch.push(self.intake.prepare(raw, Some(id), None));
                            let _ = offsets.add_partition_offset(
                                m.topic(),
                                m.partition(),
                                rdkafka::Offset::Offset(m.offset() + 1),
                            );
                            if batch.len() == 1 {
                                deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(50));
                            }
                            if batch.len() >= BATCH {
                                break;
                            }
                        }
                    }
                }
            }
            if !batch.is_empty() {
                let n = batch.len();
                // Store first; commit offsets only once the records are durable.
                let stored = loop {
                    match self.intake.commit(batch.clone()).await {
                        Ok(o) => break o,
                        Err(e) => {
                            tracing::error!(source = %source, error = %e, "Storing consumed records failed; trying again");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                };
                if let Err(e) = self.consumer.commit(&offsets, CommitMode::Sync) {
                    // The records are stored; reading them again is harmless.
                    tracing::warn!(source = %source, error = %e, "Committing offsets failed");
                }
                tracing::debug!(source = %source, records = n, stored = stored.stored, "Consumed");
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

/// Reads a header of a consumed message as text.
pub fn header<'a>(m: &'a impl Message, name: &str) -> Option<&'a str> {
    let h = m.headers()?;
    h.iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}
