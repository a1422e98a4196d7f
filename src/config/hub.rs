//! `tongban.toml`: the hub itself.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A duration written as text: `500ms`, `5s`, `2m`, `6h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration such as 500ms, 5s, 2m or 6h: {e}"
            ))
        })
    }
}

/// The hub's settings. Every section is optional.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Where messages are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// The admin HTTP API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Delivery defaults for every target.
    #[serde(default)]
    pub dispatch: DispatchConfig,
    /// The endpoint where systems push records to the hub.
    #[serde(default)]
    pub webhooks: WebhookConfig,
    /// Bank payment files.
    #[serde(default)]
    pub payouts: PayoutsConfig,
    /// The exchange log: chaining and seals.
    #[serde(default)]
    pub evidence: EvidenceConfig,
}

/// `[evidence]`: the exchange log (存证). Every hub chains the facts its
/// store recorded; with a `signing_key`, it seals the chain's end.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    /// The key that signs seals: a secret reference (`${file:…}` or
    /// `${env:…}`) to an Ed25519 or SM2 private key in PKCS#8 PEM (`tongban
    /// log keygen` makes one). Without it the chain is kept but not sealed.
    pub signing_key: Option<super::secret::Secret>,
    /// How often the chain's end is sealed (when it moved).
    #[serde(default = "default_seal_every")]
    pub seal_every: Dur,
    /// How often new facts are chained.
    #[serde(default = "default_chain_every")]
    pub chain_every: Dur,
}

fn default_seal_every() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_chain_every() -> Dur {
    Dur(Duration::from_secs(1))
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            signing_key: None,
            seal_every: default_seal_every(),
            chain_every: default_chain_every(),
        }
    }
}

/// `[payouts]`: the payer of the subsidies and how batch files are cut.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutsConfig {
    /// `InitgPty/Nm`: who sends the files.
    #[serde(default = "default_initiator")]
    pub initiator: String,
    /// `Dbtr/Nm`: the account holder the subsidies are paid from.
    #[serde(default = "default_debtor_name")]
    pub debtor_name: String,
    /// `DbtrAcct`: that account.
    #[serde(default = "default_debtor_account")]
    pub debtor_account: String,
    /// `DbtrAgt`: its bank's CNAPS code.
    #[serde(default = "default_debtor_bank")]
    pub debtor_bank: String,
    /// Payments per file at most.
    #[serde(default = "default_max_per_file")]
    pub max_per_file: usize,
    /// The day of the period's month the bank pays (`ReqdExctnDt`).
    #[serde(default = "default_execution_day")]
    pub execution_day: u32,
    /// How long after a file is made its bank results may take before
    /// `payouts status` raises an alarm.
    #[serde(default = "default_results_deadline")]
    pub results_deadline: Dur,
}

fn default_results_deadline() -> Dur {
    Dur(Duration::from_secs(3 * 24 * 3600))
}

fn default_initiator() -> String {
    "tongban".into()
}
fn default_debtor_name() -> String {
    "Subsidy payment account".into()
}
fn default_debtor_account() -> String {
    "0000000000000000".into()
}
fn default_debtor_bank() -> String {
    "000000000000".into()
}
fn default_max_per_file() -> usize {
    50_000
}
fn default_execution_day() -> u32 {
    25
}

impl Default for PayoutsConfig {
    fn default() -> Self {
        PayoutsConfig {
            initiator: default_initiator(),
            debtor_name: default_debtor_name(),
            debtor_account: default_debtor_account(),
            debtor_bank: default_debtor_bank(),
            max_per_file: default_max_per_file(),
            execution_day: default_execution_day(),
            results_deadline: default_results_deadline(),
        }
    }
}

/// `[webhooks]`: `POST /ingest/<connector>/<operation>`, served by
/// `tongban run` when some source operation has `webhook = true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Address to listen on (separate from the admin API, which stays internal).
    #[serde(default = "default_webhook_listen")]
    pub listen: std::net::SocketAddr,
    /// Largest request body accepted, in bytes (larger: 413).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How far a signed request's timestamp may be from the hub's clock.
    #[serde(default = "default_window")]
    pub window: Dur,
}

fn default_webhook_listen() -> std::net::SocketAddr {
    ([127, 0, 0, 1], 8481).into()
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_window() -> Dur {
    Dur(Duration::from_secs(300))
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            listen: default_webhook_listen(),
            max_body_bytes: default_max_body(),
            window: default_window(),
        }
    }
}

/// `[store]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH[?cache_mib=N]` (embedded, the default; a relative path
    /// is relative to the config directory; N MiB of page cache, 64 unless
    /// given) or `postgres://user@host:port/db`.
    #[serde(default = "default_store")]
    pub url: String,
}

fn default_store() -> String {
    "sqlite://var/tongban.db".into()
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: default_store(),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin API and console.
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
}

fn default_listen() -> std::net::SocketAddr {
    ([127, 0, 0, 1], 8480).into()
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_listen(),
        }
    }
}

/// `[dispatch]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    /// Delay before each retry; after the last one a message is dead.
    #[serde(default = "default_schedule")]
    pub retry_schedule: Vec<Dur>,
    /// Random spread of each delay, in percent (± this much).
    #[serde(default = "default_jitter")]
    pub jitter_percent: u8,
    /// How long a claimed message stays leased to one worker.
    #[serde(default = "default_lease")]
    pub lease: Dur,
}

fn default_schedule() -> Vec<Dur> {
    [5, 30, 120, 600, 1800, 7200, 21600]
        .into_iter()
        .map(|s| Dur(Duration::from_secs(s)))
        .collect()
}
fn default_jitter() -> u8 {
    20
}
fn default_lease() -> Dur {
    Dur(Duration::from_secs(60))
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            retry_schedule: default_schedule(),
            jitter_percent: default_jitter(),
            lease: default_lease(),
        }
    }
}

impl HubConfig {
    /// Checks values serde cannot; returns messages.
    pub fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        let u = &self.store.url;
        if !(u.starts_with("sqlite://")
            || u.starts_with("postgres://")
            || u.starts_with("postgresql://"))
        {
            out.push(format!(
                "store.url {u:?} must start with sqlite:// or postgres://"
            ));
        }
        if let Some(Err(e)) = crate::store::sqlite_url(u) {
            out.push(e.to_string());
        }
        if self.dispatch.jitter_percent > 100 {
            out.push("dispatch.jitter_percent must be at most 100".into());
        }
        let p = &self.payouts;
        if p.max_per_file == 0 {
            out.push("payouts.max_per_file must be at least 1".into());
        }
        if !(1..=28).contains(&p.execution_day) {
            out.push("payouts.execution_day must be 1 to 28".into());
        }
        if p.debtor_bank.len() != 12 || !p.debtor_bank.bytes().all(|b| b.is_ascii_digit()) {
            out.push(format!(
                "payouts.debtor_bank {:?} must be a 12-digit CNAPS code",
                p.debtor_bank
            ));
        }
        if self.dispatch.retry_schedule.is_empty() {
            out.push("dispatch.retry_schedule must have at least one delay".into());
        }
        out
    }
}
