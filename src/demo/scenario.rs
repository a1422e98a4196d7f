//! The demo's world: the simulators of the systems, started in-process on
//! 127.0.0.1, their secrets, and the hub configuration pointed at them.
//! The process tests of the certificate lifecycle use it too.

use crate::sim::{
    self, cert::Cert, civil::Civil, platform::Platform, referral, sscard::Sscard, subsidies,
};
use std::path::Path;
use std::sync::Arc;

/// The simulators' secrets, by the environment variable the shipped
/// connectors read them from.
pub const SECRETS: [(&str, &str); 7] = [
    ("PLATFORM_APP_SECRET", "demo-platform-secret"),
    ("CERT_APP_SECRET", "demo-certificate-secret"),
    ("SSCARD_TOKEN", "demo-sscard-token"),
    ("SUBSIDIES_PASSWORD", "demo-subsidies-password"),
    ("PENSION_TOKEN", "demo-pension-token"),
    ("EMPLOYMENT_TOKEN", "demo-employment-token"),
    ("CIVIL_TOKEN", "demo-civil-token"),
];

/// The secret of an environment variable of [`SECRETS`].
pub fn secret(name: &str) -> &'static str {
    SECRETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|s| s.1)
        .unwrap_or("")
}

/// The simulated systems, running.
pub struct Sims {
    /// The provincial platform.
    pub platform: Arc<Platform>,
    /// The national certificate system.
    pub cert: Arc<Cert>,
    /// The social security card system.
    pub sscard: Arc<Sscard>,
    /// The two-subsidies system.
    pub subsidies: Arc<subsidies::Subsidies>,
    /// The pension system.
    pub pension: Arc<referral::Referral>,
    /// The employment platform.
    pub employment: Arc<referral::Referral>,
    /// Civil affairs and public security: deaths, 低保 changes.
    pub civil: Arc<Civil>,
    /// Shipped port → the simulator's port.
    pub ports: Vec<(u16, u16)>,
}

impl Sims {
    /// The port a simulator listens on, by the port the shipped connectors
    /// name (9102: the national certificate system).
    pub fn port(&self, shipped: u16) -> Option<u16> {
        self.ports.iter().find(|(s, _)| *s == shipped).map(|p| p.1)
    }
}

/// Starts one province's simulators (platform, card, subsidies, pension,
/// employment, civil affairs) on free ports of 127.0.0.1 (with the demo's
/// faults if `faults`), against the
/// national certificate system `national` (its simulator and port: the
/// one all provinces share), or a national system of their own.
pub async fn start_province_sims(
    faults: bool,
    national: Option<(Arc<Cert>, u16)>,
) -> Result<Sims, String> {
    let platform = Platform::new(Some(secret("PLATFORM_APP_SECRET")));
    let cert = match &national {
        Some((c, _)) => c.clone(),
        None => Cert::new(Some(secret("CERT_APP_SECRET"))),
    };
    let sscard = Sscard::new(Some(secret("SSCARD_TOKEN")), Some(4000));
    let subsidies = subsidies::Subsidies::new(
        Some(("tongban", secret("SUBSIDIES_PASSWORD"))),
        subsidies::Rates::default(),
    );
    let pension = referral::Referral::new(referral::Kind::Pension, Some(secret("PENSION_TOKEN")));
    let employment =
        referral::Referral::new(referral::Kind::Employment, Some(secret("EMPLOYMENT_TOKEN")));
    let civil = Civil::new(Some(secret("CIVIL_TOKEN")));
    if faults {
        cert.common.set_faults(sim::Faults {
            error_permille: 20,
            ..Default::default()
        });
        subsidies.common.set_faults(sim::Faults {
            error_permille: 10,
            latency_ms: 1,
            ..Default::default()
        });
        employment.common.set_faults(sim::Faults {
            throttle_permille: 20,
            retry_after_s: 1,
            ..Default::default()
        });
        platform.common.set_faults(sim::Faults {
            error_permille: 5,
            ..Default::default()
        });
    }
    let mut ports = Vec::new();
    let mut routers = vec![(9101, platform.router())];
    match &national {
        Some((_, port)) => ports.push((9102, *port)),
        None => routers.push((9102, cert.router())),
    }
    routers.extend([
        (9103, sscard.router()),
        (9104, subsidies.router()),
        (9105, pension.router()),
        (9106, employment.router()),
        (9107, civil.router()),
    ]);
    for (shipped, router) in routers {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("binding a simulator: {e}"))?;
        ports.push((shipped, l.local_addr().map_err(|e| e.to_string())?.port()));
        tokio::spawn(sim::serve(l, router));
    }
    ports.sort_unstable();
    Ok(Sims {
        platform,
        cert,
        sscard,
        subsidies,
        pension,
        employment,
        civil,
        ports,
    })
}

