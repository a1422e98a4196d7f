//! `tongban demo`: the whole one-application chain end to end, on this
//! machine, with one command.
//!
//! It starts the simulators of the systems in-process on 127.0.0.1 (fault
//! switches on), writes a hub configuration into the work directory (the
//! shipped connectors, mappings and schemas, pointed at the simulators, with
//! the simulators' capacity as rate limits and short poll intervals), runs
//! the hub on the embedded SQLite store, files N synthetic one-application
//! forms (a few percent of them bad), and follows them through certificate,
//! card, subsidies, pension, employment and status updates to the month's
//! payout list. It prints a report and writes `DIR/report.json`, whose
//! `invariants` say whether each person got exactly what the rules give
//! them, and exits 0 only if every invariant holds.

use crate::config::Config;
use crate::sim::{self, cert::Cert, platform::Platform, referral, sscard::Sscard, subsidies};
use crate::store::{status, Store};
use crate::synth::{self, Rng};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the demo is asked to do.
#[derive(Clone, Debug)]
pub struct DemoArgs {
    /// Applicants.
    pub people: usize,
    /// Work directory (configuration, store, report); the demo owns it.
    pub workdir: PathBuf,
    /// Where the shipped configuration is.
    pub config: PathBuf,
    /// Seed of the synthetic data.
    pub seed: u64,
    /// Switch the simulators' faults off.
    pub no_faults: bool,
    /// Give up after this long.
    pub timeout: Duration,
}

const SECRETS: [(&str, &str); 6] = [
    ("PLATFORM_APP_SECRET", "demo-platform-secret"),
    ("CERT_APP_SECRET", "demo-certificate-secret"),
    ("SSCARD_TOKEN", "demo-sscard-token"),
    ("SUBSIDIES_PASSWORD", "demo-subsidies-password"),
    ("PENSION_TOKEN", "demo-pension-token"),
    ("EMPLOYMENT_TOKEN", "demo-employment-token"),
];

fn secret(name: &str) -> &'static str {
    SECRETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|s| s.1)
        .unwrap_or("")
}

/// One synthetic applicant and what the rules say should happen to them.
struct Applicant {
    application_id: String,
    id: String,
    category: u8,
    level: u8,
    /// What is wrong with the record, if anything.
    bad: Option<&'static str>,
    has_card: bool,
    card_ok: bool,
    dibao: &'static str,
    care: bool,
    pension: &'static str,
    adult: bool,
    wants_work: bool,
    filed_at: i64,
}

impl Applicant {
    fn certified(&self) -> bool {
        self.bad.is_none()
            || self.bad == Some("bank card fails its check digit")
            || self.bad == Some("no social security card")
    }
    fn card_loaded(&self) -> bool {
        self.certified() && self.has_card
    }
    fn subsidy_request(&self) -> bool {
        self.certified() && self.dibao != "TEKUN" && self.card_ok
    }
    fn pension(&self) -> bool {
        self.certified() && self.pension != "EMPLOYEE_SCHEME" && self.level <= 2 && self.adult
    }
    fn employment(&self) -> bool {
        self.certified() && self.wants_work
    }
    fn certificate_no(&self) -> String {
        format!("{}{}{}", self.id, self.category, self.level)
    }
}

