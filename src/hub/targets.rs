//! Targets: what each target a feed writes to is, decided from the
//! configuration alone ([`plan`]: no secret read, no file opened, nothing
//! connected, so `tongban check` runs it), then its sink and dispatch
//! settings made from that decision ([`build`]: secrets resolved, TLS files
//! read, clients made).

use super::HubError;
use crate::config::connector::{Auth, Operation};
use crate::config::{Config, Connector, ConnectorSpec, OpRef};
use crate::connectors::file::settings::{FileBody, FileOperation, Write};
use crate::connectors::file::FileSink;
use crate::connectors::http::settings::{Body, HttpOperation, Send};
use crate::connectors::http::sign::Signer;
use crate::connectors::http::{HttpAuth, HttpSink, Tls};
use crate::connectors::kafka::settings::KafkaOperation;
use crate::connectors::settings::Settings;
use crate::dispatch::retry::RetryPolicy;
use crate::dispatch::{Sink, TargetSettings};
use crate::payout::BankTarget;
use crate::store::Store;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// What a target is: each arm carries its kind's typed settings and the
/// operation (for its rate limit).
pub enum Plan<'a> {
    /// Payment instructions into the payout register (a bank's payment
    /// operation): `tongban payouts build` makes batches of them, whose
    /// files go out on the bank's files target.
    Payments {
        /// The bank's connector.
        connector: &'a Connector,
        /// The payment operation.
        op: &'a Operation,
    },
    /// A bank's batch files (`<op>/files`), written or uploaded.
    Files {
        /// The bank's connector.
        connector: &'a Connector,
        /// The payment operation.
        op: &'a Operation,
        /// Where the files go and their format.
        bank: BankTarget,
    },
    /// HTTP requests with JSON or XML bodies.
    Http {
        /// The connector.
        connector: &'a Connector,
        /// The operation.
        op: &'a Operation,
        /// The requests.
        send: Send,
        /// Time limit of one request.
        timeout: Duration,
    },
    /// Files in a directory, JSON lines or XML.
    File {
        /// The connector.
        connector: &'a Connector,
        /// The operation.
        op: &'a Operation,
        /// The directory and what is written.
        write: Write,
    },
    /// Stages into the hub's deadline register.
    Deadlines {
        /// The connector.
        connector: &'a Connector,
        /// The operation.
        op: &'a Operation,
        /// The calendar and each stage's limit.
        settings: crate::connectors::deadlines::settings::DeadlineSettings,
    },
    /// Holds on a person's payments, into the hub's payout register.
    Holds {
        /// The connector.
        connector: &'a Connector,
        /// The operation.
        op: &'a Operation,
    },
    /// Rows into a front-end database table.
    Database {
        /// The connector.
        connector: &'a Connector,
        /// The operation.
        op: &'a Operation,
        /// The database.
        db: crate::connectors::database::settings::DatabaseSettings,
        /// The table written.
        write: crate::connectors::database::settings::Write,
        /// The record's schema.
        schema: &'a Arc<crate::schema::Schema>,
    },
    /// An idempotent Kafka producer, Avro or JSON values.
    Kafka {
        /// The connector.
        connector: &'a Connector,
        /// The operation.
        op: &'a Operation,
        /// Bootstrap servers.
        brokers: String,
        /// The topic.
        topic: String,
        /// Avro values: the record's schema; JSON if none.
        avro: Option<&'a Arc<crate::schema::Schema>>,
        /// Messages per delivery.
        batch: usize,
        /// Time limit of one delivery.
        timeout: Duration,
    },
}

/// Every target the hub dispatches to, each with its plan or why it cannot
/// run: each target a feed writes to and, beside a bank's payment target,
/// the files target of its batch files.
pub fn plan_all(cfg: &Config) -> Vec<(OpRef, Result<Plan<'_>, String>)> {
    let targets: std::collections::BTreeSet<OpRef> =
        cfg.mappings.values().map(|m| m.to.clone()).collect();
    let mut all = Vec::new();
    for t in targets {
        let made = plan(cfg, &t);
        let files = match &made {
            Ok(Plan::Payments { connector, op }) => {
                let bank = crate::payout::bank_target(cfg, Some(&t.to_string()));
                let name = OpRef {
                    connector: t.connector.clone(),
                    operation: format!("{}/files", t.operation),
                };
                Some((
                    name,
                    bank.map(|bank| Plan::Files {
                        connector,
                        op,
                        bank,
                    })
                    .map_err(|e| e.to_string()),
                ))
            }
            _ => None,
        };
        all.push((t, made));
        all.extend(files);
    }
    all
}

