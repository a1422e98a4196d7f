//! The running hub: plans every source a feed reads and every target a
//! feed writes to, starts a task for each (sources, a supervised
//! dispatcher per target, the bulk-replay worker), and stops them all on
//! one signal, waiting for deliveries in flight to be recorded.
//!
//! The plan is made from the configuration alone, from each connector's
//! typed settings (`connectors::settings`) ([`sources::plan`],
//! [`targets::plan`]): [`load`] and [`check`] make the same settings and
//! the same plan, so what the hub would refuse is an error of `tongban
//! check`, and `run` does not start with it. Used by the
//! CLI (`run`, `payouts build`), the demo and the tests; it uses the
//! connectors, the dispatcher, payouts and the store, and nothing above it
//! (not the CLI, not the operations API).

pub mod evidence;
pub mod sources;
pub mod targets;
pub mod tasks;

use crate::config::{Config, Diagnostic, Diagnostics, OpRef, Severity, SourceText};
use crate::dispatch::{run_target, Sink, TargetSettings, TargetStats};
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the hub cannot start a source or target, or send a period's
/// payment files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The configuration does not make it (the plan's reason).
    #[error("{0}")]
    Plan(String),
    /// A TLS file cannot be read.
    #[error("tls: cannot read {file}: {source}")]
    TlsFile {
        /// The file, as configured.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// One of the two halves of a client identity.
    #[error("tls: client_cert and client_key go together")]
    TlsPair,
    /// Its source or sink cannot be made.
    #[error(transparent)]
    Build(#[from] crate::connectors::BuildError),
    /// A secret cannot be read.
    #[error(transparent)]
    Secret(#[from] crate::config::secret::SecretError),
    /// The payout register refused.
    #[error(transparent)]
    Payout(#[from] crate::payout::PayoutError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The served targets of a running hub, with their counters.
pub type Served = Vec<(OpRef, Arc<TargetStats>)>;

/// A running hub.
pub struct Hub {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    served: Served,
    /// The exchange log's chainer, stopped last (after every fact of the
    /// other tasks was written).
    chainer: (watch::Sender<bool>, JoinHandle<()>),
}

impl Hub {
    /// Starts the hub on an open store: every source a feed reads, a
    /// supervised dispatcher per target a feed writes to, and the
    /// bulk-replay worker. Sources and targets that cannot run are logged
    /// with the reason (and are errors of `tongban check`).
    pub async fn start(cfg: &'static Config, store: Arc<Store>) -> Hub {
        let (stop, watch) = watch::channel(false);
        let mut tasks = sources::start(cfg, store.clone(), watch.clone()).await;
        let mut served = Vec::new();
        for (t, planned) in targets::plan_all(cfg) {
            match planned
                .map_err(HubError::Plan)
                .and_then(|p| targets::build(cfg, &t, p, &store))
            {
                Ok((sink, settings)) => {
                    tracing::info!(target_name = %t, concurrency = settings.concurrency, "Dispatching");
                    let stats = Arc::new(TargetStats::default());
                    served.push((t, stats.clone()));
                    tasks.push(tokio::spawn(supervise(
                        store.clone(),
                        sink,
                        settings,
                        stats,
                        watch.clone(),
                    )));
                }
                Err(why) => tracing::warn!(target_name = %t, reason = %why, "Not dispatching"),
            }
        }
        tasks.push(tokio::spawn(tasks::run(store.clone(), watch)));
        let key = match evidence::seal_key(cfg) {
            Ok(k) => k,
            Err(why) => {
                tracing::error!(reason = %why, "Not sealing the exchange log (it is still chained)");
                None
            }
        };
        let (chain_stop, chain_watch) = watch::channel(false);
        let chainer = tokio::spawn(evidence::run(cfg, store, key, chain_watch));
        Hub {
            stop,
            tasks,
            served,
            chainer: (chain_stop, chainer),
        }
    }

    /// The targets dispatched, with their counters.
    pub fn served(&self) -> &Served {
        &self.served
    }

    /// Turns true when the hub is told to stop: for tasks started beside
    /// it (the operations API) that stop with it.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Adds a task that [`Hub::stop`] waits for.
    pub fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Stops sources and dispatchers; returns once deliveries in flight
    /// are finished and recorded.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.chainer.0.send(true);
        let _ = self.chainer.1.await;
    }
}

/// A configuration directory loaded as the hub runs it: the loader's
/// diagnostics and then [`check`]'s. The configuration is given only if
/// there is no error, so `run` refuses exactly what `tongban check` does.
pub fn load(dir: &std::path::Path) -> (Option<Config>, Diagnostics) {
    let (cfg, mut diags) = Config::load(dir);
    if let Some(c) = &cfg {
        diags.items.extend(check(c));
    }
    (cfg.filter(|_| diags.errors() == 0), diags)
}

/// What the hub adds to the loader's diagnostics: every connector's
/// settings made as its kind makes them (each problem at its place in the
/// connector file), the TLS files of HTTP connectors read and made into a
/// client (without connecting), and every source and target that the hub
/// would not run, as an error at its operation.
pub fn check(cfg: &Config) -> Vec<Diagnostic> {
    let text = |c: &crate::config::Connector| {
        let shown = c
            .file
            .strip_prefix(&cfg.dir)
            .map(|p| p.to_path_buf())
            .unwrap_or(c.file.clone());
        SourceText::new(shown, std::fs::read_to_string(&c.file).unwrap_or_default())
    };
    let mut out = Vec::new();
    if let Some(d) = key_problem(cfg) {
        out.push(d);
    }
    let mut broken = std::collections::BTreeSet::new();
    for c in cfg.connectors.values() {
        match crate::connectors::settings::of(&c.spec, &cfg.dir) {
            Err(problems) => {
                let src = text(c);
                out.extend(
                    problems
                        .into_iter()
                        .map(|p| src.error(p.at.unwrap_or(0), p.message)),
                );
                broken.insert(c.name.clone());
            }
            Ok(crate::connectors::settings::Settings::Http(h)) => {
                if let Some(why) = tls_problem(cfg, c, h.timeout.unwrap_or(Duration::from_secs(30)))
                {
                    out.push(text(c).error(0, why));
                }
            }
            Ok(crate::connectors::settings::Settings::Deadlines(d)) => {
                if let Some(why) =
                    calendar_gap(&d.calendar, crate::domain::china_now().date_naive())
                {
                    out.push(text(c).at(Severity::Warning, 0, why));
                }
            }
            Ok(_) => {}
        }
    }
    let at = |r: &OpRef, what: &str, why: String| {
        let c = cfg.connectors.get(&r.connector);
        let (file, line) = c.map_or((cfg.dir.join("connectors"), 0), |c| {
            let src = text(c);
            let base = r.operation.trim_end_matches("/files");
            let line = c
                .spec
                .operations
                .get(base)
                .map_or(0, |o| src.line_col(o.span().start).0);
            (src.path, line)
        });
        Diagnostic {
            severity: Severity::Error,
            file,
            line,
            column: if line == 0 { 0 } else { 1 },
            message: format!("{what} {r} would not run: {why}"),
        }
    };
    for (s, p) in sources::plan_all(cfg) {
        if let Err(why) = p {
            if !broken.contains(&s.connector) {
                out.push(at(&s, "source", why));
            }
        }
    }
    for (t, p) in targets::plan_all(cfg) {
        if let Err(why) = p {
            if !broken.contains(&t.connector) {
                out.push(at(&t, "target", why));
            }
        }
    }
    out
}

/// A year the deadline calendar should have and lacks on `today`: this
/// year, and from November (when the State Council publishes it) the next.
pub fn calendar_gap(
    calendar: &crate::domain::workdays::Calendar,
    today: chrono::NaiveDate,
) -> Option<String> {
    use chrono::Datelike;
    let mut years = vec![today.year()];
    if today.month() >= 11 {
        years.push(today.year() + 1);
    }
    let missing: Vec<String> = years
        .into_iter()
        .filter(|y| !calendar.covers(*y))
        .map(|y| y.to_string())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the deadline calendar has no table for {}: only Saturdays and Sundays are rest days there, so deadlines over its holidays come too early; add calendar/cn-{}.toml from the State Council's notice of public holidays",
            missing.join(" and "),
            missing[0]
        )
    })
}