/// Writes the demo's configuration: the shipped one, pointed at the
/// simulators, with their capacity as rate limits and short poll intervals.
pub fn write_config(from: &Path, dir: &Path, ports: &[(u16, u16)]) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    // Everything an earlier demo left: its files would meet batch ids
    // that start again from 1 with the new store.
    for sub in [
        "calendar",
        "connectors",
        "mappings",
        "schemas",
        "store",
        "var",
        "keys",
    ] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    for sub in [
        "calendar",
        "connectors",
        "mappings",
        "mappings/tables",
        "schemas",
        "store",
    ] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io)?;
        if sub == "store" {
            continue;
        }
        let rd = std::fs::read_dir(from.join(sub))
            .map_err(|e| format!("{}: {e}", from.join(sub).display()))?;
        for e in rd.flatten() {
            let p = e.path();
            if !p.is_file() {
                continue;
            }
            let mut text =
                std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            if sub == "connectors" {
                for (shipped, port) in ports {
                    text = text.replace(
                        &format!("127.0.0.1:{shipped}"),
                        &format!("127.0.0.1:{port}"),
                    );
                }
                for slow in ["\"5s\"", "\"10s\"", "\"1h\""] {
                    text = text.replace(
                        &format!("poll_interval = {slow}"),
                        "poll_interval = \"100ms\"",
                    );
                }
                // The simulators' capacity, not the production systems'.
                text = text.replace(
                    "rate_limit = { per_second = 20, burst = 5 }",
                    "rate_limit = { per_second = 3000, burst = 500 }",
                );
                text = text.replace(
                    "rate_limit = { per_second = 50, burst = 20 }",
                    "rate_limit = { per_second = 5000, burst = 1000 }",
                );
                text = text.replace(
                    "rate_limit = { per_second = 200 }",
                    "rate_limit = { per_second = 20000 }",
                );
                text = text.replace("concurrency = 4\n", "concurrency = 64\n");
                text = text.replace("concurrency = 8\n", "concurrency = 64\n");
                text = text.replace("concurrency = 16\n", "concurrency = 64\n");
                if !text.contains("concurrency =") {
                    text = text.replace(
                        "timeout = \"10s\"\n",
                        "timeout = \"10s\"\nconcurrency = 64\n",
                    );
                }
            }
            std::fs::write(dir.join(sub).join(e.file_name()), text).map_err(io)?;
        }
    }
    // A 4 MiB page cache: the store's pages stay in the OS's file cache
    // anyway, and at 100k people 4 MiB instead of 16 took the peak RSS from
    // 323-327 to 295-300 MB and the run from 57.7-57.9 to 54.5-56.1 s.
    // The exchange log sealed with an SM2 key of the demo's own (made
    // afresh each run), every 10 s.
    let key = crate::store::evidence::SealKey::generate("sm2").map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("keys")).map_err(io)?;
    std::fs::write(
        dir.join("keys/evidence.pem"),
        key.to_pem().map_err(|e| e.to_string())?,
    )
    .map_err(io)?;
    std::fs::write(dir.join("keys/evidence.pem.pub"), key.public().to_pem()).map_err(io)?;
    std::fs::write(
        dir.join("tongban.toml"),
        "# Written by tongban demo.\n[store]\nurl = \"sqlite://store/tongban.db?cache_mib=4\"\n\n[webhooks]\nlisten = \"127.0.0.1:0\"\n\n[dispatch]\nretry_schedule = [\"200ms\", \"500ms\", \"1s\", \"2s\", \"5s\", \"10s\", \"30s\"]\njitter_percent = 20\nlease = \"30s\"\n\n[evidence]\nsigning_key = \"${file:keys/evidence.pem}\"\nseal_every = \"10s\"\n",
    )
    .map_err(io)?;
    Ok(())
}

