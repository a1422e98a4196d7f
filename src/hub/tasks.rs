//! The bulk-replay worker: runs the store's running tasks (made by an
//! operator through the CLI or the operations API), a chunk at a time.

use crate::store::Store;
use std::sync::Arc;
use tokio::sync::watch;

/// Dead messages replayed per chunk of a task.
const CHUNK: usize = 500;

/// Runs the running bulk replays, a chunk at a time, until `shutdown`.
pub async fn run(store: Arc<Store>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Only the running tasks' ids are read each round: the task table
        // keeps every task ever made.
        let mut more = false;
        match store.running_tasks().await {
            Ok(ids) => {
                for id in ids {
                    match store.run_task(id, CHUNK).await {
                        Ok(Some(t)) if t.status == "done" => {
                            tracing::info!(task = id, replayed = t.done, "Bulk replay done")
                        }
                        Ok(Some(t)) => more |= t.status == "running",
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(task = id, error = %e, "Bulk replay chunk failed; trying again")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "Cannot read the tasks"),
        }
        if !more {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
