//! Sources: what each source operation a feed reads is, decided from the
//! configuration alone ([`plan`], run by `tongban check` too), and the
//! tasks that read them ([`start`]): file watches, HTTP pulls, Kafka
//! consumers, and one webhook endpoint for every webhook source.

use super::HubError;
use crate::config::connector::Auth;
use crate::config::{Config, Connector, OpRef};
use crate::connectors::file::settings::{FileOperation, Watch};
use crate::connectors::file::FileSource;
use crate::connectors::http::pull::HttpPull;
use crate::connectors::http::settings::{HttpOperation, Pull};
use crate::connectors::http::sign::Signer;
use crate::connectors::http::webhook::{self, WebhookOp};
use crate::connectors::intake::{GroupCommit, Intake};
use crate::connectors::kafka::settings::KafkaOperation;
use crate::connectors::settings::Settings;
use crate::store::Store;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a source is: each arm carries its kind's typed settings.
pub enum Plan<'a> {
    /// Files picked up from a directory (bank result files among them:
    /// [`Watch::bank_results`]).
    File {
        /// The connector.
        connector: &'a Connector,
        /// The watched directory.
        watch: Watch,
    },
    /// Signed requests to the hub's webhook endpoint (HMAC checked if the
    /// connector has `[auth]`).
    Webhook {
        /// The connector.
        connector: &'a Connector,
    },
    /// A poll of an HTTP API with a cursor.
    Pull {
        /// The connector.
        connector: &'a Connector,
        /// The poll.
        pull: Pull,
        /// Time limit of one request.
        timeout: Duration,
    },
    /// A front-end database table read by watermark.
    Database {
        /// The database.
        db: crate::connectors::database::settings::DatabaseSettings,
        /// What is read.
        read: crate::connectors::database::settings::Read,
    },
    /// Files picked up from a directory on an SFTP server.
    Sftp {
        /// The connector.
        connector: &'a Connector,
        /// The server.
        server: crate::connectors::sftp::settings::SftpSettings,
        /// The watched directory.
        watch: crate::connectors::sftp::settings::RemoteWatch,
    },
    /// A Kafka consumer group.
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// The topic.
        topic: String,
        /// The consumer group.
        group: String,
    },
}

/// Every source operation some feed reads, each with its plan or why it
/// cannot run.
pub fn plan_all(cfg: &Config) -> Vec<(OpRef, Result<Plan<'_>, String>)> {
    let sources: BTreeSet<OpRef> = cfg.mappings.values().map(|m| m.from.clone()).collect();
    sources
        .into_iter()
        .map(|s| {
            let p = plan(cfg, &s);
            (s, p)
        })
        .collect()
}

/// A connector's typed settings, or its problems in one line.
pub(super) fn settings_of<'a>(cfg: &Config, c: &'a Connector) -> Result<Settings<'a>, String> {
    crate::connectors::settings::of(&c.spec, &cfg.dir).map_err(|ps| {
        let all: Vec<String> = ps.into_iter().map(|p| p.message).collect();
        format!("connector {}: {}", c.name, all.join("; "))
    })
}

/// What one source is, or why the hub cannot read it.
pub fn plan<'a>(cfg: &'a Config, src: &OpRef) -> Result<Plan<'a>, String> {
    let connector = cfg
        .connectors
        .get(&src.connector)
        .ok_or("no such connector")?;
    let not_source = || format!("{src} is not a source operation");
    match settings_of(cfg, connector)? {
        Settings::File(f) => match f.operations.get(&src.operation) {
            Some(FileOperation::Watch(w)) => Ok(Plan::File {
                connector,
                watch: w.clone(),
            }),
            _ => Err(not_source()),
        },
        Settings::Http(h) => match h.operations.get(&src.operation) {
            Some(HttpOperation::Webhook) => Ok(Plan::Webhook { connector }),
            Some(HttpOperation::Pull(p)) => Ok(Plan::Pull {
                connector,
                pull: p.clone(),
                timeout: h.timeout.unwrap_or(Duration::from_secs(30)),
            }),
            _ => Err(not_source()),
        },
        Settings::Kafka(k) => match k.operations.get(&src.operation) {
            Some(KafkaOperation::Consume { topic, group }) => Ok(Plan::Kafka {
                brokers: k.brokers.clone(),
                topic: topic.clone(),
                group: group.clone().unwrap_or_else(|| format!("tongban.{src}")),
            }),
            _ => Err(not_source()),
        },
        Settings::Database(d) => match d.operations.get(&src.operation) {
            Some(crate::connectors::database::settings::DatabaseOperation::Read(r)) => {
                Ok(Plan::Database {
                    read: r.clone(),
                    db: d,
                })
            }
            _ => Err(not_source()),
        },
        Settings::Sftp(f) => match f.operations.get(&src.operation) {
            Some(crate::connectors::sftp::settings::SftpOperation::Watch(w)) => Ok(Plan::Sftp {
                connector,
                watch: w.clone(),
                server: f,
            }),
            _ => Err(not_source()),
        },
        Settings::Deadlines(_) | Settings::Register(_) => Err(not_source()),
    }
}

