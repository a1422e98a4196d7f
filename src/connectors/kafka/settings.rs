//! The settings of a `kind = "kafka"` connector: its brokers, and each
//! operation as a consumer group reading a topic or a producer writing one.

use crate::config::connector::{BodyFormat, Direction};
use crate::config::ConnectorSpec;
use crate::connectors::settings::{batch, Problems};
use crate::diag::Problem;
use std::collections::BTreeMap;
use std::time::Duration;

/// A Kafka connector.
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Time limit of one delivery (default 30 s).
    pub timeout: Option<Duration>,
    /// The operations, by name.
    pub operations: BTreeMap<String, KafkaOperation>,
}

/// What a Kafka operation is.
#[derive(Clone, Debug)]
pub enum KafkaOperation {
    /// A consumer group reading a topic.
    Consume {
        /// The topic.
        topic: String,
        /// The group (default `tongban.<connector>.<operation>`).
        group: Option<String>,
    },
    /// An idempotent producer writing a topic.
    Produce {
        /// The topic.
        topic: String,
        /// Avro single-object values (JSON if false).
        avro: bool,
        /// Messages enqueued per delivery (default 1,000).
        batch: usize,
    },
}

impl KafkaSettings {
    /// The settings a connector file gives, or every problem in it.
    pub fn of(spec: &ConnectorSpec) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        let brokers = spec.brokers.clone().filter(|b| !b.trim().is_empty());
        if brokers.is_none() {
            p.connector(None, "a kafka connector needs brokers");
        }
        if spec.base_url.is_some() || spec.directory.is_some() || spec.auth.is_some() {
            p.connector(
                None,
                "base_url, auth and directory are settings of http and file connectors; a kafka connector has brokers",
            );
        }
        let mut operations = BTreeMap::new();
        for (name, sop) in &spec.operations {
            let op = sop.get_ref();
            let Some(topic) = op.topic.clone() else {
                p.need(name, sop, "Kafka", "topic");
                continue;
            };
            let made = match op.direction {
                Direction::Source => {
                    p.foreign(name, sop, "kafka source", &["topic", "group"]);
                    if !matches!(op.format, BodyFormat::Json | BodyFormat::Avro) {
                        p.op(name, sop, "Kafka values are read as Avro or JSON");
                    }
                    KafkaOperation::Consume {
                        topic,
                        group: op.group.clone(),
                    }
                }
                Direction::Sink => {
                    p.foreign(name, sop, "kafka sink", &["topic", "batch"]);
                    if !matches!(op.format, BodyFormat::Json | BodyFormat::Avro) {
                        p.op(name, sop, "only Avro or JSON values are written to Kafka");
                    }
                    KafkaOperation::Produce {
                        topic,
                        avro: op.format == BodyFormat::Avro,
                        batch: batch(&mut p, name, sop, 1000, Ok(())),
                    }
                }
            };
            operations.insert(name.clone(), made);
        }
        match brokers {
            Some(brokers) => p.or(KafkaSettings {
                brokers,
                timeout: spec.timeout.map(|d| d.0),
                operations,
            }),
            None => Err(p.0),
        }
    }
}