/// Makes the applicants and their forms.
fn applicants(n: usize, seed: u64) -> Vec<(Applicant, Vec<u8>)> {
    let mut rng = Rng::new(seed);
    // The certificate system dates issues in China's time zone; ages must
    // be counted on the same day.
    let today = crate::domain::china_now().date_naive();
    // One person, one ID number: synthetic numbers collide now and then
    // (county × birth date × sequence), and a second person with the same
    // number would be refused by the certificate system, rightly.
    let mut seen = std::collections::HashSet::with_capacity(n);
    (0..n)
        .map(|i| {
            let p = loop {
                let p = synth::person(&mut rng);
                if seen.insert(p.id.clone()) {
                    break p;
                }
            };
            let bad: Option<&'static str> = match rng.below(1000) {
                0..=9 => Some("ID number fails its check digit"),
                10..=19 => Some("bank card fails its check digit"),
                20..=24 => Some("name missing"),
                25..=29 => Some("no social security card"),
                _ => None,
            };
            let mut id = p.id.clone();
            if bad == Some("ID number fails its check digit") {
                let last = id.pop().unwrap_or('0');
                id.push(if last == '1' { '2' } else { '1' });
            }
            let mut card = p.card.clone();
            if bad == Some("bank card fails its check digit") {
                let last = card.pop().unwrap_or('0');
                card.push(char::from(b'0' + (last as u8 - b'0' + 1) % 10));
            }
            let name = if bad == Some("name missing") {
                "  ".to_string()
            } else {
                p.name.clone()
            };
            let dibao = *rng.pick(&[
                "NONE",
                "NONE",
                "NONE",
                "DIBAO",
                "DIBAO",
                "NEAR_DIBAO",
                "TEKUN",
            ]);
            let care = p.level <= 2 && rng.chance(85);
            let pension = *rng.pick(&["NONE", "NONE", "RESIDENT_SCHEME", "EMPLOYEE_SCHEME"]);
            let wants_employment = rng.chance(20);
            let wants_training = rng.chance(10);
            let age = today.years_since(p.birth).unwrap_or(0);
            let application_id = format!("SX-{seed:04}-{i:08}");
            let form = json!({
                "application_id": application_id,
                "submitted_at": crate::domain::china_now().to_rfc3339(),
                "request": "NEW",
                "applicant": {
                    "id_no": id, "name": name,
                    "phone": format!("13{:09}", rng.below(1_000_000_000)),
                    "region_code": p.region, "address": null
                },
                "certificate_no": null,
                "target_region_code": null,
                "bank": {"account_no": card, "bank_code": p.bank_code, "account_name": p.name},
                "dibao": dibao,
                "needs_long_term_care": care,
                "wants_employment": wants_employment,
                "wants_training": wants_training,
                "pension": pension,
            });
            let a = Applicant {
                application_id,
                id,
                category: p.category,
                level: p.level,
                bad,
                has_card: bad != Some("no social security card"),
                card_ok: bad != Some("bank card fails its check digit"),
                dibao,
                care,
                pension,
                adult: age >= 16,
                wants_work: wants_employment || wants_training,
                filed_at: 0,
            };
            (a, serde_json::to_vec(&form).unwrap_or_default())
        })
        .collect()
}

struct Sims {
    platform: Arc<Platform>,
    cert: Arc<Cert>,
    sscard: Arc<Sscard>,
    subsidies: Arc<subsidies::Subsidies>,
    pension: Arc<referral::Referral>,
    employment: Arc<referral::Referral>,
    /// Shipped port → the simulator's port.
    ports: Vec<(u16, u16)>,
}

async fn start_sims(faults: bool) -> Result<Sims, String> {
    let platform = Platform::new(Some(secret("PLATFORM_APP_SECRET")));
    let cert = Cert::new(Some(secret("CERT_APP_SECRET")));
    let sscard = Sscard::new(Some(secret("SSCARD_TOKEN")), Some(4000));
    let subsidies = subsidies::Subsidies::new(
        Some(("tongban", secret("SUBSIDIES_PASSWORD"))),
        subsidies::Rates::default(),
    );
    let pension = referral::Referral::new(referral::Kind::Pension, Some(secret("PENSION_TOKEN")));
    let employment =
        referral::Referral::new(referral::Kind::Employment, Some(secret("EMPLOYMENT_TOKEN")));
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
    let routers = [
        (9101, platform.router()),
        (9102, cert.router()),
        (9103, sscard.router()),
        (9104, subsidies.router()),
        (9105, pension.router()),
        (9106, employment.router()),
    ];
    let mut ports = Vec::new();
    for (shipped, router) in routers {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("binding a simulator: {e}"))?;
        ports.push((shipped, l.local_addr().map_err(|e| e.to_string())?.port()));
        tokio::spawn(sim::serve(l, router));
    }
    Ok(Sims {
        platform,
        cert,
        sscard,
        subsidies,
        pension,
        employment,
        ports,
    })
}

/// Writes the demo's configuration: the shipped one, pointed at the
/// simulators, with their capacity as rate limits and short poll intervals.
fn write_config(from: &Path, dir: &Path, ports: &[(u16, u16)]) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    // Everything an earlier demo left: its files would meet batch ids
    // that start again from 1 with the new store.
    for sub in ["connectors", "mappings", "schemas", "store", "var"] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    for sub in [
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
    std::fs::write(
        dir.join("tongban.toml"),
        "# Written by tongban demo.\n[store]\nurl = \"sqlite://store/tongban.db?cache_mib=4\"\n\n[webhooks]\nlisten = \"127.0.0.1:0\"\n\n[dispatch]\nretry_schedule = [\"200ms\", \"500ms\", \"1s\", \"2s\", \"5s\", \"10s\", \"30s\"]\njitter_percent = 20\nlease = \"30s\"\n",
    )
    .map_err(io)?;
    Ok(())
}

