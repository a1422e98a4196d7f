//! The phases: the application chain (forms filed, followed through
//! every system until nothing is pending), then the bank leg (the month's
//! payout list paid, rejected payments re-issued).

use crate::config::Config;
use crate::sim;
use crate::store::{PaymentState, Store};
use crate::synth::{self, Rng};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::model::{applicants, payment_id, Applicant, Change};
use super::report::report;
use super::scenario::{confine, confine_all_but, start_province_sims, write_config, Sims, SECRETS};
use super::DemoArgs;

/// The second province of a two-province demo: Shandong.
pub(super) const SECOND: &str = "37";

/// One province's hub and systems: its own store, platform, card,
/// subsidies, pension, employment, civil affairs and bank, against the
/// national certificate system all provinces share.
pub(super) struct Province {
    /// How the report names it.
    pub(super) name: &'static str,
    /// Its simulated systems (`sims.cert` is the shared national one).
    pub(super) sims: Sims,
    /// Its hub's store.
    pub(super) store: Arc<Store>,
    /// Its hub's configuration.
    pub(super) cfg: &'static Config,
    /// Its hub, while it runs.
    pub(super) hub: Option<crate::hub::Hub>,
    /// Its bank.
    pub(super) bank: Arc<sim::bank::Bank>,
    /// Its bank's SFTP server (`--bank-sftp`), while the demo runs.
    pub(super) _sftp: Option<sim::sshd::Sshd>,
}

/// Starts the provinces' simulators and writes their hubs' configurations:
/// one province serving every county, or two (every province but
/// Shandong, and Shandong in `DIR/shandong`), each hub confined to its own.
async fn provinces(args: &DemoArgs) -> Result<Vec<Province>, String> {
    let n = args.provinces.clamp(1, 2);
    let mut out: Vec<Province> = Vec::new();
    for k in 0..n {
        let (name, dir) = match (n, k) {
            (1, _) => ("the province", args.workdir.clone()),
            (_, 0) => ("main", args.workdir.clone()),
            _ => ("Shandong", args.workdir.join("shandong")),
        };
        let national = out
            .first()
            .map(|p| (p.sims.cert.clone(), p.sims.port(9102).unwrap_or(0)));
        let sims = start_province_sims(!args.no_faults, national).await?;
        write_config(&args.config, &dir, &sims.ports)?;
        match (n, k) {
            (1, _) => {}
            (_, 0) => confine_all_but(&dir, SECOND)?,
            _ => confine(&dir, SECOND)?,
        }
        let tables = match &args.employment_tables {
            Some(url) => {
                let tag = if k == 0 { "main" } else { "shandong" };
                Some((
                    url,
                    super::scenario::employment_tables(url, &dir, tag).await?,
                ))
            }
            None => None,
        };
        let sftp = match args.bank_sftp {
            true => Some(super::scenario::bank_sftp(&dir)?),
            false => None,
        };
        let (cfg, diags) = crate::hub::load(&dir);
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
        if let Some((url, (inbox, outbox))) = tables {
            let db = crate::connectors::database::engine::Db::connect(url, 2)
                .map_err(|e| e.to_string())?;
            let record = cfg
                .schemas
                .get("EmploymentReferral")
                .ok_or("no schema EmploymentReferral")?
                .record
                .clone();
            tokio::spawn(
                sims.employment
                    .clone()
                    .serve_tables(db, inbox, outbox, record),
            );
        }
        let store = Arc::new(
            Store::open(&cfg.hub.store.url, &cfg.dir)
                .await
                .map_err(|e| e.to_string())?,
        );
        let bank = sim::bank::Bank::new(&cfg.dir.join("var/bank"));
        out.push(Province {
            name,
            sims,
            store,
            cfg,
            hub: None,
            bank,
            _sftp: sftp,
        });
    }
    Ok(out)
}