const NOT_PAYMENTS: &str =
    "only pain.001.001.03 and .09 payment files are made; its messages would wait in the outbox";

/// What one target is, or why the hub cannot dispatch to it.
pub fn plan<'a>(cfg: &'a Config, t: &OpRef) -> Result<Plan<'a>, String> {
    let connector = cfg
        .connectors
        .get(&t.connector)
        .ok_or("no such connector")?;
    let op = cfg.operation(t).ok_or("no such operation")?;
    let settings = super::sources::settings_of(cfg, connector)?;
    if crate::payout::bank_format(connector, &t.operation).is_some() {
        return Ok(Plan::Payments { connector, op });
    }
    let not_sink = || format!("{t} is not a sink operation");
    match settings {
        Settings::Http(h) => match h.operations.get(&t.operation) {
            Some(HttpOperation::Send(Send {
                body: Body::PaymentFiles,
                ..
            })) => Err(NOT_PAYMENTS.into()),
            Some(HttpOperation::Send(send)) => Ok(Plan::Http {
                connector,
                op,
                send: send.clone(),
                timeout: h.timeout.unwrap_or(Duration::from_secs(30)),
            }),
            _ => Err(not_sink()),
        },
        Settings::File(f) => match f.operations.get(&t.operation) {
            Some(FileOperation::Write(Write {
                body: FileBody::PaymentFiles,
                ..
            })) => Err(NOT_PAYMENTS.into()),
            Some(FileOperation::Write(write)) => Ok(Plan::File {
                connector,
                op,
                write: write.clone(),
            }),
            _ => Err(not_sink()),
        },
        Settings::Kafka(k) => match k.operations.get(&t.operation) {
            Some(KafkaOperation::Produce { topic, avro, batch }) => {
                let avro = match avro {
                    false => None,
                    true => Some(
                        cfg.schemas
                            .get(op.schema.get_ref())
                            .ok_or_else(|| format!("no schema {}", op.schema.get_ref()))?,
                    ),
                };
                Ok(Plan::Kafka {
                    connector,
                    op,
                    brokers: k.brokers.clone(),
                    topic: topic.clone(),
                    avro,
                    batch: *batch,
                    timeout: k.timeout.unwrap_or(Duration::from_secs(30)),
                })
            }
            _ => Err(not_sink()),
        },
        Settings::Database(d) => match d.operations.get(&t.operation) {
            Some(crate::connectors::database::settings::DatabaseOperation::Write(w)) => {
                Ok(Plan::Database {
                    connector,
                    op,
                    write: w.clone(),
                    schema: cfg
                        .schemas
                        .get(op.schema.get_ref())
                        .ok_or_else(|| format!("no schema {}", op.schema.get_ref()))?,
                    db: d,
                })
            }
            _ => Err(not_sink()),
        },
        // Its sinks upload payment files (planned above).
        Settings::Sftp(_) => Err(not_sink()),
        Settings::Register(r) => match r.operations.contains(&t.operation) {
            true => Ok(Plan::Holds { connector, op }),
            false => Err(not_sink()),
        },
        Settings::Deadlines(d) => match d.operations.contains(&t.operation) {
            true => Ok(Plan::Deadlines {
                connector,
                op,
                settings: d,
            }),
            false => Err(not_sink()),
        },
    }
}