/// Confines the configuration in `dir` (as [`write_config`] wrote it) to
/// one province (`14`: the first two digits of its region codes): the hub
/// asks the national certificate system for that province's events and
/// progress only, and its jurisdiction table (`mappings/tables/
/// jurisdiction.csv`) lists that province alone, so that a migration to
/// another province unloads the card and stops the subsidies here, and one
/// from another province loads and starts them.
pub fn confine(dir: &Path, province: &str) -> Result<(), String> {
    confine_to(dir, &|p| p == province)
}

/// Confines the configuration in `dir` to every province of its
/// jurisdiction table but `province` (the hub of the other provinces,
/// beside `province`'s own).
pub fn confine_all_but(dir: &Path, province: &str) -> Result<(), String> {
    confine_to(dir, &|p| p != province)
}

fn confine_to(dir: &Path, keep: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let table = dir.join("mappings/tables/jurisdiction.csv");
    let text = std::fs::read_to_string(&table).map_err(|e| io(&table, e))?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("province,name");
    let ours: Vec<&str> = lines
        .filter(|l| l.split(',').next().is_some_and(keep))
        .collect();
    if ours.is_empty() {
        return Err(format!("{}: no province to keep", table.display()));
    }
    let codes: Vec<&str> = ours.iter().filter_map(|l| l.split(',').next()).collect();
    let cert = dir.join("connectors/national_cert.toml");
    let text = std::fs::read_to_string(&cert).map_err(|e| io(&cert, e))?;
    let mut confined = text.clone();
    for path in ["/api/cert/v3/events", "/api/cert/v3/progress"] {
        confined = confined.replace(
            &format!("path = \"{path}\""),
            &format!("path = \"{path}?province={}\"", codes.join(",")),
        );
    }
    if confined.matches("?province=").count() != 2 {
        return Err(format!(
            "{}: no events and progress paths to confine to provinces {}",
            cert.display(),
            codes.join(",")
        ));
    }
    std::fs::write(&cert, confined).map_err(|e| io(&cert, e))?;
    std::fs::write(&table, format!("{header}\n{}\n", ours.join("\n")))
        .map_err(|e| io(&table, e))?;
    Ok(())
}

/// The environment variable the demo's front-end database URL is in.
pub const FRONT_DB_ENV: &str = "DEMO_FRONT_DB";

