//! Operations from the command line, on the store of a configuration: the
//! same actions as the operations API (`tongban messages`, `replay`,
//! `skip`, `targets`, `pause`, `resume`, `audit`, `token`). Whoever runs
//! them can open the store, so no token is asked for; personal data is
//! still masked unless `--unmasked` is given with a reason (audited), and
//! every action is audited under `--actor`.

use super::load;
use crate::admin;
use crate::store::{MessageFilter, Store};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

/// The actor of an action: `--actor`, else `$USER`, else `cli`.
fn actor(a: &Option<String>) -> String {
    a.clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".into())
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token; it is printed once and stored only as a hash.
    Create {
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// Who or what holds it (unique).
        #[arg(long)]
        name: String,
        /// It lets no one in after this long (e.g. 90d); without it, it
        /// lasts until revoked.
        #[arg(long)]
        expires: Option<humantime::Duration>,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
        /// Who creates it (kept in the audit).
        #[arg(long)]
        actor: Option<String>,
    },
    /// Replace a token without a gap: a new one is printed (same name and
    /// role); the old one works on for `--overlap`, renamed NAME@<ms>, then
    /// expires. Audited.
    Rotate {
        /// Its name.
        name: String,
        /// How long the old token still works (e.g. 1h, 1d).
        #[arg(long, default_value = "1d")]
        overlap: humantime::Duration,
        /// The new token lets no one in after this long (e.g. 90d).
        #[arg(long)]
        expires: Option<humantime::Duration>,
        /// Why (kept in the audit).
        #[arg(long)]
        reason: String,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
        /// Who rotates it (kept in the audit).
        #[arg(long)]
        actor: Option<String>,
    },
    /// The tokens: names, roles, when made and revoked.
    List {
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
    /// Revoke a token.
    Revoke {
        /// Its name.
        name: String,
        /// Why (kept in the audit).
        #[arg(long)]
        reason: String,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
        /// Who revokes it (kept in the audit).
        #[arg(long)]
        actor: Option<String>,
    },
}

/// Which messages: the filter shared by `messages list` and `tasks create`.
#[derive(clap::Args, Debug)]
pub struct FilterArgs {
    /// `connector.operation`.
    #[arg(long)]
    target: Option<String>,
    /// The ordering key.
    #[arg(long)]
    key: Option<String>,
    /// An error class of an attempt (http_422, timeout, connect, …).
    #[arg(long)]
    error_class: Option<String>,
    /// Text in the last error.
    #[arg(long)]
    text: Option<String>,
}

impl FilterArgs {
    fn filter(self) -> MessageFilter {
        MessageFilter {
            target: self.target,
            key: self.key,
            error_class: self.error_class,
            text: self.text,
            ..MessageFilter::default()
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum MessagesCommand {
    /// Messages by filter, one line each, masked.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// pending, delivered, dead or skipped.
        #[arg(long)]
        status: Option<String>,
        /// Ids above this one (the next page).
        #[arg(long)]
        after: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
    /// One message in full (JSON): source record, payload, attempts.
    Show {
        /// Message id.
        id: i64,
        /// Show personal data (audited; needs --reason).
        #[arg(long, requires = "reason")]
        unmasked: bool,
        /// Why the personal data is needed.
        #[arg(long)]
        reason: Option<String>,
        /// Who looks (kept in the audit).
        #[arg(long)]
        actor: Option<String>,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// Bulk replays: progress and state, newest first.
    List {
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
    /// Start a bulk replay of the dead messages matching the filter; the
    /// running hub replays them in chunks (one audit row).
    Create {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many (1 to 100,000).
        #[arg(long, default_value_t = 10_000)]
        cap: i64,
        #[command(flatten)]
        args: ActionArgs,
    },
    /// Pause a running bulk replay.
    Pause {
        /// Task id.
        id: i64,
        #[command(flatten)]
        args: ActionArgs,
    },
    /// Resume a paused bulk replay.
    Resume {
        /// Task id.
        id: i64,
        #[command(flatten)]
        args: ActionArgs,
    },
    /// Cancel a bulk replay (what it replayed stays replayed).
    Cancel {
        /// Task id.
        id: i64,
        #[command(flatten)]
        args: ActionArgs,
    },
}

/// `tongban tasks …`.
pub fn tasks(cmd: TasksCommand) -> ExitCode {
    let print = |t: &crate::store::TaskRow| {
        println!(
            "task {:>5}  {:<9} {:>7}/{:<7} replayed  by {} at {}: {}",
            t.id,
            t.status,
            t.done,
            t.total,
            t.actor,
            time(t.created_at),
            t.reason
        );
    };
    let (id, args, action): (i64, ActionArgs, &str) = match cmd {
        TasksCommand::List { config } => {
            return with_store(&config, async move |_, store| {
                for t in store.tasks().await? {
                    print(&t);
                }
                Ok(())
            })
        }
        TasksCommand::Create { filter, cap, args } => {
            return with_store(&args.config, async move |_, store| {
                if !(1..=admin::TASK_CAP.0).contains(&cap) {
                    return Err(format!("--cap must be 1 to {}", admin::TASK_CAP.0).into());
                }
                let f = filter.filter();
                let t = store
                    .create_task(&f, cap, &actor(&args.actor), &args.reason)
                    .await?;
                print(&t);
                Ok(())
            })
        }
        TasksCommand::Pause { id, args } => (id, args, "pause"),
        TasksCommand::Resume { id, args } => (id, args, "resume"),
        TasksCommand::Cancel { id, args } => (id, args, "cancel"),
    };
    let (from, to) = admin::task_transition(action).expect("a known task action");
    with_store(&args.config, async move |_, store| {
        if !store
            .set_task_status(id, from, to, &actor(&args.actor), &args.reason)
            .await?
        {
            return Err(format!("task {id} is not {}", from.join(" or ")).into());
        }
        println!("task {id} {to}");
        Ok(())
    })
}

#[derive(Subcommand, Debug)]
pub enum QuarantineCommand {
    /// Records waiting for a mapping fix, with the reason (masked).
    List {
        /// `connector.operation` of the records.
        #[arg(long)]
        source: Option<String>,
        /// The feed that could not map them.
        #[arg(long)]
        mapping: Option<String>,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
    /// Map them again with the feeds as configured now: those that map are
    /// queued, those now filtered out are resolved (one audit row).
    Remap {
        /// `connector.operation` of the records.
        #[arg(long)]
        source: Option<String>,
        /// The feed.
        #[arg(long)]
        mapping: Option<String>,
        /// Count what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many records.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
        #[command(flatten)]
        args: ActionArgs,
    },
}

/// `tongban quarantine …`.
pub fn quarantine(cmd: QuarantineCommand) -> ExitCode {
    match cmd {
        QuarantineCommand::List {
            source,
            mapping,
            config,
        } => with_store(&config, async move |_, store| {
            for q in store
                .quarantined(source.as_deref(), mapping.as_deref(), 1000)
                .await?
            {
                println!(
                    "{:>7}  {:<32} {:<40} {}: {}",
                    q.id,
                    q.source,
                    q.mapping,
                    q.part,
                    crate::domain::mask::text(&q.reason)
                );
            }
            Ok(())
        }),
        QuarantineCommand::Remap {
            source,
            mapping,
            dry_run,
            limit,
            args,
        } => with_store(&args.config, async move |cfg, store| {
            let r = crate::pipeline::remap_quarantine(
                cfg,
                &store,
                source.as_deref(),
                mapping.as_deref(),
                limit.max(1),
                (!dry_run).then_some((actor(&args.actor).as_str(), args.reason.as_str())),
            )
            .await?;
            println!(
                "{}{} mapped, {} filtered out, {} still failing",
                if dry_run { "dry run: " } else { "" },
                r.mapped,
                r.filtered,
                r.failing.len()
            );
            for (id, why) in &r.failing {
                println!("  {id}: {}", crate::domain::mask::text(why));
            }
            Ok(())
        }),
    }
}

/// Arguments shared by the actions on one message or target.
#[derive(clap::Args, Debug)]
pub struct ActionArgs {
    /// Why (kept in the audit).
    #[arg(long)]
    pub reason: String,
    /// Who does it (kept in the audit).
    #[arg(long)]
    pub actor: Option<String>,
    /// Configuration directory.
    #[arg(long, short, default_value = ".")]
    pub config: PathBuf,
}

/// Runs `f` on the configuration's store; prints its error and exits 1 on
/// failure, 2 on a bad configuration.
/// Errors of a command: any module's, printed as `error: …`.
pub(super) type CliError = Box<dyn std::error::Error + Send + Sync>;

pub(super) fn with_store<F>(config: &std::path::Path, f: F) -> ExitCode
where
    F: AsyncFnOnce(&'static crate::config::Config, Store) -> Result<(), CliError>,
{
    let Some(cfg) = load(config, false) else {
        return ExitCode::from(2);
    };
    let cfg: &'static crate::config::Config = Box::leak(Box::new(cfg));
    let rt = crate::hub::runtime();
    let r = rt.block_on(async move {
        let store = Store::open(&cfg.hub.store.url, &cfg.dir).await?;
        f(cfg, store).await
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `tongban token …`.
pub fn token(cmd: TokenCommand) -> ExitCode {
    match cmd {
        TokenCommand::Create {
            role,
            name,
            expires,
            config,
            actor: who,
        } => with_store(&config, async move |_, store| {
            admin::Role::parse(&role)?;
            let (token, hash) = admin::new_token()?;
            let until = expires.map(|d| crate::store::now_ms() + d.as_millis() as i64);
            store
                .create_token(&name, &role, &hash, until, &actor(&who))
                .await
                .map_err(|e| format!("token {name:?}: {e}"))?;
            let lasts = until.map_or(String::new(), |u| format!(", until {}", time(u)));
            eprintln!("token {name} ({role}{lasts}) created; it is shown this once:");
            println!("{token}");
            Ok(())
        }),
        TokenCommand::Rotate {
            name,
            overlap,
            expires,
            reason,
            config,
            actor: who,
        } => with_store(&config, async move |_, store| {
            let (token, hash) = admin::new_token()?;
            let now = crate::store::now_ms();
            let overlap_until = now + overlap.as_millis() as i64;
            let until = expires.map(|d| now + d.as_millis() as i64);
            let old = store
                .rotate_token(&name, &hash, overlap_until, until, &actor(&who), &reason)
                .await?
                .ok_or_else(|| format!("no live token {name:?}"))?;
            eprintln!(
                "token {name} rotated: the old one works until {} (as {old}); the new one is shown this once:",
                time(overlap_until)
            );
            println!("{token}");
            Ok(())
        }),
        TokenCommand::List { config } => with_store(&config, async move |_, store| {
            for t in store.tokens().await? {
                let now = crate::store::now_ms();
                println!(
                    "{:<24} {:<9} created {}{}{}",
                    t.name,
                    t.role,
                    time(t.created_at),
                    t.expires_at
                        .map(|e| format!(
                            ", {} {}",
                            if e > now { "expires" } else { "expired" },
                            time(e)
                        ))
                        .unwrap_or_default(),
                    t.revoked_at
                        .map(|r| format!(", revoked {}", time(r)))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }),
        TokenCommand::Revoke {
            name,
            reason,
            config,
            actor: who,
        } => with_store(&config, async move |_, store| {
            if store.revoke_token(&name, &actor(&who), &reason).await? {
                println!("token {name} revoked");
                Ok(())
            } else {
                Err(format!("no live token {name:?}").into())
            }
        }),
    }
}

/// A time in ms since the epoch, in China Standard Time.
fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&crate::domain::china_tz())
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// `tongban messages …`.
pub fn messages(cmd: MessagesCommand) -> ExitCode {
    match cmd {
        MessagesCommand::List {
            filter,
            status,
            after,
            limit,
            config,
        } => with_store(&config, async move |_, store| {
            let filter = MessageFilter {
                status: status.as_deref().map(admin::status_code).transpose()?,
                after,
                ..filter.filter()
            };
            let rows = store.find_messages(&filter, limit.max(1)).await?;
            for m in &rows {
                println!(
                    "{:>9}  {:<9}  {:<40}  key {:<20}  attempts {:>2}  {}",
                    m.id,
                    crate::store::status_name(m.status),
                    m.target,
                    crate::domain::mask::text(&m.key),
                    m.attempts,
                    m.last_error
                        .as_deref()
                        .map(crate::domain::mask::text)
                        .unwrap_or_default()
                );
            }
            if rows.len() == limit {
                if let Some(last) = rows.last() {
                    eprintln!("more: --after {}", last.id);
                }
            }
            Ok(())
        }),
        MessagesCommand::Show {
            id,
            unmasked,
            reason,
            actor: who,
            config,
        } => with_store(&config, async move |_, store| {
            let v = admin::message_detail(&store, id, unmasked)
                .await?
                .ok_or_else(|| format!("there is no message {id}"))?;
            if unmasked {
                store
                    .note(
                        &actor(&who),
                        "view_unmasked",
                        &format!("message {id}"),
                        reason.as_deref().unwrap_or_default(),
                    )
                    .await?;
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }),
    }
}

/// `tongban replay ID`: as is, or `--remap` (with `--dry-run` to see the
/// changed fields first).
pub fn replay(id: i64, remap: bool, dry_run: bool, a: ActionArgs) -> ExitCode {
    with_store(&a.config, async move |cfg, store| {
        if remap || dry_run {
            let (msg, payload) = crate::pipeline::remap(cfg, &store, id).await?;
            let changes = admin::diff(&msg.payload, &payload);
            if dry_run {
                if changes.is_empty() {
                    println!("message {id}: the current mapping makes the same payload");
                }
                for c in &changes {
                    println!(
                        "{}: {} → {}",
                        c["field"].as_str().unwrap_or(""),
                        c["before"],
                        c["after"]
                    );
                }
                return Ok(());
            }
            store
                .replay(id, Some(payload), &actor(&a.actor), &a.reason)
                .await?;
            println!(
                "message {id} replayed re-mapped ({} fields changed)",
                changes.len()
            );
        } else {
            store.replay(id, None, &actor(&a.actor), &a.reason).await?;
            println!("message {id} replayed as is");
        }
        Ok(())
    })
}

/// `tongban skip ID`.
pub fn skip(id: i64, a: ActionArgs) -> ExitCode {
    with_store(&a.config, async move |_, store| {
        store.skip(id, &actor(&a.actor), &a.reason).await?;
        println!("message {id} skipped");
        Ok(())
    })
}

/// `tongban pause TARGET` / `tongban resume TARGET`.
pub fn pause(target: String, paused: bool, a: ActionArgs) -> ExitCode {
    with_store(&a.config, async move |_, store| {
        store
            .set_paused(&target, paused, &actor(&a.actor), &a.reason)
            .await?;
        println!("{target} {}", if paused { "paused" } else { "resumed" });
        Ok(())
    })
}

/// `tongban targets`.
pub fn targets(config: PathBuf) -> ExitCode {
    with_store(&config, async move |_, store| {
        let now = crate::store::now_ms();
        println!(
            "{:<44} {:>9} {:>10} {:>7} {:>7} {:>12}  paused",
            "target", "pending", "delivered", "dead", "skipped", "oldest (s)"
        );
        for t in store.targets().await? {
            println!(
                "{:<44} {:>9} {:>10} {:>7} {:>7} {:>12}  {}",
                t.target,
                t.pending,
                t.delivered,
                t.dead,
                t.skipped,
                t.oldest_pending_at
                    .map(|a| ((now - a).max(0) / 1000).to_string())
                    .unwrap_or_else(|| "-".into()),
                if t.paused { "yes" } else { "" }
            );
        }
        Ok(())
    })
}

/// `tongban deadlines`.
pub fn deadlines(config: PathBuf, json: bool) -> ExitCode {
    with_store(&config, async move |cfg, store| {
        use crate::connectors::deadlines::report;
        let Some(settings) = report::settings(cfg) else {
            return Err(
                "the configuration has no deadlines connector (kind = \"deadlines\")".into(),
            );
        };
        let r = report::report(&settings, &store, crate::store::now_ms()).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&r)?);
            return Ok(());
        }
        println!(
            "Deadlines on {} ({}); due soon: by the end of {}",
            r.today,
            if r.working_day {
                "a working day"
            } else {
                "a rest day"
            },
            r.due_soon_until
        );
        println!(
            "{:<20} {:>7} {:>8} {:>9} {:>6}",
            "stage", "open", "overdue", "due soon", "late"
        );
        for c in &r.stages {
            println!(
                "{:<20} {:>7} {:>8} {:>9} {:>6}",
                c.stage, c.open, c.overdue, c.due_soon, c.late
            );
        }
        let total = |f: fn(&crate::store::StageCount) -> i64| r.stages.iter().map(f).sum::<i64>();
        for (title, list, n) in [
            ("Overdue", &r.overdue, total(|c| c.overdue)),
            (
                "Due within one working day",
                &r.due_soon,
                total(|c| c.due_soon),
            ),
        ] {
            if n as usize > list.len() {
                println!("\n{title}: {n} (the first {} by due date)", list.len());
            } else {
                println!("\n{title}: {n}");
            }
            for e in list.iter() {
                println!(
                    "  {:<22} {:<18} {:<18} {} entered {}  due {}{}  {} owes: {}",
                    e.application_id,
                    e.stage,
                    e.holder,
                    e.office_region,
                    &e.entered_at[..10.min(e.entered_at.len())],
                    e.due_on,
                    if e.working_days_over > 0 {
                        format!(" ({} working days over)", e.working_days_over)
                    } else {
                        String::new()
                    },
                    e.office,
                    e.awaits
                );
            }
        }
        Ok(())
    })
}

/// `tongban audit`.
pub fn audit(config: PathBuf) -> ExitCode {
    with_store(&config, async move |_, store| {
        for r in store.audit().await? {
            println!(
                "{}  {:<16} {:<16} {:<32} {}",
                time(r.at),
                r.actor,
                r.action,
                r.subject,
                r.reason
            );
        }
        Ok(())
    })
}
