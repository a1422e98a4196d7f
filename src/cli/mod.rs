//! The `tongban` command line.
//!
//! Exit codes: 0 success; 1 some records or test cases failed; 2 the
//! configuration or the command line is wrong.
//!
//! Layer 10, the top: argument parsing and printing over every module
//! below; nothing here is used by another module.

mod log;
mod map;
mod ops;
pub(crate) mod run;

use crate::config::{Config, Diagnostics};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// tongban (通办): a data-exchange hub for joined-up disability services.
#[derive(Parser, Debug)]
#[command(name = "tongban", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the whole configuration: files, references, schemas and every expression.
    Check {
        /// Configuration directory (holds tongban.toml, connectors/, mappings/, schemas/).
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
    /// Map records through one feed: JSON lines (or XML documents) in, JSON lines out.
    Map {
        /// The feed (file stem under mappings/).
        #[arg(long, short)]
        mapping: String,
        /// Input file, or `-` for standard input.
        #[arg(default_value = "-")]
        input: PathBuf,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
        /// Longest record accepted, in bytes; longer ones are rejected.
        #[arg(long, default_value_t = 1 << 20)]
        max_record_bytes: usize,
    },
    /// List the functions mapping expressions can call.
    Functions,
    /// Map JSON lines from a source operation through its feeds into the outbox.
    Ingest {
        /// The source operation, `connector.operation`.
        #[arg(long, short)]
        source: String,
        /// Input file of JSON lines.
        input: PathBuf,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
    /// Run the hub: deliver the outbox to every target until SIGTERM or Ctrl-C.
    Run {
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
    /// Run the whole one-application chain against simulated systems and
    /// check the outcome: `DIR/report.json`, exit 0 only if every invariant holds.
    Demo {
        /// Synthetic applicants.
        #[arg(long, default_value_t = 2000)]
        people: usize,
        /// Months to run: the first month's chain and payouts, then each
        /// further month's changes (deaths, freezes, re-assessments,
        /// reissues, 低保 changes) in simulated time and its payouts.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=24))]
        months: u32,
        /// Provincial hubs: 2 runs Shandong's own hub, store and systems
        /// beside the main one's (every other province), against one
        /// national certificate system, with people moving there each month
        /// (跨省迁移); 1 runs one hub for every county.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=2))]
        provinces: u32,
        /// Work directory: the demo's configuration, store, log and report
        /// (it replaces what an earlier demo left there).
        #[arg(long, default_value = "var/demo")]
        workdir: PathBuf,
        /// Where the shipped connectors, mappings and schemas are.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
        /// Seed of the synthetic data (the same seed, the same people).
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Switch the simulators' faults (errors, 429s, latency) off.
        #[arg(long)]
        no_faults: bool,
        /// Run the employment department over table exchange (库表交换):
        /// the hub writes referrals into tables of this front-end database
        /// and reads the department's decisions from it
        /// (`postgres://user@127.0.0.1:5432/front` or `mysql://…`; the
        /// demo makes the tables).
        #[arg(long, value_name = "URL")]
        employment_tables: Option<String>,
        /// Run the bank's channel over SFTP: the demo starts a private
        /// OpenSSH server (sshd, Debian's openssh-server) on 127.0.0.1 with
        /// keys of its own serving the bank's directory; the hub uploads the
        /// payment files there and picks the result files up from there.
        #[arg(long)]
        bank_sftp: bool,
        /// Give up after this long, e.g. 10m.
        #[arg(long, default_value = "10m")]
        timeout: humantime::Duration,
    },
    /// Run a simulator of one system on 127.0.0.1 (its API, rules, faults at
    /// /_faults and ledger at /_ledger). Credentials, when set, come from the
    /// same environment variables as the shipped connectors.
    Sim {
        /// platform, cert, sscard, subsidies, pension, employment, civil or bank.
        system: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// bank: the directory shared with the hub's bank connector (payment
        /// files in `DIR/out`, status reports to `DIR/in`).
        #[arg(long, default_value = "var/bank")]
        dir: PathBuf,
        /// bank: take payment files in this delimited or fixed-width layout
        /// (e.g. `layouts/bank_fixed_gbk.toml`) and answer with its result
        /// files, instead of pain.001 and pain.002.
        #[arg(long)]
        layout: Option<PathBuf>,
        /// platform: also produce every filed form to a Kafka topic on
        /// these brokers (host:port,…).
        #[arg(long)]
        kafka_brokers: Option<String>,
        /// platform: the topic for `--kafka-brokers`.
        #[arg(long, default_value = "one-application-forms")]
        kafka_topic: String,
    },
    /// Bank payouts: batch the period's payment instructions into pain.001
    /// files, and see the period's batches.
    Payouts {
        #[command(subcommand)]
        action: PayoutsCommand,
    },
    /// API tokens of the operations API.
    Token {
        #[command(subcommand)]
        action: ops::TokenCommand,
    },
    /// Find messages and look at one (personal data masked).
    Messages {
        #[command(subcommand)]
        action: ops::MessagesCommand,
    },
    /// Replay a dead message: as is, or re-mapped with the current mapping.
    Replay {
        /// Message id.
        id: i64,
        /// Map it again from its stored source record.
        #[arg(long)]
        remap: bool,
        /// Show the fields re-mapping would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        args: ops::ActionArgs,
    },
    /// Skip a dead message: its key moves on.
    Skip {
        /// Message id.
        id: i64,
        #[command(flatten)]
        args: ops::ActionArgs,
    },
    /// Pause a target: nothing is delivered to it until it is resumed.
    Pause {
        /// `connector.operation`.
        target: String,
        #[command(flatten)]
        args: ops::ActionArgs,
    },
    /// Resume a paused target.
    Resume {
        /// `connector.operation`.
        target: String,
        #[command(flatten)]
        args: ops::ActionArgs,
    },
    /// Records a feed could not map: list them, map them again after a fix.
    Quarantine {
        #[command(subcommand)]
        action: ops::QuarantineCommand,
    },
    /// Bulk replays by filter: start, follow, pause, resume, cancel.
    Tasks {
        #[command(subcommand)]
        action: ops::TasksCommand,
    },
    /// Targets: pending, delivered, dead, skipped, oldest pending, paused.
    Targets {
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
    /// Certificate applications against their deadlines (CDPF 2021-10 §5,
    /// counted in working days): per stage open, overdue, due within one
    /// working day and late; then the overdue and soon-due applications.
    Deadlines {
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
        /// The report as JSON (stable English field names).
        #[arg(long)]
        json: bool,
    },
    /// The exchange log (存证): a chain of every fact kept as evidence
    /// (records received, deliveries with the answer's digest, payment files
    /// sent, bank results, operator actions), sealed by signatures.
    Log {
        #[command(subcommand)]
        action: log::LogCommand,
    },
    /// The audit: who did what, when and why.
    Audit {
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
    /// Run the test cases beside every mapping.
    Test {
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
        /// Only this feed.
        #[arg(long, short)]
        mapping: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PayoutsCommand {
    /// Put every payment of the period that is in no batch into batches (per
    /// bank, cut at payouts.max_per_file), and deliver each new batch's file
    /// through the outbox (dropped with its checksum file, or uploaded).
    Build {
        /// The period, YYYY-MM.
        #[arg(long)]
        period: String,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
        /// The pain.001 target (`connector.operation`), if there are several.
        #[arg(long)]
        target: Option<String>,
        /// Send this batch's file again (the bank lost it); byte for byte
        /// the same, and refused by the bank if it had read it. Audited.
        #[arg(long, requires = "reason")]
        resend: Option<String>,
        /// Why the file is sent again (kept in the audit).
        #[arg(long)]
        reason: Option<String>,
        /// Who sends it again (kept in the audit).
        #[arg(long, default_value = "operator")]
        actor: String,
    },
    /// Re-issue a payment the bank rejected (after its account is
    /// corrected): it leaves its batch and goes into the next one built.
    /// Audited; refused for a payment that was accepted.
    Reissue {
        /// The payment id (subsidy type-holder-period).
        payment_id: String,
        /// Why (kept in the audit).
        #[arg(long)]
        reason: String,
        /// The corrected bank card or account number.
        #[arg(long)]
        account: Option<String>,
        /// The corrected bank (12-digit CNAPS code).
        #[arg(long)]
        bank: Option<String>,
        /// The corrected account holder's name.
        #[arg(long)]
        name: Option<String>,
        /// Who does it (kept in the audit).
        #[arg(long, default_value = "operator")]
        actor: String,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
    /// The period's batches: payments, totals, files.
    Status {
        /// The period, YYYY-MM.
        #[arg(long)]
        period: String,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
}

/// `tongban payouts …`.
fn payouts(action: PayoutsCommand) -> ExitCode {
    let (config, period) = match &action {
        PayoutsCommand::Build { config, period, .. }
        | PayoutsCommand::Status { config, period } => (config.clone(), period.clone()),
        PayoutsCommand::Reissue { config, .. } => (config.clone(), String::new()),
    };
    let Some(cfg) = load(&config, false) else {
        return ExitCode::from(2);
    };
    let rt = crate::hub::runtime();
    let result = rt.block_on(async {
        let store = crate::store::Store::open(&cfg.hub.store.url, &cfg.dir)
            .await
            ?;
        match &action {
            PayoutsCommand::Build {
                target,
                resend,
                reason,
                actor,
                ..
            } => {
                let resend = match (resend, reason) {
                    (Some(b), Some(r)) => Some((b.as_str(), actor.as_str(), r.as_str())),
                    (Some(_), None) => {
                        return Err("--resend needs --reason (kept in the audit)".into())
                    }
                    (None, _) => None,
                };
                let store = std::sync::Arc::new(store);
                let built =
                    crate::hub::send_payouts(&cfg, &store, &period, target.as_deref(), resend).await?;
                let new = built.iter().filter(|b| b.new).count();
                let mut undelivered = 0;
                for b in &built {
                    use crate::payout::FileState;
                    let file = match &b.file {
                        FileState::Sent => match b.place.contains("://") {
                            true => format!(", uploaded to {}", b.place),
                            false => format!(", written to {}", b.place),
                        },
                        FileState::SentEarlier => String::new(),
                        FileState::Waiting(e) => {
                            undelivered += 1;
                            format!(
                                ", NOT DELIVERED YET ({}); `tongban run` goes on trying",
                                e.as_deref().unwrap_or("not tried yet")
                            )
                        }
                        FileState::Dead(e) => {
                            undelivered += 1;
                            format!(", DEAD LETTER: {e}; replay it once the cause is fixed")
                        }
                    };
                    println!(
                        "{}  {:>7} payments  {:>16} yuan  {}{file}",
                        b.batch.batch_id,
                        b.batch.count,
                        crate::formats::pain::amount(b.batch.total_fen),
                        if b.new { "new" } else { "earlier" },
                    );
                }
                println!("{period}: {} batches ({new} new)", built.len());
                if undelivered > 0 {
                    return Err(format!("{undelivered} batch files not delivered").into());
                }
            }
            PayoutsCommand::Reissue {
                payment_id,
                reason,
                account,
                bank,
                name,
                actor,
                ..
            } => {
                let corrected = if account.is_some() || bank.is_some() || name.is_some() {
                    let row = store
                        .payment(payment_id)
                        .await
                        ?
                        .ok_or_else(|| format!("there is no payment {payment_id}"))?
                        .row;
                    let mut v: serde_json::Value = serde_json::from_slice(&row.record)
                        .map_err(|e| format!("payment {payment_id}: {e}"))?;
                    if let Some(a) = account {
                        crate::domain::luhn::validate_card(a).map_err(|e| {
                            format!("--account {}: {e}", crate::domain::mask::bank_card(a))
                        })?;
                        v["creditor_account"] = a.as_str().into();
                    }
                    if let Some(b) = bank {
                        crate::schema::Format::CnapsCode
                            .check(b)
                            .map_err(|e| format!("--bank {b}: {e}"))?;
                        v["creditor_bank_code"] = b.as_str().into();
                    }
                    if let Some(n) = name {
                        v["creditor_name"] = n.as_str().into();
                    }
                    Some((
                        serde_json::to_vec(&v)?,
                        bank.clone().unwrap_or(row.bank_code),
                    ))
                } else {
                    None
                };
                let old = store
                    .reissue(payment_id, corrected, actor, reason)
                    .await
                    ?;
                println!(
                    "payment {payment_id} re-issued: out of batch {old}; the next `tongban payouts build` puts it in a new batch"
                );
            }
            PayoutsCommand::Status { .. } => {
                let batches = store.batches(&period).await?;
                let results = store.results(&period).await?;
                let (n, total) = batches
                    .iter()
                    .fold((0, 0), |(n, t), b| (n + b.count, t + b.total_fen));
                let yuan = crate::formats::pain::amount;
                for b in &batches {
                    let of = |r: Option<&str>| {
                        results
                            .iter()
                            .filter(|x| x.batch_id == b.batch_id && x.result.as_deref() == r)
                            .fold((0, 0), |(n, t), x| (n + x.payments, t + x.fen))
                    };
                    let (a, r, p, w) = (
                        of(Some("ACCEPTED")),
                        of(Some("REJECTED")),
                        of(Some("PENDING")),
                        of(None),
                    );
                    println!(
                        "{}  bank {}  sent {} / {} yuan  accepted {} / {}  rejected {} / {}  pending {}  no result yet {}  made {}",
                        b.batch_id, b.bank_code, b.count, yuan(b.total_fen), a.0, yuan(a.1),
                        r.0, yuan(r.1), p.0, w.0, b.created
                    );
                }
                println!(
                    "{period}: {} batches, {n} payments, {} yuan",
                    batches.len(),
                    yuan(total)
                );
                let alarms: Vec<_> = store
                    .alarms()
                    .await
                    ?
                    .into_iter()
                    .filter(|a| batches.iter().any(|b| b.batch_id == a.batch_id) || !a.batch_id.contains(&period))
                    .collect();
                for a in &alarms {
                    println!("ALARM {} {}: {}", a.batch_id, a.kind, a.detail);
                }
                // Batches whose results are late.
                let now = crate::domain::china_now()
                    .naive_local();
                let deadline = chrono::Duration::from_std(cfg.hub.payouts.results_deadline.0)
                    .unwrap_or(chrono::Duration::days(3));
                for b in &batches {
                    let waiting: i64 = results
                        .iter()
                        .filter(|x| x.batch_id == b.batch_id && x.result.is_none())
                        .map(|x| x.payments)
                        .sum();
                    let made = chrono::NaiveDateTime::parse_from_str(&b.created, "%Y-%m-%dT%H:%M:%S");
                    if waiting > 0 && made.is_ok_and(|m| now - m > deadline) {
                        println!(
                            "ALARM {} results_missing: {waiting} payments without a bank result {} after the file was made",
                            b.batch_id,
                            humantime::format_duration(cfg.hub.payouts.results_deadline.0)
                        );
                    }
                }
            }
        }
        Ok::<(), ops::CliError>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `tongban sim SYSTEM --listen ADDR`.
fn sim(
    system: &str,
    listen: std::net::SocketAddr,
    dir: &std::path::Path,
    layout: Option<&std::path::Path>,
    kafka: Option<(&str, &str)>,
) -> ExitCode {
    if kafka.is_some() && system != "platform" {
        eprintln!("error: --kafka-brokers applies to the platform simulator only");
        return ExitCode::from(2);
    }
    let layout = match layout.map(crate::formats::layout::Layout::load) {
        None => None,
        Some(Ok(l)) => Some(std::sync::Arc::new(l)),
        Some(Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    use crate::sim;
    let env = |k: &str| std::env::var(k).ok();
    let standalone = |c: &std::sync::Arc<sim::Common>| {
        c.exit_on_crash
            .store(true, std::sync::atomic::Ordering::Relaxed)
    };
    let router = match system {
        "platform" => {
            let secret = env("PLATFORM_APP_SECRET");
            let s = match kafka {
                Some((brokers, topic)) => {
                    match sim::platform::Platform::publishing(secret.as_deref(), brokers, topic) {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("error: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
                None => sim::platform::Platform::new(secret.as_deref()),
            };
            standalone(&s.common);
            s.router()
        }
        "cert" => {
            let s = sim::cert::Cert::new(env("CERT_APP_SECRET").as_deref());
            standalone(&s.common);
            s.router()
        }
        "sscard" => {
            let s = sim::sscard::Sscard::new(env("SSCARD_TOKEN").as_deref(), Some(20));
            standalone(&s.common);
            s.router()
        }
        "subsidies" => sim::subsidies::Subsidies::new(
            env("SUBSIDIES_PASSWORD").as_deref().map(|p| ("tongban", p)),
            sim::subsidies::Rates::default(),
        )
        .router(),
        "pension" => {
            let s = sim::referral::Referral::new(
                sim::referral::Kind::Pension,
                env("PENSION_TOKEN").as_deref(),
            );
            standalone(&s.common);
            s.router()
        }
        "employment" => {
            let s = sim::referral::Referral::new(
                sim::referral::Kind::Employment,
                env("EMPLOYMENT_TOKEN").as_deref(),
            );
            standalone(&s.common);
            s.router()
        }
        "civil" => {
            let s = sim::civil::Civil::new(env("CIVIL_TOKEN").as_deref());
            standalone(&s.common);
            s.router()
        }
        "bank" => {
            let s = match layout {
                Some(l) => sim::bank::Bank::with_layout(dir, l),
                None => sim::bank::Bank::new(dir),
            };
            if let Some(t) = env("BANK_TOKEN") {
                s.require_token(&t);
            }
            standalone(&s.common);
            let router = s.router();
            std::thread::spawn(move || loop {
                if let Err(e) = s.poll_once() {
                    eprintln!("bank simulator: {e}");
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            });
            router
        }
        other => {
            eprintln!("error: no simulator {other:?}: platform, cert, sscard, subsidies, pension, employment, civil or bank");
            return ExitCode::from(2);
        }
    };
    let rt = crate::hub::runtime();
    rt.block_on(async move {
        let l = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {listen}: {e}");
                return ExitCode::from(2);
            }
        };
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        println!("{system} simulator on http://{addr} (ledger: /_ledger, faults: /_faults)");
        let serve = sim::serve(l, router);
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return ExitCode::from(1),
            };
        tokio::select! {
            _ = serve => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        ExitCode::SUCCESS
    })
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Demo {
        people,
        months,
        provinces,
        workdir,
        config,
        seed,
        no_faults,
        employment_tables,
        bank_sftp,
        timeout,
    } = cli.command
    {
        return crate::demo::demo(crate::demo::DemoArgs {
            people,
            months: months as usize,
            provinces: provinces as usize,
            workdir,
            config,
            seed,
            no_faults,
            employment_tables,
            bank_sftp,
            timeout: timeout.into(),
        });
    }
    if let Command::Sim {
        system,
        listen,
        dir,
        layout,
        kafka_brokers,
        kafka_topic,
    } = cli.command
    {
        let kafka = kafka_brokers.as_deref().map(|b| (b, kafka_topic.as_str()));
        return sim(&system, listen, &dir, layout.as_deref(), kafka);
    }
    if let Command::Payouts { action } = cli.command {
        return payouts(action);
    }
    if let Command::Run { config } = cli.command {
        let Some(cfg) = load(&config, true) else {
            return ExitCode::from(2);
        };
        return run::run(cfg);
    }
    // These commands print and exit: when the reader of their output goes
    // away (`tongban map … | head`), they end quietly, as Unix tools do.
    restore_sigpipe();
    match cli.command {
        Command::Run { .. }
        | Command::Demo { .. }
        | Command::Sim { .. }
        | Command::Payouts { .. } => {
            unreachable!("handled above")
        }
        Command::Ingest {
            source,
            input,
            config,
        } => {
            let Some(cfg) = load(&config, false) else {
                return ExitCode::from(2);
            };
            run::ingest(&cfg, &source, &input)
        }
        Command::Check { config } => check(&config),
        Command::Map {
            mapping,
            input,
            config,
            max_record_bytes,
        } => {
            let Some(cfg) = load(&config, false) else {
                return ExitCode::from(2);
            };
            map::run(&cfg, &mapping, &input, max_record_bytes)
        }
        Command::Test { config, mapping } => test(&config, mapping.as_deref()),
        Command::Token { action } => ops::token(action),
        Command::Messages { action } => ops::messages(action),
        Command::Replay {
            id,
            remap,
            dry_run,
            args,
        } => ops::replay(id, remap, dry_run, args),
        Command::Skip { id, args } => ops::skip(id, args),
        Command::Pause { target, args } => ops::pause(target, true, args),
        Command::Resume { target, args } => ops::pause(target, false, args),
        Command::Targets { config } => ops::targets(config),
        Command::Tasks { action } => ops::tasks(action),
        Command::Quarantine { action } => ops::quarantine(action),
        Command::Audit { config } => ops::audit(config),
        Command::Log { action } => log::log(action),
        Command::Deadlines { config, json } => ops::deadlines(config, json),
        Command::Functions => {
            for f in crate::mapping::functions::FUNCTIONS {
                println!("{}", f.signature);
            }
            ExitCode::SUCCESS
        }
    }
}

fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to its default is async-signal
    // safe and happens before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Loads the configuration; prints diagnostics (all of them with `verbose`,
/// else only when there are errors) to stderr.
fn load(dir: &Path, verbose: bool) -> Option<Config> {
    let (cfg, diags) = crate::hub::load(dir);
    if verbose || cfg.is_none() {
        eprint!("{diags}");
    }
    if cfg.is_none() {
        eprintln!("{}", summary(&diags));
    }
    cfg
}

fn summary(d: &Diagnostics) -> String {
    let (e, w) = (d.errors(), d.warnings());
    format!(
        "{e} error{}, {w} warning{}",
        if e == 1 { "" } else { "s" },
        if w == 1 { "" } else { "s" }
    )
}

fn check(dir: &Path) -> ExitCode {
    let started = std::time::Instant::now();
    // The settings and plan the hub makes at start, made here too: what
    // `run` would refuse is an error now, not a surprise later.
    let (cfg, diags) = crate::hub::load(dir);
    let elapsed = started.elapsed();
    print!("{diags}");
    match cfg {
        None => {
            println!("configuration has problems: {}", summary(&diags));
            ExitCode::from(2)
        }
        Some(cfg) => {
            let tests: usize = cfg.mappings.values().map(|m| m.tests.len()).sum();
            println!(
                "configuration OK: {} schemas, {} connectors, {} mappings ({} test cases), {} tables; {} in {:.0?}",
                cfg.schemas.names().count(),
                cfg.connectors.len(),
                cfg.mappings.len(),
                tests,
                cfg.tables.len(),
                summary(&diags),
                elapsed
            );
            ExitCode::SUCCESS
        }
    }
}

fn test(dir: &Path, only: Option<&str>) -> ExitCode {
    let Some(cfg) = load(dir, false) else {
        return ExitCode::from(2);
    };
    if let Some(name) = only {
        if !cfg.mappings.contains_key(name) {
            eprintln!(
                "error: no mapping {name:?}; have: {}",
                cfg.mappings.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            return ExitCode::from(2);
        }
    }
    let (mut pass, mut fail) = (0, 0);
    for m in cfg
        .mappings
        .values()
        .filter(|m| only.is_none_or(|n| n == m.name))
    {
        println!("{} ({} → {})", m.file.display(), m.from, m.to);
        for r in m.run_tests() {
            match &r.failure {
                None => {
                    pass += 1;
                    println!("  ok    {}", r.name);
                }
                Some(why) => {
                    fail += 1;
                    println!("  FAIL  {} ({}:{})", r.name, m.file.display(), r.line);
                    for l in why.lines() {
                        println!("        {l}");
                    }
                }
            }
        }
    }
    println!("{pass} passed, {fail} failed");
    if fail > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
