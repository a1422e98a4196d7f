//! Targets: what each target a feed writes to is, decided from the
//! configuration alone ([`plan`]: no secret read, no file opened, nothing
//! connected, so `tongban check` runs it), then its sink and dispatch
//! settings made from that decision ([`build`]: secrets resolved, TLS files
//! read, clients made).

use crate::config::connector::{Auth, Operation};
use crate::config::{BodyFormat, Config, Connector, ConnectorKind, ConnectorSpec, OpRef};
use crate::connectors::file::FileSink;
use crate::connectors::http::sign::Signer;
use crate::connectors::http::{HttpAuth, HttpSink, Tls};
use crate::dispatch::retry::RetryPolicy;
use crate::dispatch::{Sink, TargetSettings};
use crate::payout::BankTarget;
use crate::store::Store;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// What a target is: each arm carries what its build needs, checked.
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
        /// XML bodies: root element, namespace, envelope; JSON if none.
        xml: Option<(&'a str, Option<&'a str>, Option<&'a str>)>,
    },
    /// One file per delivery in a directory, JSON or XML.
    File {
        /// The connector.
        connector: &'a Connector,
        /// The operation.
        op: &'a Operation,
        /// XML records: root element and namespace; JSON if none.
        xml: Option<(&'a str, Option<&'a str>)>,
    },
    /// An idempotent Kafka producer, Avro or JSON values.
    Kafka {
        /// The connector.
        connector: &'a Connector,
        /// The operation.
        op: &'a Operation,
        /// Avro values: the record's schema; JSON if none.
        avro: Option<&'a Arc<crate::schema::Schema>>,
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
                    }),
                ))
            }
            _ => None,
        };
        all.push((t, made));
        all.extend(files);
    }
    all
}

/// What one target is, or why the hub cannot dispatch to it.
pub fn plan<'a>(cfg: &'a Config, t: &OpRef) -> Result<Plan<'a>, String> {
    let connector = cfg
        .connectors
        .get(&t.connector)
        .ok_or("no such connector")?;
    let op = connector
        .spec
        .operations
        .get(&t.operation)
        .ok_or("no such operation")?
        .get_ref();
    if crate::payout::bank_format(connector, &t.operation).is_some() {
        return Ok(Plan::Payments { connector, op });
    }
    if op
        .xml_namespace
        .as_deref()
        .is_some_and(|n| n.starts_with("urn:iso:std:iso:20022"))
    {
        return Err(
            "only pain.001.001.03 and .09 payment files are made; its messages would wait in the outbox"
                .into(),
        );
    }
    let root = op.xml_root.as_deref().unwrap_or("record");
    let ns = op.xml_namespace.as_deref();
    match (connector.spec.kind, op.format) {
        (ConnectorKind::Http, BodyFormat::Json) => Ok(Plan::Http {
            connector,
            op,
            xml: None,
        }),
        (ConnectorKind::Http, BodyFormat::Xml) => Ok(Plan::Http {
            connector,
            op,
            xml: Some((root, ns, op.xml_envelope.as_deref())),
        }),
        (ConnectorKind::Http, BodyFormat::Pain002 | BodyFormat::Layout) => {
            Err("pain002 and layout are formats of file connectors only".into())
        }
        (ConnectorKind::Http, BodyFormat::Avro) => {
            Err("Avro bodies over HTTP are not built; its messages would wait in the outbox".into())
        }
        (ConnectorKind::File, BodyFormat::Json) => Ok(Plan::File {
            connector,
            op,
            xml: None,
        }),
        (ConnectorKind::File, BodyFormat::Xml) => Ok(Plan::File {
            connector,
            op,
            xml: Some((root, ns)),
        }),
        (ConnectorKind::File, BodyFormat::Avro | BodyFormat::Pain002 | BodyFormat::Layout) => {
            Err("Avro and pain002 files are not written by the file sink; use JSON or XML".into())
        }
        (ConnectorKind::Kafka, BodyFormat::Avro) => {
            let schema = cfg
                .schemas
                .get(op.schema.get_ref())
                .ok_or_else(|| format!("no schema {}", op.schema.get_ref()))?;
            Ok(Plan::Kafka {
                connector,
                op,
                avro: Some(schema),
            })
        }
        (ConnectorKind::Kafka, BodyFormat::Json) => Ok(Plan::Kafka {
            connector,
            op,
            avro: None,
        }),
        (ConnectorKind::Kafka, BodyFormat::Xml | BodyFormat::Pain002 | BodyFormat::Layout) => {
            Err("only Avro or JSON values are written to Kafka".into())
        }
    }
}