pub(super) async fn run(args: DemoArgs) -> Result<bool, String> {
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
    if let Some(url) = &args.employment_tables {
        // SAFETY: as above.
        unsafe { std::env::set_var(super::scenario::FRONT_DB_ENV, url) };
    }

    let mut provs = provinces(&args).await?;
    let cert = provs[0].sims.cert.clone();
    let cfg = provs[0].cfg;
    // The people, and the world they live in: assessments and cards.
    let calendar = crate::connectors::deadlines::report::settings(cfg)
        .map(|s| s.calendar)
        .unwrap_or_default();
    let mut people = applicants(args.people, args.seed, &calendar, provs.len());
    for (a, _) in &people {
        cert.assess_multiple(&a.id, a.category, a.level, a.includes_im);
        if a.has_card {
            provs[a.home].sims.sscard.issue_card(&a.id);
        }
        if let Some(p) = a.pace {
            cert.pace(&a.application_id, p);
        }
    }
    let expect = |f: fn(&Applicant) -> bool| people.iter().filter(|(a, _)| f(a)).count() as u64;
    let want_certs = expect(Applicant::certified);
    let want_cards = expect(Applicant::card_loaded);
    let want_subsidy = expect(Applicant::subsidy_request);
    let want_pension = expect(Applicant::pension);
    let want_employment = expect(Applicant::employment);

    for p in provs.iter_mut() {
        p.hub = Some(crate::hub::Hub::start(p.cfg, p.store.clone()).await);
    }

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
        provs[a.filed_in].sims.platform.file(form);
        *form = Vec::new();
        b_filed.inc(1);
    }
    b_filed.finish();

    let count = |c: fn(&Sims) -> &Arc<sim::Common>, kind: &str| {
        provs.iter().map(|p| c(&p.sims).count(kind)).sum::<u64>()
    };
    let deadline = Instant::now() + args.timeout;
    // Done when every expected effect has arrived and nothing is pending,
    // or when nothing has moved for 5 s and nothing is pending (then the
    // invariants say what is missing).
    let mut last = (Vec::new(), Instant::now());
    let observed = loop {
        let now = vec![
            cert.holders() as u64,
            count(|s| &s.sscard.common, "card_loaded"),
            count(|s| &s.subsidies.common, "eligibility"),
            count(|s| &s.pension.common, "enrolled"),
            count(|s| &s.employment.common, "referred"),
            count(|s| &s.platform.common, "status"),
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
        if (reached || quiet) && pending(&provs).await? == 0 {
            break now;
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
    let mut run = Run {
        phases: vec![("application chain".into(), started.elapsed().as_secs_f64())],
        ..Run::default()
    };
    // Month after month: the month's payout list paid, then the month's
    // changes (after its payouts), carried by the hub before the next.
    let bankers: Vec<_> = provs
        .iter()
        .map(|p| tokio::spawn(p.bank.clone().run()))
        .collect();
    // The day of each month's changes (the first month's: of issue).
    let mut days = Vec::new();
    for month in 0..args.months.max(1) {
        if month > 0 {
            let day = first_of_month_after(&provs[0].sims.subsidies.period.lock().unwrap())
                .and_then(|d| d.checked_add_days(chrono::Days::new(9)))
                .ok_or("the month after the last has no date")?;
            sim::clock::travel_to(day)?;
            for p in &provs {
                *p.sims.subsidies.period.lock().unwrap() = sim::clock::period();
            }
        }
        let mut m = Month {
            settled: true,
            ..Month::default()
        };
        for p in &provs {
            let pm = pay(&args, p, provs.len() > 1, &mp, started, month, &mut run).await?;
            m.period = pm.period;
            m.batches += pm.batches;
            m.rejected += pm.rejected;
            m.reissued += pm.reissued;
            m.settled &= pm.settled;
        }
        if month == 0 {
            run.lifecycle_from_ms = crate::store::now_ms();
        }
        days.push(sim::clock::today());
        m.changes = lifecycle(&args, &provs, &mut people, month).await?;
        // Each card system: the certificate as the model has it for those
        // whose province it is, nothing for anyone else.
        m.cards_wrong = people
            .iter()
            .filter(|(a, _)| {
                provs.iter().enumerate().any(|(k, p)| {
                    let want = match a.province_at(month + 1) == k {
                        true => a.card_at(month + 1, &days),
                        false => None,
                    };
                    p.sims.sscard.certificate_function(&a.id) != want
                })
            })
            .count();
        run.phases.push((
            format!("{} lifecycle", m.period),
            started.elapsed().as_secs_f64(),
        ));
        run.months.push(m);
    }
    for b in bankers {
        b.abort();
    }
    // What the banks credited, over both provinces: a payment credited by
    // each of two banks is paid twice.
    for p in &provs {
        for (id, n) in p.bank.credited() {
            *run.credited.entry(id).or_default() += n;
        }
        run.alarms
            .extend(p.store.alarms().await.map_err(|e| e.to_string())?);
    }
    run.paid_twice = run
        .credited
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.clone())
        .collect();
    let elapsed = started.elapsed();
    for p in provs.iter_mut() {
        if let Some(h) = p.hub.take() {
            h.stop().await;
        }
    }

    report(&args, &provs, &people, elapsed, &run).await
}

/// The first day of the month after `period` (`YYYY-MM`).
pub(super) fn first_of_month_after(period: &str) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d")
        .ok()?
        .checked_add_months(chrono::Months::new(1))
}