/// Why an HTTP connector's TLS settings would not make a client: its
/// files read and its client made as `run` makes them. A client key
/// whose secret is not available here is left to the loader's warning.
fn tls_problem(cfg: &Config, c: &crate::config::Connector, timeout: Duration) -> Option<String> {
    let t = c.spec.tls.as_ref()?;
    if t.client_key.as_ref().is_some_and(|k| k.resolve().is_err()) {
        return None;
    }
    let made = targets::tls_of(cfg, &c.spec).and_then(|tls| {
        crate::connectors::http::client(timeout, &tls)
            .map(drop)
            .map_err(HubError::from)
    });
    made.err().map(|e| e.to_string())
}

/// `tongban payouts build`: batches the period, queues their files on the
/// bank's files target, delivers them now through the outbox, and says
/// where each batch's file stands.
pub async fn send_payouts(
    cfg: &Config,
    store: &Arc<Store>,
    period: &str,
    target: Option<&str>,
    resend: Option<(&str, &str, &str)>,
) -> Result<Vec<crate::payout::Built>, HubError> {
    let plan = crate::payout::build(cfg, store, period, target, resend).await?;
    let (sink, settings) = targets::files_target(cfg, &plan.bank, store)?;
    let before = crate::payout::delivered_ids(store, &settings.target).await?;
    crate::payout::deliver_now(store.clone(), sink, settings, Duration::from_secs(60)).await?;
    Ok(crate::payout::outcome(store, &plan, &before).await?)
}

