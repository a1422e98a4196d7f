//! `tongban run` and `tongban ingest`.

use crate::config::connector::Auth;
use crate::config::{Config, ConnectorKind, OpRef};
use crate::connectors::file::{FileSink, FileSource};
use crate::connectors::http::pull::HttpPull;
use crate::connectors::http::webhook::{self, WebhookOp};
use crate::connectors::http::{HttpAuth, HttpSink, Tls};
use crate::connectors::intake::{GroupCommit, Intake};
use crate::dispatch::retry::RetryPolicy;
use crate::dispatch::{run_target, Sink, TargetSettings, TargetStats};
use crate::pipeline::Pipeline;
use crate::store::Store;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::num::NonZeroU32;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub(crate) fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TONGBAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `tongban ingest --source OP FILE`: JSON lines through the source's feeds
/// into the outbox, 1,000 records per transaction.
pub fn ingest(cfg: &Config, source: &str, input: &Path) -> ExitCode {
    let pipeline = match Pipeline::new(cfg, source) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let file = match std::fs::File::open(input) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", input.display());
            return ExitCode::from(2);
        }
    };
    let rt = runtime();
    let result: Result<crate::store::IngestOutcome, String> = rt.block_on(async {
        let store = Store::open(&cfg.hub.store.url, &cfg.dir)
            .await
            .map_err(|e| e.to_string())?;
        let mut total = crate::store::IngestOutcome::default();
        let mut batch = Vec::with_capacity(1000);
        let rd = std::io::BufReader::new(file);
        for line in rd.split(b'\n') {
            let line = line.map_err(|e| e.to_string())?;
            if line.trim_ascii().is_empty() {
                continue;
            }
            batch.push(pipeline.record(line.trim_ascii(), None));
            if batch.len() == 1000 {
                add(
                    &mut total,
                    store
                        .ingest(std::mem::take(&mut batch))
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        if !batch.is_empty() {
            add(
                &mut total,
                store.ingest(batch).await.map_err(|e| e.to_string())?,
            );
        }
        Ok(total)
    });
    match result {
        Ok(t) => {
            println!(
                "{source}: stored {} records ({} already stored), {} messages, {} quarantined",
                t.stored, t.duplicates, t.messages, t.quarantined
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn add(t: &mut crate::store::IngestOutcome, o: crate::store::IngestOutcome) {
    t.stored += o.stored;
    t.duplicates += o.duplicates;
    t.messages += o.messages;
    t.quarantined += o.quarantined;
}

/// A target's sink and settings, or why it cannot run.
type Made = Result<(Arc<dyn Sink>, TargetSettings), String>;

/// Builds the sink and settings of one target, or says why it cannot run yet.
fn target(
    cfg: &Config,
    t: &OpRef,
    store: &Arc<Store>,
) -> Result<(Arc<dyn Sink>, TargetSettings), String> {
    let c = cfg
        .connectors
        .get(&t.connector)
        .ok_or("no such connector")?;
    let op = c
        .spec
        .operations
        .get(&t.operation)
        .ok_or("no such operation")?
        .get_ref();
    if crate::payout::bank_format(c, &t.operation).is_some() {
        // Payment instructions go into the payout register; `tongban
        // payouts build` makes batches from it, and their files go out on
        // the files target (see `files_target`).
        let sink = crate::payout::PaymentsSink::new(store.clone());
        let mut s = settings(cfg, c, t, op, Duration::from_secs(30));
        s.concurrency = s.concurrency.max(1000);
        return Ok((Arc::new(sink), s));
    }
    if op
        .xml_namespace
        .as_deref()
        .is_some_and(|n| n.starts_with("urn:iso:std:iso:20022"))
    {
        return Err(
            "only pain.001.001.03 and .09 payment files are made; its messages wait in the outbox"
                .into(),
        );
    }
    match c.spec.kind {
        ConnectorKind::Http => {}
        ConnectorKind::File => return file_target(cfg, c, t, op),
        ConnectorKind::Kafka => return kafka_target(cfg, c, t, op),
    }
    let auth = auth_of(&c.spec)?;
    let url = url_of(&c.spec, op);
    let timeout = c
        .spec
        .timeout
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(30));
    let sink = HttpSink::new(&url, op.method.as_deref().unwrap_or("POST"), timeout)?
        .with_tls(&tls_of(cfg, &c.spec)?)?
        .with_auth(auth)
        .with_batch(op.batch.as_ref().map_or(1, |b| *b.get_ref() as usize));
    let sink = match op.format {
        crate::config::BodyFormat::Json => sink,
        crate::config::BodyFormat::Xml => sink
            .with_xml(
                op.xml_root.as_deref().unwrap_or("record"),
                op.xml_namespace.as_deref(),
            )
            .with_xml_envelope(op.xml_envelope.as_deref()),
        crate::config::BodyFormat::Pain002 | crate::config::BodyFormat::Layout => {
            return Err("pain002 and layout are formats of file connectors only".into())
        }
        crate::config::BodyFormat::Avro => {
            return Err(
                "Avro bodies over HTTP are not built; its messages wait in the outbox".into(),
            )
        }
    };
    Ok((Arc::new(sink), settings(cfg, c, t, op, timeout)))
}

/// The sink and settings of a bank's files target (`<op>/files`): the
/// connector's retry schedule, rate limit and, for uploads, its URL, TLS
/// and authentication; one file at a time per bank.
pub(crate) fn files_target(
    cfg: &Config,
    bank: &crate::payout::BankTarget,
    store: &Arc<Store>,
) -> Result<(Arc<dyn Sink>, TargetSettings), String> {
    let c = cfg
        .connectors
        .get(&bank.op.connector)
        .ok_or("no such connector")?;
    let op = cfg.operation(&bank.op).ok_or("no such operation")?;
    let timeout = c.spec.timeout.map_or(Duration::from_secs(60), |d| d.0);
    let upload = match &bank.dest {
        crate::payout::Destination::Dir(_) => None,
        crate::payout::Destination::Upload(url) => Some(
            HttpSink::new(url, op.method.as_deref().unwrap_or("POST"), timeout)?
                .with_tls(&tls_of(cfg, &c.spec)?)?
                .with_auth(auth_of(&c.spec)?),
        ),
    };
    let sink =
        crate::payout::FilesSink::new(store.clone(), cfg.hub.payouts.clone(), bank.clone(), upload);
    let mut s = settings(cfg, c, &bank.op, op, timeout);
    s.target = bank.files_target();
    s.concurrency = s.concurrency.min(4);
    Ok((Arc::new(sink), s))
}

/// `tongban payouts build`: batches the period, queues their files on the
/// files target, delivers them now through the outbox, and says where each
/// batch's file stands.
pub(crate) async fn build_payouts(
    cfg: &Config,
    store: &Arc<Store>,
    period: &str,
    target: Option<&str>,
    resend: Option<(&str, &str, &str)>,
) -> Result<Vec<crate::payout::Built>, String> {
    let plan = crate::payout::build(cfg, store, period, target, resend).await?;
    let (sink, settings) = files_target(cfg, &plan.bank, store)?;
    let before = crate::payout::delivered_ids(store, &settings.target).await?;
    crate::payout::deliver_now(store.clone(), sink, settings, Duration::from_secs(60)).await?;
    crate::payout::outcome(store, &plan, &before).await
}

/// A file sink: each delivery one file under `directory/<path or out>/`.
fn file_target(
    cfg: &Config,
    c: &crate::config::Connector,
    t: &OpRef,
    op: &crate::config::connector::Operation,
) -> Result<(Arc<dyn Sink>, TargetSettings), String> {
    let dir = cfg
        .dir
        .join(c.spec.directory.as_deref().unwrap_or("."))
        .join(op.path.as_deref().unwrap_or("out"));
    let batch = op.batch.as_ref().map_or(1, |b| *b.get_ref() as usize);
    let sink = FileSink::new(dir, &t.operation, batch)?;
    let sink = match op.format {
        crate::config::BodyFormat::Json => sink,
        crate::config::BodyFormat::Xml => sink.with_xml(
            op.xml_root.as_deref().unwrap_or("record"),
            op.xml_namespace.as_deref(),
        ),
        crate::config::BodyFormat::Avro
        | crate::config::BodyFormat::Pain002
        | crate::config::BodyFormat::Layout => {
            return Err(
                "Avro and pain002 files are not written by the file sink; use JSON or XML".into(),
            )
        }
    };
    let mut s = settings(cfg, c, t, op, Duration::from_secs(30));
    s.concurrency = s.concurrency.max(batch);
    Ok((Arc::new(sink), s))
}

/// A Kafka sink: an idempotent producer to the operation's topic.
fn kafka_target(
    cfg: &Config,
    c: &crate::config::Connector,
    t: &OpRef,
    op: &crate::config::connector::Operation,
) -> Result<(Arc<dyn Sink>, TargetSettings), String> {
    let avro = match op.format {
        crate::config::BodyFormat::Avro => {
            let schema = cfg
                .schemas
                .get(op.schema.get_ref())
                .ok_or_else(|| format!("no schema {}", op.schema.get_ref()))?;
            Some((
                crate::schema::AvroCodec::new(schema.clone()),
                crate::schema::Type::Record(schema.record.clone()),
            ))
        }
        crate::config::BodyFormat::Json => None,
        crate::config::BodyFormat::Xml
        | crate::config::BodyFormat::Pain002
        | crate::config::BodyFormat::Layout => {
            return Err("only Avro or JSON values are written to Kafka".into())
        }
    };
    let timeout = c.spec.timeout.map_or(Duration::from_secs(30), |d| d.0);
    let batch = op.batch.as_ref().map_or(1000, |b| *b.get_ref() as usize);
    let sink = crate::connectors::kafka::KafkaSink::new(
        c.spec.brokers.as_deref().unwrap_or_default(),
        op.topic.as_deref().unwrap_or_default(),
        avro,
        batch,
        timeout,
    )?;
    let mut s = settings(cfg, c, t, op, timeout);
    s.concurrency = s.concurrency.max(batch);
    Ok((Arc::new(sink), s))
}

/// An http operation's URL: the connector's `base_url` and its `path`.
fn url_of(spec: &crate::config::ConnectorSpec, op: &crate::config::connector::Operation) -> String {
    spec.url(op)
}

/// The authentication of a connector's requests (secrets resolved).
fn auth_of(spec: &crate::config::ConnectorSpec) -> Result<Option<HttpAuth>, String> {
    Ok(match spec.auth.as_ref().map(|a| a.get_ref()) {
        None => None,
        Some(Auth::Hmac(h)) => Some(HttpAuth::Hmac(h.signer()?)),
        Some(Auth::Bearer(b)) => Some(HttpAuth::Bearer(b.token.resolve()?)),
        Some(Auth::Basic(b)) => Some(HttpAuth::Basic(b.username.clone(), b.password.resolve()?)),
    })
}

/// A connector's TLS files, read (relative to the configuration directory).
fn tls_of(cfg: &Config, spec: &crate::config::ConnectorSpec) -> Result<Tls, String> {
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
    c: &crate::config::Connector,
    t: &OpRef,
    op: &crate::config::connector::Operation,
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

/// Runs a target, and runs it again after a pause when it stops on a store
/// error (the store was unreachable for longer than a lease): a store that
/// restarts must not leave a target stopped.
async fn supervise(
    store: Arc<Store>,
    sink: Arc<dyn Sink>,
    settings: TargetSettings,
    stats: Arc<TargetStats>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match run_target(
            store.clone(),
            sink.clone(),
            settings.clone(),
            stats.clone(),
            shutdown.clone(),
        )
        .await
        {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(target_name = %settings.target, error = %e, "Target stopped on a store error; restarting it");
                if *shutdown.borrow() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Starts a task per source operation that some feed reads (file watch,
/// HTTP pull), and the webhook endpoint if any source is a webhook.
/// Sources that cannot run are logged with the reason.
async fn start_sources(
    cfg: &'static Config,
    store: Arc<Store>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sources: BTreeSet<OpRef> = cfg.mappings.values().map(|m| m.from.clone()).collect();
    let mut tasks = Vec::new();
    let mut hooks = std::collections::HashMap::new();
    for src in &sources {
        let started = (|| -> Result<Option<tokio::task::JoinHandle<()>>, String> {
            let c = cfg
                .connectors
                .get(&src.connector)
                .ok_or("no such connector")?;
            let op = cfg.operation(src).ok_or("no such operation")?;
            let intake = Intake::new(cfg, store.clone(), src)?;
            match c.spec.kind {
                ConnectorKind::File => {
                    let fs = FileSource::new(cfg, intake, src)?;
                    let w = shutdown.clone();
                    Ok(Some(tokio::spawn(async move { fs.run(w).await })))
                }
                ConnectorKind::Http if op.webhook => {
                    let signer =
                        match c.spec.auth.as_ref().map(|a| a.get_ref()) {
                            Some(Auth::Hmac(h)) => Some(h.signer()?),
                            Some(_) => return Err(
                                "webhooks verify HMAC signatures only; set [auth] type = \"hmac\""
                                    .into(),
                            ),
                            None => None,
                        };
                    hooks.insert(
                        (src.connector.clone(), src.operation.clone()),
                        WebhookOp { intake, signer },
                    );
                    Ok(None)
                }
                ConnectorKind::Http => {
                    let url = url_of(&c.spec, op);
                    let timeout = c.spec.timeout.map_or(Duration::from_secs(30), |d| d.0);
                    let pull = HttpPull {
                        intake,
                        client: crate::connectors::http::client(timeout, &tls_of(cfg, &c.spec)?)?,
                        url: reqwest::Url::parse(&url)
                            .map_err(|e| format!("bad URL {url:?}: {e}"))?,
                        method: reqwest::Method::from_bytes(
                            op.method.as_deref().unwrap_or("GET").as_bytes(),
                        )
                        .map_err(|e| e.to_string())?,
                        auth: auth_of(&c.spec)?,
                        cursor_param: op.cursor_param.clone(),
                        items_field: op.items_field.clone(),
                        next_cursor_field: op.next_cursor_field.clone(),
                        poll: op.poll_interval.map_or(Duration::from_secs(5), |d| d.0),
                        timeout,
                        format: op.format,
                    };
                    let w = shutdown.clone();
                    Ok(Some(tokio::spawn(async move { pull.run(w).await })))
                }
                ConnectorKind::Kafka => {
                    let group = op.group.clone().unwrap_or_else(|| format!("tongban.{src}"));
                    let ks = crate::connectors::kafka::KafkaSource::new(
                        intake,
                        c.spec.brokers.as_deref().unwrap_or_default(),
                        op.topic.as_deref().unwrap_or_default(),
                        &group,
                    )?;
                    let w = shutdown.clone();
                    Ok(Some(tokio::spawn(async move { ks.run(w).await })))
                }
            }
        })();
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
        let w = &cfg.hub.webhooks;
        let limits = webhook::WebhookLimits {
            max_body: w.max_body_bytes,
            window: w.window.0,
        };
        let names: Vec<String> = hooks.keys().map(|(c, o)| format!("{c}.{o}")).collect();
        let app = webhook::router(hooks, GroupCommit::start(store.clone(), 512), limits);
        match tokio::net::TcpListener::bind(w.listen).await {
            Ok(listener) => {
                tracing::info!(listen = %w.listen, sources = ?names, "Serving webhooks");
                let mut stop = shutdown.clone();
                tasks.push(tokio::spawn(async move {
                    let graceful = async move {
                        while !*stop.borrow() {
                            if stop.changed().await.is_err() {
                                break;
                            }
                        }
                    };
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(graceful)
                        .await
                    {
                        tracing::error!(error = %e, "Webhook endpoint failed");
                    }
                }));
            }
            Err(e) => tracing::error!(listen = %w.listen, error = %e, "Cannot serve webhooks"),
        }
    }
    tasks
}

/// The served targets of a running hub, with their counters.
pub type Served = Vec<(OpRef, Arc<TargetStats>)>;

/// Starts the hub on an open store: every source a feed reads and a
/// dispatcher per target a feed writes to, until `shutdown` turns true.
/// Returns the tasks (await them after shutdown) and the targets served.
pub async fn start_hub(
    cfg: &'static Config,
    store: Arc<Store>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> (Vec<tokio::task::JoinHandle<()>>, Served) {
    let targets: BTreeSet<OpRef> = cfg.mappings.values().map(|m| m.to.clone()).collect();
    let mut tasks = start_sources(cfg, store.clone(), shutdown.clone()).await;
    let mut served = Vec::new();
    // Each target a feed writes to, and beside a bank's payment target the
    // files target of its batch files.
    let mut plan: Vec<(OpRef, Made)> = Vec::new();
    for t in &targets {
        plan.push((t.clone(), target(cfg, t, &store)));
        let bank = cfg
            .connectors
            .get(&t.connector)
            .and_then(|c| crate::payout::bank_format(c, &t.operation))
            .and_then(|_| crate::payout::bank_target(cfg, Some(&t.to_string())).ok());
        if let Some(bank) = bank {
            let files = OpRef {
                connector: t.connector.clone(),
                operation: format!("{}/files", t.operation),
            };
            plan.push((files, files_target(cfg, &bank, &store)));
        }
    }
    for (t, made) in plan {
        match made {
            Ok((sink, settings)) => {
                tracing::info!(target_name = %t, concurrency = settings.concurrency, "Dispatching");
                let stats = Arc::new(TargetStats::default());
                served.push((t, stats.clone()));
                tasks.push(tokio::spawn(supervise(
                    store.clone(),
                    sink,
                    settings,
                    stats,
                    shutdown.clone(),
                )));
            }
            Err(why) => tracing::warn!(target_name = %t, reason = %why, "Not dispatching"),
        }
    }
    (tasks, served)
}

/// `tongban run`: the sources, and a dispatcher task per target, until
/// SIGTERM or Ctrl-C; then sources stop, in-flight deliveries finish and
/// are recorded, and the process exits 0.
pub fn run(cfg: Config) -> ExitCode {
    init_logs();
    // The configuration lives as long as the process; tasks borrow it.
    let cfg: &'static Config = Box::leak(Box::new(cfg));
    let rt = runtime();
    let code = rt.block_on(async move {
        let store = match Store::open(&cfg.hub.store.url, &cfg.dir).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(error = %e, "Cannot open the store");
                return ExitCode::from(1);
            }
        };
        let (stop, watch) = tokio::sync::watch::channel(false);
        let (mut tasks, served) = start_hub(cfg, store.clone(), watch.clone()).await;
        let listen = cfg.hub.admin.listen;
        match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => {
                tracing::info!(listen = %listen, "Serving the operations API");
                let admin = Arc::new(crate::admin::Admin::new(store.clone(), cfg, served));
                tasks.push(tokio::spawn(crate::admin::serve(
                    listener,
                    admin,
                    watch.clone(),
                )));
            }
            Err(e) => {
                tracing::error!(listen = %listen, error = %e, "Cannot serve the operations API")
            }
        }
        tasks.push(tokio::spawn(crate::admin::run_tasks(store.clone(), watch)));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("Shutting down: finishing deliveries in flight");
        let _ = stop.send(true);
        for t in tasks {
            let _ = t.await;
        }
        tracing::info!("Stopped");
        ExitCode::SUCCESS
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    code
}