/// Messages waiting on any target of any province's hub.
async fn pending(provs: &[Province]) -> Result<i64, String> {
    let mut n = 0;
    for p in provs {
        let Some(hub) = &p.hub else { continue };
        for (t, _) in hub.served() {
            n += p
                .store
                .pending(&t.to_string())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(n)
}

/// What the months did.
#[derive(Default)]
pub(super) struct Run {
    /// Each month, in order.
    pub(super) months: Vec<Month>,
    /// Credited per payment id, by the bank, over all months.
    pub(super) credited: HashMap<String, u32>,
    /// Payment ids the bank credited twice.
    pub(super) paid_twice: Vec<String>,
    /// Alarms raised.
    pub(super) alarms: Vec<crate::store::AlarmRow>,
    /// When each phase ended, seconds since the demo started.
    pub(super) phases: Vec<(String, f64)>,
    /// When the first month's lifecycle phase began, ms since the epoch:
    /// what came before is the first month's chain.
    pub(super) lifecycle_from_ms: i64,
}

/// What one month did: its payouts, then its changes.
#[derive(Default)]
pub(super) struct Month {
    /// `YYYY-MM`.
    pub(super) period: String,
    /// Batches built (first round and re-issue round).
    pub(super) batches: usize,
    /// Payments rejected by the bank the first time (closed accounts).
    pub(super) rejected: usize,
    /// Payments re-issued with a corrected account.
    pub(super) reissued: usize,
    /// Whether every payment got its result in time.
    pub(super) settled: bool,
    /// Lifecycle changes made after the month's payouts, by kind.
    pub(super) changes: Vec<(&'static str, usize)>,
    /// Cards whose certificate differs from the model once the month's
    /// changes are carried.
    pub(super) cards_wrong: usize,
}

/// After a month's payouts: the changes [`Applicant::pick_change`] gives
/// (freezes and their lifting, re-assessments, partial cancellations,
/// reissues and renewals applied for on the platform, deaths, some
/// registered late, 低保 changes), made in the certificate, platform and
/// civil systems; then waits until the hub has carried them
/// all (nothing pending, and the systems' ledgers still for two seconds).
/// Each change is added to the person's history in the model
/// ([`Applicant::amounts`], [`Applicant::card_at`]).
async fn lifecycle(
    args: &DemoArgs,
    provs: &[Province],
    people: &mut [(Applicant, Vec<u8>)],
    month: usize,
) -> Result<Vec<(&'static str, usize)>, String> {
    let rates = provs[0].sims.subsidies.rates.clone();
    use crate::sim::cert::Action;
    use chrono::Datelike;
    let mut counts: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let today = sim::clock::today().to_string();
    let last_month = sim::clock::today()
        .with_day(1)
        .and_then(|d| d.checked_sub_months(chrono::Months::new(1)))
        .and_then(|d| d.with_day(25))
        .map_or(today.clone(), |d| d.to_string());
    for (i, (a, _)) in people.iter_mut().enumerate() {
        let change = a.pick_change(&rates, i, month);
        // The systems of the person's province this month; the national
        // certificate system is everyone's.
        let sims = &provs[a.province_at(month)].sims;
        let done = match change {
            Change::None => continue,
            Change::Frozen => sims.cert.act(&a.id, Action::Freeze).map(|_| "frozen"),
            Change::FrozenThenUnfrozen => sims
                .cert
                .act(&a.id, Action::Freeze)
                .and_then(|_| sims.cert.act(&a.id, Action::Unfreeze))
                .map(|_| "frozen and unfrozen"),
            Change::Unfrozen => sims.cert.act(&a.id, Action::Unfreeze).map(|_| "unfrozen"),
            Change::Reassessed { level } => sims
                .cert
                .act(
                    &a.id,
                    Action::Reassess {
                        category: a.state_before(month).category,
                        level,
                    },
                )
                .map(|_| "re-assessed"),
            Change::PartlyCancelled { category } => sims
                .cert
                .act(&a.id, Action::CancelCategories { keep: category })
                .map(|_| "other categories cancelled"),
            Change::Reissued => {
                sims.platform.file(&a.later_form("REISSUE", month));
                Ok("lost and reissued")
            }
            Change::Renewed => {
                sims.cert.backdate(&a.id, 9 * 365 + 180);
                sims.platform.file(&a.later_form("RENEW", month));
                Ok("renewed")
            }
            Change::RenewalTooEarly => {
                sims.platform.file(&a.later_form("RENEW", month));
                Ok("renewal applied for too early")
            }
            Change::Died => {
                sims.civil.report_death(&a.id, "", Some(&today));
                Ok("died (registered)")
            }
            Change::DiedLastMonth => {
                sims.civil.report_death(&a.id, "", Some(&last_month));
                Ok("died last month (registered late)")
            }
            Change::Dibao(d) => {
                sims.civil.change_dibao(&a.id, "", d);
                Ok("低保 changed")
            }
            Change::Moved => {
                let to = &provs[1].sims;
                to.sscard.issue_card(&a.id);
                to.platform.file(&a.later_form("MIGRATE", month));
                Ok("moved to Shandong (migrated)")
            }
        };
        *counts.entry(done?).or_default() += 1;
        a.changes.push((month, change));
    }
    let effects = || {
        let of = |c: &Arc<sim::Common>| c.ledger.lock().unwrap().len();
        of(&provs[0].sims.cert.common)
            + provs
                .iter()
                .map(|p| {
                    of(&p.sims.sscard.common)
                        + of(&p.sims.subsidies.common)
                        + of(&p.sims.platform.common)
                })
                .sum::<usize>()
    };
    let deadline = Instant::now() + args.timeout;
    let (mut last, mut still) = (effects(), 0);
    while still < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = effects();
        still = if pending(provs).await? == 0 && now == last {
            still + 1
        } else {
            0
        };
        last = now;
    }
    Ok(counts.into_iter().collect())
}

/// A month's payouts: the payout list through the hub into the payout
/// register, batch files to the bank (in the first month a few accounts
/// closed; they stay closed), the bank's answers reconciled, the rejected
/// payments re-issued with corrected accounts, and paid.
pub(super) async fn pay(
    args: &DemoArgs,
    province: &Province,
    named: bool,
    mp: &MultiProgress,
    started: Instant,
    month: usize,
    run: &mut Run,
) -> Result<Month, String> {
    let (sims, bank, store, cfg) = (
        &province.sims,
        &province.bank,
        &province.store,
        province.cfg,
    );
    let e = |e: crate::store::StoreError| e.to_string();
    let period = sims.subsidies.period.lock().unwrap().clone();
    let mut phase = |name: &str| {
        let name = match named {
            true => format!("{period} {} {name}", province.name),
            false => format!("{period} {name}"),
        };
        run.phases.push((name, started.elapsed().as_secs_f64()))
    };
    // The bank: every card on the list open with its holder's name, but in
    // the first month one in 200 closed (the list read once, as the
    // payments are counted).
    let mut closed = Vec::new();
    let mut want = 0i64;
    sims.subsidies.for_each_payout(&period, |p| {
        match bank.account_state(&p.bank_account_no) {
            Some(sim::bank::AccountState::Closed) => closed.push(p.holder_id.clone()),
            Some(_) => {}
            None if month == 0 && want % 200 == 7 => {
                closed.push(p.holder_id.clone());
                bank.account(
                    &p.bank_account_no,
                    &p.account_name,
                    sim::bank::AccountState::Closed,
                );
            }
            None => bank.account(
                &p.bank_account_no,
                &p.account_name,
                sim::bank::AccountState::Open,
            ),
        }
        want += 1;
    });
    closed.dedup();
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
    // The whole list is in the payout register (asked of the register by
    // its index: a count of the outbox by state scans every message, and
    // after a few months that scan took the store's thread from the hub).
    let done = wait("the payout register");
    loop {
        if done(store.period_payments(&period).await.map_err(e)?.0 >= want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phase("payout register");
    let mut m = Month {
        period: period.clone(),
        ..Month::default()
    };
    let answered_before = bank.answered();
    let results_in = |store: Arc<Store>, period: String| async move {
        store
            .results(&period)
            .await
            .map(|r| r.iter().all(|x| x.result.is_some()))
            .unwrap_or(false)
    };
    // The batches are made and their files queued; the running hub's files
    // target delivers them to the bank's directory. The register is asked
    // (a join over the month's payments) only once the bank has answered
    // every file.
    m.batches += crate::payout::build(cfg, store, &period, None, None)
        .await
        .map_err(|e| e.to_string())?
        .batches
        .len();
    let done = wait("the bank's results");
    while !done(
        bank.answered() >= answered_before + m.batches
            && results_in(store.clone(), period.clone()).await,
    ) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phase("bank results");
    // Re-issue what the bank rejected, each with its holder's new card. The
    // register's results say how many were rejected; the closed accounts'
    // payments are looked up (not every payment of the month, one by one).
    let mut rng = Rng::new(args.seed ^ 0x5eed ^ month as u64);
    let register_rejected: i64 = store
        .results(&period)
        .await
        .map_err(e)?
        .iter()
        .filter(|r| r.result.as_deref() == Some("REJECTED"))
        .map(|r| r.payments)
        .sum();
    let rejected: Vec<String> = {
        let mut ids = Vec::new();
        for holder in &closed {
            for ty in ["LIVING", "CARE"] {
                let id = payment_id(ty, holder, &period);
                if let Some(PaymentState {
                    result: Some(r), ..
                }) = store.payment(&id).await.map_err(e)?
                {
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
            "{period}: the register has {register_rejected} rejected payments; the closed accounts account for {}",
            rejected.len()
        ))
        .ok();
    }
    m.rejected = rejected.len();
    for id in &rejected {
        let row = store
            .payment(id)
            .await
            .map_err(e)?
            .ok_or("payment gone")?
            .row;
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
        m.reissued += 1;
    }
    if m.reissued > 0 {
        m.batches += crate::payout::build(cfg, store, &period, None, None)
            .await
            .map_err(|e| e.to_string())?
            .new
            .len();
        let done = wait("the re-issued payments' results");
        while !done(
            bank.answered() >= answered_before + m.batches
                && results_in(store.clone(), period.clone()).await,
        ) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        phase("re-issued payments' results");
    }
    m.settled = results_in(store.clone(), period.clone()).await;
    Ok(m)
}