/// A target's sink and dispatch settings, made from its plan.
pub fn build(
    cfg: &Config,
    t: &OpRef,
    plan: Plan<'_>,
    store: &Arc<Store>,
) -> Result<(Arc<dyn Sink>, TargetSettings), String> {
    match plan {
        Plan::Payments { connector, op } => {
            let sink = crate::payout::PaymentsSink::new(store.clone());
            let mut s = settings(cfg, connector, t, op, Duration::from_secs(30));
            s.concurrency = s.concurrency.max(1000);
            Ok((Arc::new(sink), s))
        }
        Plan::Files {
            connector,
            op,
            bank,
        } => files(cfg, connector, op, bank, store),
        Plan::Http { connector, op, xml } => {
            let timeout = connector
                .spec
                .timeout
                .map_or(Duration::from_secs(30), |d| d.0);
            let sink = HttpSink::new(
                &connector.spec.url(op),
                op.method.as_deref().unwrap_or("POST"),
                timeout,
            )?
            .with_tls(&tls_of(cfg, &connector.spec)?)?
            .with_auth(auth_of(&connector.spec)?)
            .with_batch(op.batch.as_ref().map_or(1, |b| *b.get_ref() as usize));
            let sink = match xml {
                None => sink,
                Some((root, ns, envelope)) => sink.with_xml(root, ns).with_xml_envelope(envelope),
            };
            Ok((Arc::new(sink), settings(cfg, connector, t, op, timeout)))
        }
        Plan::File { connector, op, xml } => {
            let dir = cfg
                .dir
                .join(connector.spec.directory.as_deref().unwrap_or("."))
                .join(op.path.as_deref().unwrap_or("out"));
            let batch = op.batch.as_ref().map_or(1, |b| *b.get_ref() as usize);
            let sink = FileSink::new(dir, &t.operation, batch)?;
            let sink = match xml {
                None => sink,
                Some((root, ns)) => sink.with_xml(root, ns),
            };
            let mut s = settings(cfg, connector, t, op, Duration::from_secs(30));
            s.concurrency = s.concurrency.max(batch);
            Ok((Arc::new(sink), s))
        }
        Plan::Kafka {
            connector,
            op,
            avro,
        } => {
            let avro = avro.map(|schema| {
                (
                    crate::schema::AvroCodec::new(schema.clone()),
                    crate::schema::Type::Record(schema.record.clone()),
                )
            });
            let timeout = connector
                .spec
                .timeout
                .map_or(Duration::from_secs(30), |d| d.0);
            let batch = op.batch.as_ref().map_or(1000, |b| *b.get_ref() as usize);
            let sink = crate::connectors::kafka::KafkaSink::new(
                connector.spec.brokers.as_deref().unwrap_or_default(),
                op.topic.as_deref().unwrap_or_default(),
                avro,
                batch,
                timeout,
            )?;
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
) -> Result<(Arc<dyn Sink>, TargetSettings), String> {
    let connector = cfg
        .connectors
        .get(&bank.op.connector)
        .ok_or("no such connector")?;
    let op = cfg.operation(&bank.op).ok_or("no such operation")?;
    files(cfg, connector, op, bank.clone(), store)
}

fn files(
    cfg: &Config,
    connector: &Connector,
    op: &Operation,
    bank: BankTarget,
    store: &Arc<Store>,
) -> Result<(Arc<dyn Sink>, TargetSettings), String> {
    let timeout = connector
        .spec
        .timeout
        .map_or(Duration::from_secs(60), |d| d.0);
    let upload = match &bank.dest {
        crate::payout::Destination::Dir(_) => None,
        crate::payout::Destination::Upload(url) => Some(
            HttpSink::new(url, op.method.as_deref().unwrap_or("POST"), timeout)?
                .with_tls(&tls_of(cfg, &connector.spec)?)?
                .with_auth(auth_of(&connector.spec)?),
        ),
    };
    let mut s = settings(cfg, connector, &bank.op, op, timeout);
    s.target = bank.files_target();
    s.concurrency = s.concurrency.min(4);
    let sink = crate::payout::FilesSink::new(store.clone(), cfg.hub.payouts.clone(), bank, upload);
    Ok((Arc::new(sink), s))
}

/// The authentication of a connector's requests (secrets resolved).
pub(crate) fn auth_of(spec: &ConnectorSpec) -> Result<Option<HttpAuth>, String> {
    Ok(match spec.auth.as_ref().map(|a| a.get_ref()) {
        None => None,
        Some(Auth::Hmac(h)) => Some(HttpAuth::Hmac(Signer::from_recipe(h)?)),
        Some(Auth::Bearer(b)) => Some(HttpAuth::Bearer(b.token.resolve()?)),
        Some(Auth::Basic(b)) => Some(HttpAuth::Basic(b.username.clone(), b.password.resolve()?)),
    })
}

/// A connector's TLS files, read (relative to the configuration directory).
pub(crate) fn tls_of(cfg: &Config, spec: &ConnectorSpec) -> Result<Tls, String> {
    let Some(t) = &spec.tls else {
        return Ok(Tls::default());
    };
    let read =
        |f: &str| std::fs::read(cfg.dir.join(f)).map_err(|e| format!("tls: cannot read {f}: {e}"));
    let ca_pem = t.ca_file.as_deref().map(read).transpose()?;
    let identity_pem = match (&t.client_cert, &t.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend_from_slice(key.resolve()?.as_bytes());
            Some(pem)
        }
        _ => return Err("tls: client_cert and client_key go together".into()),
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