/// A target's sink and dispatch settings, made from its plan.
pub fn build(
    cfg: &Config,
    t: &OpRef,
    plan: Plan<'_>,
    store: &Arc<Store>,
) -> Result<(Arc<dyn Sink>, TargetSettings), HubError> {
    match plan {
        Plan::Payments { connector, op } => {
            let sink = crate::payout::PaymentsSink::new(store.clone());
            let mut s = settings(cfg, connector, t, op, Duration::from_secs(30));
            s.concurrency = s.concurrency.max(1000);
            Ok((Arc::new(sink), s))
        }
        Plan::Holds { connector, op } => {
            let sink = crate::payout::HoldsSink::new(store.clone());
            let s = settings(cfg, connector, t, op, Duration::from_secs(30));
            Ok((Arc::new(sink), s))
        }
        Plan::Deadlines {
            connector,
            op,
            settings,
        } => {
            let sink = crate::connectors::deadlines::DeadlineSink::new(store.clone(), settings);
            let s = self::settings(cfg, connector, t, op, Duration::from_secs(30));
            Ok((Arc::new(sink), s))
        }
        Plan::Files {
            connector,
            op,
            bank,
        } => files(cfg, connector, op, bank, store),
        Plan::Http {
            connector,
            op,
            send,
            timeout,
        } => {
            let sink = HttpSink::new(send.url.as_str(), send.method.as_str(), timeout)?
                .with_tls(&tls_of(cfg, &connector.spec)?)?
                .with_auth(auth_of(&connector.spec)?);
            let sink = match send.body {
                Body::Json { batch } => sink.with_batch(batch),
                Body::Xml {
                    root,
                    namespace,
                    envelope,
                } => sink
                    .with_xml(&root, namespace.as_deref())
                    .with_xml_envelope(envelope.as_deref()),
                Body::PaymentFiles => return Err(HubError::Plan(NOT_PAYMENTS.into())),
            };
            Ok((Arc::new(sink), settings(cfg, connector, t, op, timeout)))
        }
        Plan::File {
            connector,
            op,
            write,
        } => {
            let (sink, batch) = match write.body {
                FileBody::Json { batch } => (FileSink::new(write.dir, &t.operation, batch)?, batch),
                FileBody::Xml {
                    root,
                    namespace,
                    batch,
                } => (
                    FileSink::new(write.dir, &t.operation, batch)?
                        .with_xml(&root, namespace.as_deref()),
                    batch,
                ),
                FileBody::PaymentFiles => return Err(HubError::Plan(NOT_PAYMENTS.into())),
            };
            let mut s = settings(cfg, connector, t, op, Duration::from_secs(30));
            s.concurrency = s.concurrency.max(batch);
            Ok((Arc::new(sink), s))
        }
        Plan::Database {
            connector,
            op,
            db,
            write,
            schema,
        } => {
            let sink =
                crate::connectors::database::DatabaseSink::new(&db, write, schema.record.clone())?;
            let timeout = db.timeout.unwrap_or(Duration::from_secs(30));
            let mut s = settings(cfg, connector, t, op, timeout);
            s.concurrency = db.connections;
            Ok((Arc::new(sink), s))
        }
        Plan::Kafka {
            connector,
            op,
            brokers,
            topic,
            avro,
            batch,
            timeout,
        } => {
            let avro = avro.map(|schema| {
                (
                    crate::schema::AvroCodec::new(schema.clone()),
                    crate::schema::Type::Record(schema.record.clone()),
                )
            });
            let sink =
                crate::connectors::kafka::KafkaSink::new(&brokers, &topic, avro, batch, timeout)?;
            let mut s = settings(cfg, connector, t, op, timeout);
            s.concurrency = s.concurrency.max(batch);
            Ok((Arc::new(sink), s))
        }
    }
}

/// The sink and settings of a bank's files target (`<op>/files`): the
/// connector's retry schedule, rate limit and, for uploads, its URL, TLS
/// and authentication; at most four files at a time per bank.
pub fn files_target(
    cfg: &Config,
    bank: &BankTarget,
    store: &Arc<Store>,
) -> Result<(Arc<dyn Sink>, TargetSettings), HubError> {
    let connector = cfg
        .connectors
        .get(&bank.op.connector)
        .ok_or_else(|| HubError::Plan("no such connector".into()))?;
    let op = cfg
        .operation(&bank.op)
        .ok_or_else(|| HubError::Plan("no such operation".into()))?;
    files(cfg, connector, op, bank.clone(), store)
}