/// Starts a task per source operation that some feed reads, and the
/// webhook endpoint if any source is a webhook. Sources that cannot run
/// are logged with the reason.
pub async fn start(
    cfg: &'static Config,
    store: Arc<Store>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let mut hooks = HashMap::new();
    for (src, planned) in plan_all(cfg) {
        let started = planned.map_err(HubError::Plan).and_then(|p| {
            let intake = Intake::new(cfg, store.clone(), &src)?;
            let w = shutdown.clone();
            Ok(match p {
                Plan::File { connector, watch } => {
                    let mut fs = FileSource::new(intake, &watch)?;
                    if watch.bank_results() {
                        fs = fs.with_results(Arc::new(crate::payout::Reconciler::new(
                            store.clone(),
                            connector.layouts.get(&src.operation).cloned(),
                            src.to_string(),
                        )));
                    }
                    Some(tokio::spawn(async move { fs.run(w).await }))
                }
                Plan::Sftp {
                    connector,
                    server,
                    watch,
                } => {
                    use crate::config::BodyFormat;
                    let mut reader = crate::connectors::file::FileReader::new(intake, watch.format);
                    if matches!(watch.format, BodyFormat::Pain002 | BodyFormat::Layout) {
                        reader = reader.with_results(Arc::new(crate::payout::Reconciler::new(
                            store.clone(),
                            connector.layouts.get(&src.operation).cloned(),
                            src.to_string(),
                        )));
                    }
                    let client = Arc::new(crate::connectors::sftp::SftpClient::new(&server));
                    let source = crate::connectors::sftp::SftpSource::new(reader, client, watch);
                    Some(tokio::spawn(async move { source.run(w).await }))
                }
                Plan::Webhook { connector } => {
                    let signer = match connector.spec.auth.as_ref().map(|a| a.get_ref()) {
                        Some(Auth::Hmac(h)) => Some(Signer::from_recipe(h)?),
                        _ => None,
                    };
                    hooks.insert(
                        (src.connector.clone(), src.operation.clone()),
                        WebhookOp { intake, signer },
                    );
                    None
                }
                Plan::Pull {
                    connector,
                    pull,
                    timeout,
                } => {
                    let tls = super::targets::tls_of(cfg, &connector.spec)?;
                    let pull = HttpPull {
                        intake,
                        client: crate::connectors::http::client(timeout, &tls)?,
                        url: pull.url,
                        method: pull.method,
                        auth: super::targets::auth_of(&connector.spec)?,
                        cursor_param: pull.cursor_param,
                        items_field: pull.items_field,
                        next_cursor_field: pull.next_cursor_field,
                        poll: pull.poll,
                        timeout,
                        format: pull.format,
                    };
                    Some(tokio::spawn(async move { pull.run(w).await }))
                }
                Plan::Database { db, read } => {
                    let ds = crate::connectors::database::DatabaseSource::new(intake, &db, read)?;
                    Some(tokio::spawn(async move { ds.run(w).await }))
                }
                Plan::Kafka {
                    brokers,
                    topic,
                    group,
                } => {
                    let ks = crate::connectors::kafka::KafkaSource::new(
                        intake, &brokers, &topic, &group,
                    )?;
                    Some(tokio::spawn(async move { ks.run(w).await }))
                }
            })
        });
        match started {
            Ok(Some(t)) => {
                tracing::info!(source = %src, "Reading");
                tasks.push(t);
            }
            Ok(None) => {}
            Err(why) => tracing::warn!(source = %src, reason = %why, "Not reading"),
        }
    }
    if !hooks.is_empty() {
        if let Some(t) = serve_webhooks(cfg, store, hooks, shutdown).await {
            tasks.push(t);
        }
    }
    tasks
}

/// Serves the webhook sources on `[webhooks] listen` until `shutdown`.
async fn serve_webhooks(
    cfg: &'static Config,
    store: Arc<Store>,
    hooks: HashMap<(String, String), WebhookOp>,
    shutdown: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let w = &cfg.hub.webhooks;
    let limits = webhook::WebhookLimits {
        max_body: w.max_body_bytes,
        window: w.window.0,
    };
    let names: Vec<String> = hooks.keys().map(|(c, o)| format!("{c}.{o}")).collect();
    let app = webhook::router(hooks, GroupCommit::start(store, 512, limits.window), limits);
    match tokio::net::TcpListener::bind(w.listen).await {
        Ok(listener) => {
            tracing::info!(listen = %w.listen, sources = ?names, "Serving webhooks");
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(super::stopped(shutdown))
                    .await
                {
                    tracing::error!(error = %e, "Webhook endpoint failed");
                }
            }))
        }
        Err(e) => {
            tracing::error!(listen = %w.listen, error = %e, "Cannot serve webhooks");
            None
        }
    }
}
