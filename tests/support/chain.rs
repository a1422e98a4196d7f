//! The shipped configuration against the in-process simulators of every
//! system, with the running hub: what the lifecycle and deadline tests
//! drive.

use std::sync::Arc;
use tongban::demo::scenario::{confine, start_province_sims, write_config, Sims, SECRETS};

/// A running chain: the simulators, the configuration directory (kept
/// while this lives), the configuration, the store and the hub.
pub struct Chain {
    pub sims: Sims,
    pub dir: tempfile::TempDir,
    pub cfg: &'static tongban::config::Config,
    pub store: Arc<tongban::store::Store>,
    pub hub: tongban::hub::Hub,
}

/// Starts the simulators and the hub on the shipped configuration, on
/// `store_url` (PostgreSQL) or the embedded store; the secrets are files,
/// not the process's environment (tests share it).
pub async fn start(store_url: Option<String>) -> Chain {
    start_in(store_url, None, None).await
}

/// A province's chain (`14`: the first two digits of its region codes):
/// its own simulators and store, the hub confined to the province, against
/// the national certificate system `national` (simulator and port) that
/// another province's chain started, or one of its own.
pub async fn start_in(
    store_url: Option<String>,
    province: Option<&str>,
    national: Option<(Arc<tongban::sim::cert::Cert>, u16)>,
) -> Chain {
    let sims = start_province_sims(false, national).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(&super::root(), d, &sims.ports).unwrap();
    if let Some(p) = province {
        confine(d, p).unwrap();
    }
    for (name, value) in SECRETS {
        std::fs::write(d.join(name), value).unwrap();
        for f in std::fs::read_dir(d.join("connectors")).unwrap().flatten() {
            let text = std::fs::read_to_string(f.path()).unwrap();
            let file = format!("${{file:{}}}", d.join(name).display());
            std::fs::write(f.path(), text.replace(&format!("${{env:{name}}}"), &file)).unwrap();
        }
    }
    if let Some(url) = &store_url {
        let toml = std::fs::read_to_string(d.join("tongban.toml")).unwrap();
        let toml = toml.replace("sqlite://store/tongban.db?cache_mib=4", url);
        std::fs::write(d.join("tongban.toml"), toml).unwrap();
    }
    let (cfg, diags) = tongban::hub::load(d);
    let cfg = cfg.unwrap_or_else(|| panic!("{diags}"));
    let cfg: &'static tongban::config::Config = Box::leak(Box::new(cfg));
    let store = Arc::new(
        tongban::store::Store::open(&cfg.hub.store.url, &cfg.dir)
            .await
            .unwrap(),
    );
    let hub = tongban::hub::Hub::start(cfg, store.clone()).await;
    Chain {
        sims,
        dir,
        cfg,
        store,
        hub,
    }
}

/// A one-application form for person `p`: the request, its certificate
/// (for anything but NEW), and `answers` over the defaults (低保, needs
/// care, no work wanted, in the employees' scheme).
pub fn form(
    app: &str,
    request: &str,
    p: &tongban::synth::Person,
    cert: Option<&str>,
    answers: serde_json::Value,
) -> Vec<u8> {
    let mut f = serde_json::json!({
        "application_id": app,
        "submitted_at": tongban::domain::china_now().to_rfc3339(),
        "request": request,
        "applicant": {"id_no": p.id, "name": p.name, "phone": "13800000000",
                      "region_code": p.region, "address": null},
        "certificate_no": cert,
        "target_region_code": null,
        "bank": {"account_no": p.card, "bank_code": p.bank_code, "account_name": p.name},
        "dibao": "DIBAO",
        "needs_long_term_care": true,
        "wants_employment": false,
        "wants_training": false,
        "pension": "EMPLOYEE_SCHEME",
    });
    if let (Some(f), Some(a)) = (f.as_object_mut(), answers.as_object()) {
        f.extend(a.clone());
    }
    serde_json::to_vec(&f).unwrap()
}

impl Chain {
    /// The national certificate system this chain uses, and its port: what
    /// a second province's chain shares.
    pub fn national(&self) -> (Arc<tongban::sim::cert::Cert>, u16) {
        (self.sims.cert.clone(), self.sims.port(9102).unwrap())
    }
}

/// The status updates for person `key` the hub has delivered to the
/// platform, as the platform received them.
pub async fn statuses_delivered(
    store: &tongban::store::Store,
    key: &str,
) -> Vec<serde_json::Value> {
    store
        .messages(
            "provincial_platform.status",
            tongban::store::status::DELIVERED,
            1000,
        )
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.key == key)
        .filter_map(|m| serde_json::from_slice(&m.payload).ok())
        .collect()
}

/// This month and the next, `YYYY-MM`, in China's time.
pub fn this_and_next_month() -> (String, String) {
    let now = tongban::domain::china_now().date_naive();
    let next = chrono::Datelike::with_day(&now, 1)
        .and_then(|d| d.checked_add_months(chrono::Months::new(1)))
        .unwrap();
    (
        now.format("%Y-%m").to_string(),
        next.format("%Y-%m").to_string(),
    )
}