/// A reason as one line per kind of problem: markup removed, numbers
/// (already masked) folded, at most 110 characters.
fn summary(reason: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    let mut run = 0;
    for c in reason.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if in_tag => {}
            c if c.is_ascii_digit() || c == '*' => {
                run += 1;
                if run == 4 {
                    for _ in 0..3 {
                        out.pop();
                    }
                    out.push('…');
                } else if run < 4 {
                    out.push(c);
                }
            }
            c => {
                run = 0;
                out.push(c);
            }
        }
    }
    let out = out.replace("{\"error\":\"", "").replace("\"}", "");
    let out = match out.find("check character is ") {
        Some(i) => format!("{}check character wrong", &out[..i]),
        None => out,
    };
    out.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(110)
        .collect()
}

fn percentile(sorted: &[i64], q: u64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as u64 - 1) * q / 100) as usize]
}

fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// `tongban demo`.
pub fn demo(args: DemoArgs) -> ExitCode {
    let rt = super::run::runtime();
    match rt.block_on(run_demo(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run_demo(args: DemoArgs) -> Result<bool, String> {
    let started = Instant::now();
    let dir = &args.workdir;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Logs go to a file: the terminal shows the progress.
    let log = std::fs::File::create(dir.join("hub.log")).map_err(|e| e.to_string())?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TONGBAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(log))
        .try_init();
    for (k, v) in SECRETS {
        // SAFETY: set before any other thread reads the environment's secrets.
        unsafe { std::env::set_var(k, v) };
    }

    let sims = start_sims(!args.no_faults).await?;
    write_config(&args.config, dir, &sims.ports)?;
    let (cfg, diags) = Config::load(dir);
    let Some(cfg) = cfg else {
        return Err(format!(
            "the demo configuration does not load:\n{}",
            diags
                .items
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ));
    };
    let cfg: &'static Config = Box::leak(Box::new(cfg));
    let store = Arc::new(
        Store::open(&cfg.hub.store.url, &cfg.dir)
            .await
            .map_err(|e| e.to_string())?,
    );

    // The people, and the world they live in: assessments and cards.
    let mut people = applicants(args.people, args.seed);
    for (a, _) in &people {
        sims.cert.assess(&a.id, a.category, a.level);
        if a.has_card {
            sims.sscard.issue_card(&a.id);
        }
    }
    let expect = |f: fn(&Applicant) -> bool| people.iter().filter(|(a, _)| f(a)).count() as u64;
    let want_certs = expect(Applicant::certified);
    let want_cards = expect(Applicant::card_loaded);
    let want_subsidy = expect(Applicant::subsidy_request);
    let want_pension = expect(Applicant::pension);
    let want_employment = expect(Applicant::employment);

    let (stop, watch) = tokio::sync::watch::channel(false);
    let (tasks, served) = super::run::start_hub(cfg, store.clone(), watch).await;

    let mp = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{prefix:>22} [{bar:40}] {pos:>7}/{len:7} {per_sec:>10}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let bar = |name: &str, len: u64| {
        let b = mp.add(ProgressBar::new(len));
        b.set_style(style.clone());
        b.set_prefix(name.to_string());
        b
    };
    let b_filed = bar("forms filed", people.len() as u64);
    let b_certs = bar("certificates issued", want_certs);
    let b_cards = bar("cards loaded", want_cards);
    let b_subsidy = bar("subsidy decisions", want_subsidy);
    let b_pension = bar("pension enrolments", want_pension);
    let b_employment = bar("employment referrals", want_employment);

    // File the forms (the platform keeps them; the demo does not).
    for (a, form) in people.iter_mut() {
        a.filed_at = crate::store::now_ms();
        sims.platform.file(form);
        *form = Vec::new();
        b_filed.inc(1);
    }
    b_filed.finish();

    let count = |c: &Arc<sim::Common>, kind: &str| c.count(kind);
    let deadline = Instant::now() + args.timeout;
    // Done when every expected effect has arrived and nothing is pending,
    // or when nothing has moved for 5 s and nothing is pending (then the
    // invariants say what is missing).
    let mut last = (Vec::new(), Instant::now());
    let observed = loop {
        let now = vec![
            sims.cert.holders() as u64,
            count(&sims.sscard.common, "card_loaded"),
            count(&sims.subsidies.common, "eligibility"),
            count(&sims.pension.common, "enrolled"),
            count(&sims.employment.common, "referred"),
            count(&sims.platform.common, "status"),
        ];
        b_certs.set_position(now[0]);
        b_cards.set_position(now[1]);
        b_subsidy.set_position(now[2]);
        b_pension.set_position(now[3]);
        b_employment.set_position(now[4]);
        let reached = now[0] >= want_certs
            && now[1] >= want_cards
            && now[2] >= want_subsidy
            && now[3] >= want_pension
            && now[4] >= want_employment;
        if now != last.0 {
            last = (now.clone(), Instant::now());
        }
        let quiet = last.1.elapsed() >= Duration::from_secs(5);
        if reached || quiet {
            let mut pending = 0;
            for (t, _) in &served {
                pending += store
                    .pending(&t.to_string())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if pending == 0 {
                break now;
            }
        }
        if Instant::now() > deadline {
            mp.println(format!("gave up after {:?}", args.timeout)).ok();
            break now;
        }
        tokio::time::sleep(Duration::from_millis(if reached || quiet {
            1000
        } else {
            200
        }))
        .await;
    };
    let expected = [
        want_certs,
        want_cards,
        want_subsidy,
        want_pension,
        want_employment,
    ];
    let names = [
        "certificates",
        "cards loaded",
        "subsidy decisions",
        "pension enrolments",
        "employment referrals",
    ];
    for ((n, want), got) in names.iter().zip(expected).zip(&observed) {
        if *got != want {
            mp.println(format!("{n}: expected {want}, the systems saw {got}"))
                .ok();
        }
    }
    for b in [&b_certs, &b_cards, &b_subsidy, &b_pension, &b_employment] {
        b.finish();
    }
    let chain_done = started.elapsed();
    let mut bank = pay(&args, &sims, &store, cfg, &mp, started).await?;
    bank.phases
        .insert(0, ("application chain", chain_done.as_secs_f64()));
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }

    report(&args, &sims, &store, cfg, &people, elapsed, &bank).await
}

/// What the bank leg did.
#[derive(Default)]
struct BankLeg {
    /// Batches built (first round and re-issue round).
    batches: usize,
    /// Payments rejected by the bank the first time (closed accounts).
    rejected: usize,
    /// Payments re-issued with a corrected account.
    reissued: usize,
    /// Credited per payment id, by the bank.
    credited: HashMap<String, u32>,
    /// Payment ids the bank credited twice.
    paid_twice: Vec<String>,
    /// Alarms raised.
    alarms: usize,
    /// Whether every payment got its result in time.
    settled: bool,
    /// When each phase ended, seconds since the demo started.
    phases: Vec<(&'static str, f64)>,
}

/// The month's payouts: the payout list through the hub into the payout
/// register, batch files to the bank (a few accounts closed), the bank's
/// answers reconciled, the rejected payments re-issued with corrected
/// accounts, and paid.
async fn pay(
    args: &DemoArgs,
    sims: &Sims,
    store: &Arc<Store>,
    cfg: &Config,
    mp: &MultiProgress,
    started: Instant,
) -> Result<BankLeg, String> {
    let mut phases = Vec::new();
    let mut phase = |name: &'static str| phases.push((name, started.elapsed().as_secs_f64()));
    let e = |e: crate::store::StoreError| e.to_string();
    let period = sims.subsidies.period.lock().unwrap().clone();
    // The bank: every card on the list open with its holder's name, but one
    // in 200 closed (the list read once, as the payments are counted).
    let bank = sim::bank::Bank::new(&cfg.dir.join("var/bank"));
    let mut closed = Vec::new();
    let mut want = 0i64;
    sims.subsidies.for_each_payout(&period, |p| {
        let state = if want % 200 == 7 {
            closed.push(p.holder_id.clone());
            sim::bank::AccountState::Closed
        } else {
            sim::bank::AccountState::Open
        };
        bank.account(&p.bank_account_no, &p.account_name, state);
        want += 1;
    });
    let deadline = Instant::now() + args.timeout;
    let wait = |what: &'static str| {
        let mp = mp.clone();
        move |ok: bool| {
            if !ok && Instant::now() > deadline {
                mp.println(format!("gave up waiting for {what}")).ok();
                return true;
            }
            ok
        }
    };
    // The whole list is in the payout register.
    let done = wait("the payout register");
    loop {
        let c = store.counts().await.map_err(e)?;
        if done(c.messages("bank.payment_instructions", status::DELIVERED) >= want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phase("payout register");
    let banker = tokio::spawn(bank.clone().run());
    let mut leg = BankLeg::default();
    let results_in = |store: Arc<Store>, period: String| async move {
        store
            .results(&period)
            .await
            .map(|r| r.iter().all(|x| x.1.is_some()))
            .unwrap_or(false)
    };
    // The batches are made and their files queued; the running hub's files
    // target delivers them to the bank's directory. The register is asked
    // (a join over the month's payments) only once the bank has answered
    // every file.
    leg.batches += crate::payout::build(cfg, store, &period, None, None)
        .await?
        .batches
        .len();
    let done = wait("the bank's results");
    while !done(bank.answered() >= leg.batches && results_in(store.clone(), period.clone()).await) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phase("bank results");
    // Re-issue what the bank rejected, each with its holder's new card. The
    // register's results say how many were rejected; the closed accounts'
    // payments are looked up (not every payment of the month, one by one).
    let mut rng = Rng::new(args.seed ^ 0x5eed);
    let register_rejected: i64 = store
        .results(&period)
        .await
        .map_err(e)?
        .iter()
        .filter(|r| r.1.as_deref() == Some("REJECTED"))
        .map(|r| r.2)
        .sum();
    let rejected: Vec<String> = {
        let mut ids = Vec::new();
        for holder in &closed {
            for ty in ["LIVING", "CARE"] {
                let id = format!("{ty}-{holder}-{}", period.replace('-', ""));
                if let Some((_, Some(r), _)) = store.payment(&id).await.map_err(e)? {
                    if r == "REJECTED" {
                        ids.push(id);
                    }
                }
            }
        }
        ids
    };
    if rejected.len() as i64 != register_rejected {
        mp.println(format!(
            "the register has {register_rejected} rejected payments; the closed accounts account for {}",
            rejected.len()
        ))
        .ok();
    }
    leg.rejected = rejected.len();
    for id in &rejected {
        let (row, _, _) = store.payment(id).await.map_err(e)?.ok_or("payment gone")?;
        let mut v: Value = serde_json::from_slice(&row.record).map_err(|e| e.to_string())?;
        let card = synth::luhn_complete(&format!("621700{:012}", rng.below(1_000_000_000_000)));
        bank.account(
            &card,
            v["creditor_name"].as_str().unwrap_or_default(),
            sim::bank::AccountState::Open,
        );
        v["creditor_account"] = card.into();
        let record = serde_json::to_vec(&v).map_err(|e| e.to_string())?;
        store
            .reissue(
                id,
                Some((record, row.bank_code)),
                "demo-operator",
                "account corrected after the bank's AC04",
            )
            .await
            .map_err(e)?;
        leg.reissued += 1;
    }
    if leg.reissued > 0 {
        leg.batches += crate::payout::build(cfg, store, &period, None, None)
            .await?
            .new
            .len();
        let done = wait("the re-issued payments' results");
        while !done(
            bank.answered() >= leg.batches && results_in(store.clone(), period.clone()).await,
        ) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        phase("re-issued payments' results");
    }
    leg.phases = phases;
    leg.settled = results_in(store.clone(), period.clone()).await;
    banker.abort();
    leg.credited = bank.credited();
    leg.paid_twice = bank.paid_twice();
    leg.alarms = store.alarms().await.map_err(e)?.len();
    Ok(leg)
}

async fn report(
    args: &DemoArgs,
    sims: &Sims,
    store: &Store,
    cfg: &Config,
    people: &[(Applicant, Vec<u8>)],
    elapsed: Duration,
    bank: &BankLeg,
) -> Result<bool, String> {
    let counts = store.counts().await.map_err(|e| e.to_string())?;
    let mut invariants = BTreeMap::new();

    // Each person whose certificate was issued and who has a card: the
    // card loaded exactly once, with their certificate; nobody else's.
    // The ledgers are read in place (a copy of a ledger of millions of
    // effects would be the demo's largest allocation), and what is counted
    // per applicant is kept by their place in `people`.
    let place: HashMap<&str, usize> = people
        .iter()
        .enumerate()
        .map(|(i, (a, _))| (a.id.as_str(), i))
        .collect();
    // Per kind of effect: how many each applicant got, the latencies from
    // filing, and how many went to someone who never applied.
    let tally = |c: &sim::Common, kind: &str| {
        let mut n = vec![0u32; people.len()];
        let mut latency = Vec::new();
        let mut strangers = 0;
        c.for_each(kind, |e| match place.get(e.subject()) {
            Some(&i) => {
                n[i] += 1;
                latency.push(e.at - people[i].0.filed_at);
            }
            None => strangers += 1,
        });
        latency.sort_unstable();
        (n, latency, strangers)
    };
    let (per_person, card_lat, strangers) = tally(&sims.sscard.common, "card_loaded");
    let cards_ok = strangers == 0
        && people.iter().zip(&per_person).all(|((a, _), &n)| {
            if a.card_loaded() {
                n == 1 && sims.sscard.loaded_on(&a.id) == Some(a.certificate_no())
            } else {
                n == 0
            }
        });
    drop(per_person);
    invariants.insert("each_eligible_card_loaded_exactly_once", cards_ok);

    // The month's payout list: each eligible person once per subsidy, with
    // the amount the rules give; nobody else. The list is read a payment at
    // a time: per applicant, the amount and count listed for each subsidy,
    // and what the bank credited them.
    let period = sims.subsidies.period.lock().unwrap().clone();
    let month = period.replace('-', "");
    let mut listed = vec![[(0i64, 0u32); 2]; people.len()];
    let mut paid_per_person = vec![0i64; people.len()];
    let (mut list_len, mut paid_total, mut unknown) = (0usize, 0i64, 0usize);
    sims.subsidies.for_each_payout(&period, |p| {
        list_len += 1;
        paid_total += p.amount_fen;
        let (Some(&i), Some(care)) = (
            place.get(p.holder_id.as_str()),
            match p.subsidy_type.as_str() {
                "LIVING" => Some(0),
                "CARE" => Some(1),
                _ => None,
            },
        ) else {
            unknown += 1;
            return;
        };
        let e = &mut listed[i][care];
        *e = (p.amount_fen, e.1 + 1);
        // The bank paid each payment of the list exactly once (re-issues
        // included), so each person got exactly what the rules give them.
        let id = format!("{}-{}-{month}", p.subsidy_type, p.holder_id);
        if bank.credited.get(&id) == Some(&1) {
            paid_per_person[i] += p.amount_fen;
        }
    });
    let mut expected_total = 0i64;
    let mut expected_items = 0usize;
    let mut payouts_ok = unknown == 0;
    let mut paid_ok = bank.settled;
    for (((a, _), have), paid) in people.iter().zip(&listed).zip(&paid_per_person) {
        let (living, care) = if a.subsidy_request() {
            subsidies::entitlement(&sims.subsidies.rates, a.category, a.level, a.dibao, a.care)
        } else {
            (0, 0)
        };
        for (fen, have) in [living, care].into_iter().zip(have) {
            if fen > 0 {
                expected_total += fen;
                expected_items += 1;
                payouts_ok &= *have == (fen, 1);
            } else {
                payouts_ok &= have.1 == 0;
            }
        }
        paid_ok &= *paid == living + care;
    }
    drop((listed, paid_per_person));
    payouts_ok &= list_len == expected_items;
    paid_ok &= bank.credited.len() == expected_items;
    invariants.insert("paid_total_per_person_equals_the_eligible_amount", paid_ok);
    invariants.insert("no_payment_paid_twice", bank.paid_twice.is_empty());
    invariants.insert(
        "each_eligible_person_in_payout_list_once_with_right_amount",
        payouts_ok && paid_total == expected_total,
    );

    // Pension and employment: exactly the people the rules select.
    let once = |c: &Arc<sim::Common>, kind: &str, f: fn(&Applicant) -> bool| {
        let (n, _, strangers) = tally(c, kind);
        strangers == 0 && people.iter().zip(n).all(|((a, _), n)| n == u32::from(f(a)))
    };
    invariants.insert(
        "each_pension_enrolment_exactly_once",
        once(&sims.pension.common, "enrolled", Applicant::pension),
    );
    invariants.insert(
        "each_employment_referral_exactly_once",
        once(&sims.employment.common, "referred", Applicant::employment),
    );

    // Every applicant whose certificate was issued sees it on the platform:
    // each application's latest status, kept by the applicant's place.
    let application: HashMap<&str, usize> = people
        .iter()
        .enumerate()
        .map(|(i, (a, _))| (a.application_id.as_str(), i))
        .collect();
    let mut issued_seen = vec![false; people.len()];
    sims.platform.common.for_each("status", |e| {
        if let Some(&i) = application.get(e.subject()) {
            issued_seen[i] = matches!(e.detail(), "CERTIFICATE_ISSUED" | "CARD_LOADED");
        }
    });
    drop(application);
    let status_ok = people
        .iter()
        .zip(&issued_seen)
        .all(|((a, _), seen)| !a.certified() || *seen);
    invariants.insert("every_certified_applicant_sees_the_status", status_ok);

    // Every bad record explained where the chain meets it, with a reason:
    // a bad ID number quarantined by the application feed, a missing name
    // refused by the certificate system, a person without a card refused
    // by the card system, a bad bank card quarantined by the subsidy feed
    // (for those who apply for a subsidy: the others' card is never used).
    let stage = |f: &dyn Fn(&Applicant) -> bool| people.iter().filter(|(a, _)| f(a)).count() as i64;
    let bad_is = |a: &Applicant, why: &str| a.bad == Some(why);
    let want = [
        stage(&|a| bad_is(a, "ID number fails its check digit")),
        stage(&|a| bad_is(a, "name missing")),
        stage(&|a| bad_is(a, "no social security card")),
        stage(&|a| bad_is(a, "bank card fails its check digit") && a.dibao != "TEKUN"),
    ];
    let got = [
        counts.quarantined("application_to_cert_application"),
        counts.messages("national_cert.submit_application", status::DEAD),
        counts.messages("sscard.load_certificate", status::DEAD),
        counts.quarantined("certificate_issued_to_subsidy_eligibility"),
    ];
    let mut reasons: BTreeMap<String, i64> = BTreeMap::new();
    let mut sources: Vec<&String> = counts.quarantined.iter().map(|q| &q.0).collect();
    sources.dedup();
    for source in sources {
        for (m, _, reason) in store.quarantine(source).await.map_err(|e| e.to_string())? {
            *reasons
                .entry(format!("quarantined by {m}: {}", summary(&reason)))
                .or_default() += 1;
        }
    }
    let mut other_dead = 0;
    for (t, s, n) in &counts.messages {
        if *s == status::DEAD {
            if t != "national_cert.submit_application" && t != "sscard.load_certificate" {
                other_dead += n;
            }
            for m in store
                .messages(t, status::DEAD, 1_000_000)
                .await
                .map_err(|e| e.to_string())?
            {
                let why = summary(&m.last_error.unwrap_or_default());
                *reasons.entry(format!("dead at {t}: {why}")).or_default() += 1;
            }
        }
    }
    invariants.insert(
        "every_rejected_record_explained",
        want == got && other_dead == 0 && reasons.keys().all(|r| !r.ends_with(": ")),
    );

    // Latency: form filed → card loaded, and → subsidy decided.
    let (_, subsidy_lat, _) = tally(&sims.subsidies.common, "eligibility");

    let mut feeds = Vec::new();
    for m in cfg.mappings.values() {
        let t = m.to.to_string();
        feeds.push(json!({
            "feed": m.name,
            "target": t,
            "delivered_to_target": counts.messages(&t, status::DELIVERED),
            "retried_attempts_at_target": counts.retries(&t),
            "dead": counts.messages(&t, status::DEAD),
            "pending": counts.messages(&t, status::PENDING),
            "quarantined": counts.quarantined(&m.name),
        }));
    }
    let all_ok = invariants.values().all(|v| *v);
    // Per simulator, and what their ledgers take in all.
    let mut ledgers = (0, 0);
    let simulators: Vec<Value> = [
        &sims.platform.common,
        &sims.cert.common,
        &sims.sscard.common,
        &sims.subsidies.common,
        &sims.pension.common,
        &sims.employment.common,
    ]
    .iter()
    .map(|c| {
        let l = c.ledger.lock().unwrap();
        ledgers = (ledgers.0 + l.len(), ledgers.1 + l.footprint());
        json!({
            "system": c.name,
            "requests": c.requests.load(std::sync::atomic::Ordering::Relaxed),
            "faults_injected": c.faulted.load(std::sync::atomic::Ordering::Relaxed),
            "repeated_deliveries": l.repeats,
            "ledger_effects": l.len(),
            "ledger_bytes": l.footprint(),
        })
    })
    .collect();
    let report = json!({
        "people": people.len(),
        "seconds": elapsed.as_secs_f64(),
        "people_per_second": people.len() as f64 / elapsed.as_secs_f64().max(0.001),
        "peak_rss_mb": peak_rss_mb(),
        "faults": !args.no_faults,
        "period": period,
        "payout_list": {"items": list_len, "total_fen": paid_total},
        "bank": {
            "batches": bank.batches,
            "rejected_first": bank.rejected,
            "reissued": bank.reissued,
            "paid": bank.credited.len(),
            "paid_twice": bank.paid_twice.len(),
            "alarms": bank.alarms,
        },
        "phases_end_s": bank.phases.iter().map(|(n, t)| json!({"phase": n, "end_s": (t * 10.0).round() / 10.0})).collect::<Vec<_>>(),
        "latency_ms": {
            "filed_to_card_loaded": {"p50": percentile(&card_lat, 50), "p99": percentile(&card_lat, 99)},
            "filed_to_subsidy_decided": {"p50": percentile(&subsidy_lat, 50), "p99": percentile(&subsidy_lat, 99)},
        },
        "feeds": feeds,
        "simulators": simulators,
        "rejected": reasons,
        "invariants": invariants,
    });
    let path = args.workdir.join("report.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;

    println!();
    println!(
        "{} people in {:.1} s ({:.0} people/s), peak RSS {} MB, faults {}",
        people.len(),
        elapsed.as_secs_f64(),
        people.len() as f64 / elapsed.as_secs_f64().max(0.001),
        peak_rss_mb(),
        if args.no_faults { "off" } else { "on" }
    );
    println!(
        "simulator ledgers: {} effects in {:.1} MB compressed ({:.1} bytes an effect)",
        ledgers.0,
        ledgers.1 as f64 / 1e6,
        ledgers.1 as f64 / ledgers.0.max(1) as f64
    );
    println!(
        "phases ended at: {}",
        bank.phases
            .iter()
            .map(|(n, t)| format!("{n} {t:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<46} {:>9} {:>9} {:>6} {:>11}",
        "feed", "delivered", "retried", "dead", "quarantined"
    );
    for f in report["feeds"].as_array().into_iter().flatten() {
        let n = |k: &str| f[k].as_i64().unwrap_or(0);
        println!(
            "{:<46} {:>9} {:>9} {:>6} {:>11}",
            f["feed"].as_str().unwrap_or(""),
            n("delivered_to_target"),
            n("retried_attempts_at_target"),
            n("dead"),
            n("quarantined")
        );
    }
    println!(
        "(delivered, retried and dead count per target; feeds that share a target show its total)"
    );
    println!(
        "latency, form filed → card loaded: p50 {} ms, p99 {} ms; → subsidy decided: p50 {} ms, p99 {} ms",
        percentile(&card_lat, 50),
        percentile(&card_lat, 99),
        percentile(&subsidy_lat, 50),
        percentile(&subsidy_lat, 99)
    );
    println!(
        "payout list {period}: {} payments, {} fen in all",
        list_len, paid_total
    );
    println!(
        "bank: {} batch files; {} payments rejected (closed accounts) and re-issued with corrected accounts: {}; {} payments paid, {} paid twice, {} alarms",
        bank.batches,
        bank.rejected,
        bank.reissued,
        bank.credited.len(),
        bank.paid_twice.len(),
        bank.alarms
    );
    println!("rejected records, by reason:");
    for (r, n) in report["rejected"].as_object().into_iter().flatten() {
        println!("  {n:>6}  {r}");
    }
    println!("invariants:");
    for (k, v) in &report["invariants"]
        .as_object()
        .cloned()
        .unwrap_or_default()
    {
        println!(
            "  {} {k}",
            if v.as_bool() == Some(true) {
                "ok  "
            } else {
                "FAIL"
            }
        );
    }
    println!("report: {}", path.display());
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fold_into_kinds() {
        assert_eq!(
            summary("field `id_no`: invalid ID number 220102********1962: check character is 2, expected 1"),
            "field `id_no`: invalid ID number …: check character wrong"
        );
        assert_eq!(
            summary("the target answered HTTP 422: <?xml version=\"1.0\"?><R><code>422</code><message>unknown person</message></R>"),
            "the target answered HTTP 422: 422 unknown person"
        );
    }
}
