//! The exchange log's chainer: chains the facts the store recorded, every
//! `[evidence] chain_every`, and seals the chain's end with the configured
//! key every `seal_every` when it moved (`crate::store::evidence`).

use crate::config::secret::Secret;
use crate::config::Config;
use crate::store::evidence::SealKey;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Entries chained per transaction.
const CHUNK: usize = 10_000;

/// The configured signing key's reference, a relative file taken relative
/// to the configuration directory.
pub fn key_reference(cfg: &Config) -> Option<Secret> {
    cfg.hub.evidence.signing_key.as_ref().map(|s| match s {
        Secret::File(p) if std::path::Path::new(p).is_relative() => {
            Secret::File(cfg.dir.join(p).display().to_string())
        }
        other => other.clone(),
    })
}

/// Why the signing key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    /// The reference cannot be read here.
    #[error("the signing key {0} cannot be read here: {1}")]
    Unreadable(String, crate::config::secret::SecretError),
    /// It was read and is not a key.
    #[error("the signing key {0} is not a key: {1}")]
    NotAKey(String, crate::store::evidence::KeyError),
}

/// The configured signing key; `Ok(None)` when none is configured.
pub fn seal_key(cfg: &Config) -> Result<Option<SealKey>, KeyProblem> {
    let Some(r) = key_reference(cfg) else {
        return Ok(None);
    };
    let shown = cfg
        .hub
        .evidence
        .signing_key
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let pem = r
        .resolve()
        .map_err(|e| KeyProblem::Unreadable(shown.clone(), e))?;
    SealKey::from_pem(&pem)
        .map(Some)
        .map_err(|e| KeyProblem::NotAKey(shown, e))
}

/// Chains everything unchained; then seals the end if `key` is given, it
/// moved since the last seal, and `force` or the last seal is older than
/// `seal_every`.
pub async fn chain_and_seal(
    store: &Store,
    key: Option<&SealKey>,
    seal_every: Duration,
    force: bool,
) -> Result<usize, crate::store::StoreError> {
    let mut chained = 0;
    let mut head = None;
    loop {
        let c = store.chain_evidence(CHUNK).await?;
        chained += c.chained;
        head = c.head.or(head);
        if c.chained < CHUNK {
            break;
        }
    }
    let (Some(key), Some(head)) = (key, head) else {
        return Ok(chained);
    };
    let now = crate::store::now_ms();
    let last = store.last_seal().await?;
    let due = match &last {
        None => true,
        Some(s) if s.pos >= head.pos => false,
        Some(s) => force || now - s.at >= seal_every.as_millis() as i64,
    };
    if due {
        store.add_seal(key.seal(head, now)).await?;
        tracing::debug!(pos = head.pos, "Exchange log sealed");
    }
    Ok(chained)
}

/// Runs the chainer until `shutdown`; then chains and seals once more.
pub async fn run(
    cfg: &'static Config,
    store: Arc<Store>,
    key: Option<SealKey>,
    mut shutdown: watch::Receiver<bool>,
) {
    let e = &cfg.hub.evidence;
    loop {
        let stopping = *shutdown.borrow();
        if let Err(err) = chain_and_seal(&store, key.as_ref(), e.seal_every.0, stopping).await {
            tracing::warn!(error = %err, "Cannot chain the exchange log; trying again");
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(e.chain_every.0) => {}
            _ = shutdown.changed() => {}
        }
    }
}