/// Runs a target, and runs it again after a pause when it stops on a store
/// error (the store was unreachable for longer than a lease): a store that
/// restarts must not leave a target stopped.
async fn supervise(
    store: Arc<Store>,
    sink: Arc<dyn Sink>,
    settings: TargetSettings,
    stats: Arc<TargetStats>,
    shutdown: watch::Receiver<bool>,
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

/// The multi-threaded tokio runtime the hub runs on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The `[evidence] signing_key` that cannot be used: unreadable here (a
/// warning: the environment of `run` may differ), or not a key (an error).
fn key_problem(cfg: &Config) -> Option<Diagnostic> {
    let problem = evidence::seal_key(cfg).err()?;
    let file = cfg.dir.join("tongban.toml");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let at = text.find("signing_key").unwrap_or(0);
    let src = SourceText::new(std::path::PathBuf::from("tongban.toml"), text);
    Some(match problem {
        evidence::KeyProblem::Unreadable(..) => src.at(
            Severity::Warning,
            at,
            format!("{problem}; `tongban run` will need it to seal the exchange log"),
        ),
        evidence::KeyProblem::NotAKey(..) => src.error(at, problem.to_string()),
    })
}

/// Resolves once `shutdown` turns true (or its sender is gone): the
/// graceful-shutdown signal of the servers the hub runs.
pub async fn stopped(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod calendar_tests {
    use super::calendar_gap;
    use crate::domain::workdays::Calendar;

    #[test]
    fn check_warns_of_a_missing_year_table_from_november() {
        let mut c = Calendar::default();
        c.parse_year("year = 2026").unwrap();
        let day = |m, d| chrono::NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        assert_eq!(calendar_gap(&c, day(10, 31)), None);
        let w = calendar_gap(&c, day(11, 1)).unwrap();
        assert!(
            w.starts_with("the deadline calendar has no table for 2027:")
                && w.contains("calendar/cn-2027.toml"),
            "{w}"
        );
        let empty = Calendar::default();
        assert!(calendar_gap(&empty, day(12, 7))
            .unwrap()
            .contains("no table for 2026 and 2027"));
    }
}
