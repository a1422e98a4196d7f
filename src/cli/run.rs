//! `tongban run` and `tongban ingest`.

use crate::config::Config;
use crate::hub::Hub;
use crate::pipeline::Pipeline;
use crate::store::Store;
use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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
    let rt = crate::hub::runtime();
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

/// `tongban run`: the sources, and a dispatcher task per target, until
/// SIGTERM or Ctrl-C; then sources stop, in-flight deliveries finish and
/// are recorded, and the process exits 0.
pub fn run(cfg: Config) -> ExitCode {
    init_logs();
    // The configuration lives as long as the process; tasks borrow it.
    let cfg: &'static Config = Box::leak(Box::new(cfg));
    let rt = crate::hub::runtime();
    let code = rt.block_on(async move {
        // The handler first: a SIGTERM that comes while the hub starts (its
        // sources may already be working) must stop it cleanly, not kill it.
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let store = match Store::open(&cfg.hub.store.url, &cfg.dir).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(error = %e, "Cannot open the store");
                return ExitCode::from(1);
            }
        };
        let mut hub = Hub::start(cfg, store.clone()).await;
        let listen = cfg.hub.admin.listen;
        match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => {
                tracing::info!(listen = %listen, "Serving the operations API");
                let admin = Arc::new(crate::admin::Admin::new(
                    store.clone(),
                    cfg,
                    hub.served().clone(),
                ));
                hub.spawn(crate::admin::serve(listener, admin, hub.shutdown()));
            }
            Err(e) => {
                tracing::error!(listen = %listen, error = %e, "Cannot serve the operations API")
            }
        }
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("Shutting down: finishing deliveries in flight");
        hub.stop().await;
        tracing::info!("Stopped");
        ExitCode::SUCCESS
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    code
}