fn files(
    cfg: &Config,
    connector: &Connector,
    op: &Operation,
    bank: BankTarget,
    store: &Arc<Store>,
) -> Result<(Arc<dyn Sink>, TargetSettings), HubError> {
    let timeout = connector
        .spec
        .timeout
        .map_or(Duration::from_secs(60), |d| d.0);
    let upload = match &bank.dest {
        crate::payout::Destination::Dir(_) | crate::payout::Destination::Sftp { .. } => None,
        crate::payout::Destination::Upload(url) => Some(
            HttpSink::new(url, op.method.as_deref().unwrap_or("POST"), timeout)?
                .with_tls(&tls_of(cfg, &connector.spec)?)?
                .with_auth(auth_of(&connector.spec)?),
        ),
    };
    let mut s = settings(cfg, connector, &bank.op, op, timeout);
    s.target = bank.files_target();
    s.concurrency = s.concurrency.min(4);
    let sftp = match &bank.dest {
        crate::payout::Destination::Sftp { server, .. } => {
            Some(crate::connectors::sftp::SftpClient::new(server))
        }
        _ => None,
    };
    let sink = crate::payout::FilesSink::new(store.clone(), cfg.hub.payouts.clone(), bank, upload)
        .with_sftp(sftp);
    Ok((Arc::new(sink), s))
}

/// The authentication of a connector's requests (secrets resolved).
pub(crate) fn auth_of(spec: &ConnectorSpec) -> Result<Option<HttpAuth>, HubError> {
    Ok(match spec.auth.as_ref().map(|a| a.get_ref()) {
        None => None,
        Some(Auth::Hmac(h)) => Some(HttpAuth::Hmac(Signer::from_recipe(h)?)),
        Some(Auth::Bearer(b)) => Some(HttpAuth::Bearer(b.token.resolve()?)),
        Some(Auth::Basic(b)) => Some(HttpAuth::Basic(b.username.clone(), b.password.resolve()?)),
        // Refused by the settings of http connectors.
        Some(Auth::Key(_) | Auth::Password(_)) => None,
    })
}

/// A connector's TLS files, read (relative to the configuration directory).
pub(crate) fn tls_of(cfg: &Config, spec: &ConnectorSpec) -> Result<Tls, HubError> {
    let Some(t) = &spec.tls else {
        return Ok(Tls::default());
    };
    let read = |f: &str| {
        std::fs::read(cfg.dir.join(f)).map_err(|source| HubError::TlsFile {
            file: f.to_string(),
            source,
        })
    };
    let ca_pem = t.ca_file.as_deref().map(read).transpose()?;
    let identity_pem = match (&t.client_cert, &t.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend_from_slice(key.resolve()?.as_bytes());
            Some(pem)
        }
        _ => return Err(HubError::TlsPair),
    };
    Ok(Tls {
        ca_pem,
        identity_pem,
    })
}

/// Dispatch settings of a target: concurrency, rate limit, retries, lease.
fn settings(
    cfg: &Config,
    c: &Connector,
    t: &OpRef,
    op: &Operation,
    timeout: Duration,
) -> TargetSettings {
    let mut s = TargetSettings::new(&t.to_string());
    s.concurrency = c.spec.concurrency.unwrap_or(16) as usize;
    let rate = op.rate_limit.as_ref().or(c.spec.rate_limit.as_ref());
    s.rate_per_second = rate.and_then(|r| NonZeroU32::new(r.per_second));
    s.burst = rate.and_then(|r| r.burst).and_then(NonZeroU32::new);
    let schedule = c
        .spec
        .retry_schedule
        .as_ref()
        .unwrap_or(&cfg.hub.dispatch.retry_schedule);
    s.retry = RetryPolicy {
        schedule: schedule.iter().map(|d| d.0).collect(),
        jitter_percent: cfg.hub.dispatch.jitter_percent,
        ..RetryPolicy::default()
    };
    s.lease = cfg
        .hub
        .dispatch
        .lease
        .0
        .max(timeout + Duration::from_secs(5));
    s
}
