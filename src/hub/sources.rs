//! Sources: what each source operation a feed reads is, decided from the
//! configuration alone ([`plan`], run by `tongban check` too), and the
//! tasks that read them ([`start`]): file watches, HTTP pulls, Kafka
//! consumers, and one webhook endpoint for every webhook source.

use crate::config::connector::{Auth, Operation};
use crate::config::{BodyFormat, Config, Connector, ConnectorKind, OpRef};
use crate::connectors::file::FileSource;
use crate::connectors::http::pull::HttpPull;
use crate::connectors::http::sign::Signer;
use crate::connectors::http::webhook::{self, WebhookOp};
use crate::connectors::intake::{GroupCommit, Intake};
use crate::store::Store;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a source is.
pub enum Plan<'a> {
    /// Files picked up from a directory.
    File {
        /// The connector.
        connector: &'a Connector,
        /// Bank result files (pain.002 or a layout), reconciled against
        /// the payout register before their records go on.
        bank_results: bool,
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
        /// The operation.
        op: &'a Operation,
        /// Its URL.
        url: reqwest::Url,
        /// Its method.
        method: reqwest::Method,
    },
    /// A Kafka consumer group.
    Kafka {
        /// The connector.
        connector: &'a Connector,
        /// The operation.
        op: &'a Operation,
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

/// What one source is, or why the hub cannot read it.
pub fn plan<'a>(cfg: &'a Config, src: &OpRef) -> Result<Plan<'a>, String> {
    let connector = cfg
        .connectors
        .get(&src.connector)
        .ok_or("no such connector")?;
    let op = cfg.operation(src).ok_or("no such operation")?;
    match connector.spec.kind {
        ConnectorKind::File => {
            glob::Pattern::new(op.file_pattern.as_deref().unwrap_or("*"))
                .map_err(|e| format!("file_pattern: {e}"))?;
            Ok(Plan::File {
                connector,
                bank_results: matches!(op.format, BodyFormat::Pain002 | BodyFormat::Layout),
            })
        }
        ConnectorKind::Http if op.webhook => {
            match connector.spec.auth.as_ref().map(|a| a.get_ref()) {
                None | Some(Auth::Hmac(_)) => Ok(Plan::Webhook { connector }),
                Some(_) => {
                    Err("webhooks verify HMAC signatures only; set [auth] type = \"hmac\"".into())
                }
            }
        }
        ConnectorKind::Http => {
            let url = connector.spec.url(op);
            Ok(Plan::Pull {
                connector,
                op,
                url: reqwest::Url::parse(&url).map_err(|e| format!("bad URL {url:?}: {e}"))?,
                method: reqwest::Method::from_bytes(
                    op.method.as_deref().unwrap_or("GET").as_bytes(),
                )
                .map_err(|e| format!("bad method: {e}"))?,
            })
        }
        ConnectorKind::Kafka => Ok(Plan::Kafka { connector, op }),
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
        let started = planned.and_then(|p| {
            let intake = Intake::new(cfg, store.clone(), &src)?;
            let w = shutdown.clone();
            Ok(match p {
                Plan::File {
                    connector,
                    bank_results,
                } => {
                    let mut fs = FileSource::new(cfg, intake, &src)?;
                    if bank_results {
                        fs = fs.with_results(Arc::new(crate::payout::Reconciler::new(
                            store.clone(),
                            connector.layouts.get(&src.operation).cloned(),
                            src.to_string(),
                        )));
                    }
                    Some(tokio::spawn(async move { fs.run(w).await }))
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
                    op,
                    url,
                    method,
                } => {
                    let timeout = connector
                        .spec
                        .timeout
                        .map_or(Duration::from_secs(30), |d| d.0);
                    let tls = super::targets::tls_of(cfg, &connector.spec)?;
                    let pull = HttpPull {
                        intake,
                        client: crate::connectors::http::client(timeout, &tls)?,
                        url,
                        method,
                        auth: super::targets::auth_of(&connector.spec)?,
                        cursor_param: op.cursor_param.clone(),
                        items_field: op.items_field.clone(),
                        next_cursor_field: op.next_cursor_field.clone(),
                        poll: op.poll_interval.map_or(Duration::from_secs(5), |d| d.0),
                        timeout,
                        format: op.format,
                    };
                    Some(tokio::spawn(async move { pull.run(w).await }))
                }
                Plan::Kafka { connector, op } => {
                    let group = op.group.clone().unwrap_or_else(|| format!("tongban.{src}"));
                    let ks = crate::connectors::kafka::KafkaSource::new(
                        intake,
                        connector.spec.brokers.as_deref().unwrap_or_default(),
                        op.topic.as_deref().unwrap_or_default(),
                        &group,
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
    let app = webhook::router(hooks, GroupCommit::start(store, 512), limits);
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