/// Table exchange for the employment department (`--employment-tables`):
/// makes its two front-end tables in the database at `url` (named after
/// the province's `tag`; any earlier demo's dropped), and replaces the
/// employment connector in `dir` with a `database` one writing referrals
/// into the first and reading the department's decisions from the second.
pub async fn employment_tables(
    url: &str,
    dir: &Path,
    tag: &str,
) -> Result<(String, String), String> {
    let db = crate::connectors::database::engine::Db::connect(url, 1).map_err(|e| e.to_string())?;
    let (inbox, outbox) = (
        format!("employment_referral_{tag}"),
        format!("employment_decision_{tag}"),
    );
    // MySQL tables in UTF-8 whatever the database's default (names are
    // Chinese); PostgreSQL databases are UTF-8 already.
    let (id, boolean, charset) = match db.mysql() {
        true => (
            "id bigint AUTO_INCREMENT PRIMARY KEY",
            "tinyint(1)",
            " DEFAULT CHARSET=utf8mb4",
        ),
        false => ("id bigserial PRIMARY KEY", "boolean", ""),
    };
    for sql in [
        format!("DROP TABLE IF EXISTS {inbox}"),
        format!("DROP TABLE IF EXISTS {outbox}"),
        format!("CREATE TABLE {inbox} ({id}, idempotency_key varchar(64) NOT NULL UNIQUE, request_id varchar(80), holder_id varchar(18), name varchar(100), phone varchar(40), region_code varchar(6), certificate_no varchar(40), category int, category_name varchar(40), level int, wants_employment {boolean}, wants_training {boolean}, application_id varchar(80)){charset}"),
        format!("CREATE TABLE {outbox} ({id}, decision_id varchar(40) NOT NULL, request_id varchar(80), application_id varchar(80), holder_id varchar(18), department varchar(20), status varchar(20), start_month varchar(7), decided_at varchar(40), read_flag int NOT NULL DEFAULT 0){charset}"),
    ] {
        db.execute(&sql, &[])
            .await
            .map_err(|e| format!("the front-end database at ${FRONT_DB_ENV}: {sql}: {e}"))?;
    }
    let engine = if db.mysql() { "mysql" } else { "postgres" };
    let text = format!(
        r#"# Written by tongban demo --employment-tables: the employment service
# platform over table exchange (库表交换) in a front-end database.
kind = "database"
description = "Employment service platform (front-end tables)"
engine = "{engine}"
url = "${{env:{FRONT_DB_ENV}}}"

[operations.referral]
direction = "sink"
schema = "EmploymentReferral"
table = "{inbox}"

[operations.decisions]
direction = "source"
id_field = "decision_id"
description = "Its decisions on the records it took, read from its table"
schema = "ReferralDecision"
table = "{outbox}"
watermark = "id"
mark = {{ column = "read_flag", value = "1" }}
poll_interval = "100ms"
"#
    );
    std::fs::write(dir.join("connectors/employment.toml"), text)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok((inbox, outbox))
}

/// `--bank-sftp`: starts the bank's SFTP server (a private sshd serving
/// `DIR/var/bank`, keys in `DIR/var/sshd`) and points the hub's bank
/// connector at it: payment files uploaded into `out/`, result files picked
/// up from `in/`. The bank simulator watches the directory the server
/// serves, as a bank's back office does.
pub fn bank_sftp(dir: &Path) -> Result<crate::sim::sshd::Sshd, String> {
    let sshd = crate::sim::sshd::Sshd::start(&dir.join("var/sshd"))
        .map_err(|e| format!("--bank-sftp: {e}"))?;
    let bank = dir.join("var/bank");
    std::fs::create_dir_all(&bank).map_err(|e| format!("{}: {e}", bank.display()))?;
    let bank = bank
        .canonicalize()
        .map_err(|e| format!("{}: {e}", bank.display()))?;
    let text = format!(
        r#"# Written by tongban demo --bank-sftp: the payout bank's channel over
# SFTP, to a private OpenSSH server on 127.0.0.1 (its host key pinned in
# known_hosts, a key login made for the demo).
kind = "sftp"
description = "Payout bank channel (SFTP)"
directory = "{}"
{}
[operations.payment_instructions]
direction = "sink"
description = "Payments, grouped into pain.001 batch files per bank and period"
schema = "PaymentInstruction"
format = "xml"
file_pattern = "*.pain001.xml"
xml_root = "Document"
xml_namespace = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"

[operations.payment_results]
direction = "source"
description = "Per-payment results, read from pain.002 files and reconciled against the payout register"
schema = "PaymentResult"
format = "pain002"
file_pattern = "*.pain002.xml"
poll_interval = "200ms"
"#,
        bank.display(),
        sshd.connector_lines()
    );
    std::fs::write(dir.join("connectors/bank.toml"), text)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(sshd)
}
