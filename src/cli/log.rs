//! `tongban log …`: the exchange log (存证) for an office or an auditor:
//! make a signing key, export a range, verify a range (in the store or in
//! an export) and name the first entry that does not hold.

use super::ops::{with_store, CliError};
use crate::store::evidence::{
    hex, unhex, when, Checked, Entry, Hash, Seal, SealKey, Verifier, VerifyKey,
};
use crate::store::Store;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Entries read from the store at a time.
const PAGE: usize = 10_000;

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Make a signing key for `[evidence] signing_key`: the private key in
    /// PKCS#8 PEM (mode 0600) and its public half beside it (`FILE.pub`),
    /// the one to give auditors.
    Keygen {
        /// ed25519 or sm2.
        #[arg(long, default_value = "ed25519")]
        algorithm: String,
        /// The private key's file (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Export entries and their seals as JSON lines, for an office or an
    /// auditor who has no access to the store. The range is extended to the
    /// first seal at or after its end, so that a seal vouches for all of it.
    Export {
        /// First entry: a position, or a date or time (`2026-12-01`,
        /// `2026-12-01T08:00:00Z`, China time for a bare date).
        #[arg(long)]
        from: Option<String>,
        /// Last entry: a position, or a date or time (a bare date: to its end).
        #[arg(long)]
        to: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
    /// Prove a range intact, in the store or in an export, or name the first
    /// entry that is not. Exit 0 if intact, 1 if not.
    Verify {
        /// An export to verify instead of the store.
        #[arg(long)]
        file: Option<PathBuf>,
        /// A public key (PEM) whose seals are trusted; may be given more than
        /// once (keys rotated). In the store, the configured signing key's
        /// public half is trusted when none is given.
        #[arg(long)]
        key: Vec<PathBuf>,
        /// First entry (position or date), in the store.
        #[arg(long)]
        from: Option<String>,
        /// Last entry (position or date), in the store.
        #[arg(long)]
        to: Option<String>,
        /// The outcome as JSON (stable English field names).
        #[arg(long)]
        json: bool,
        /// Configuration directory.
        #[arg(long, short, default_value = ".")]
        config: PathBuf,
    },
}

/// `tongban log …`.
pub fn log(cmd: LogCommand) -> ExitCode {
    match cmd {
        LogCommand::Keygen { algorithm, out } => keygen(&algorithm, &out),
        LogCommand::Export {
            from,
            to,
            out,
            config,
        } => with_store(&config, async move |_, store| {
            export(&store, from.as_deref(), to.as_deref(), out.as_deref()).await
        }),
        LogCommand::Verify {
            file: Some(file),
            key,
            json,
            ..
        } => finish(verify_file(&file, &key), json),
        LogCommand::Verify {
            file: None,
            key,
            from,
            to,
            json,
            config,
        } => {
            let mut outcome = None;
            let code = with_store(&config, async |cfg, store| {
                let mut keys = read_keys(&key)?;
                if keys.is_empty() {
                    if let Ok(Some(k)) = crate::hub::evidence::seal_key(cfg) {
                        keys.push(k.public());
                    }
                }
                outcome = Some(verify_store(&store, keys, from.as_deref(), to.as_deref()).await?);
                Ok(())
            });
            match outcome {
                Some(o) => finish(Ok(o), json),
                None => code,
            }
        }
    }
}

fn keygen(algorithm: &str, out: &Path) -> ExitCode {
    let made = (|| -> Result<String, CliError> {
        let key = SealKey::generate(algorithm)?;
        let public = out.with_extension(match out.extension() {
            Some(e) => format!("{}.pub", e.to_string_lossy()),
            None => "pub".into(),
        });
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot make {}: {e}", parent.display()))?;
        }
        let mut f = std::fs::OpenOptions::new();
        f.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
        let mut file = f.open(out).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "{} exists: a signing key is never overwritten (move it away first, or choose another --out)",
                out.display()
            ),
            _ => format!("cannot make {}: {e}", out.display()),
        })?;
        file.write_all(key.to_pem()?.as_bytes())?;
        file.sync_all()?;
        std::fs::write(&public, key.public().to_pem())
            .map_err(|e| format!("cannot write {}: {e}", public.display()))?;
        Ok(format!(
            "Made a signing key ({}), id {}\n  private key: {} (mode 0600; name it in tongban.toml: [evidence] signing_key = \"${{file:{}}}\")\n  public key:  {} (give it to whoever verifies exports: tongban log verify --key)",
            key.algorithm(),
            key.public().id(),
            out.display(),
            out.display(),
            public.display()
        ))
    })();
    match made {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn read_keys(files: &[PathBuf]) -> Result<Vec<VerifyKey>, CliError> {
    files
        .iter()
        .map(|f| {
            let pem = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read key {}: {e}", f.display()))?;
            VerifyKey::from_pem(&pem).map_err(|e| format!("{}: {e}", f.display()).into())
        })
        .collect()
}

/// One line of an export.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    /// The first line: what the export holds.
    Export(Header),
    /// A chained entry.
    Entry(EntryLine),
    /// A seal, after the entry it seals.
    Seal(SealLine),
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    from: i64,
    to: i64,
    exported_at: String,
}

#[derive(Serialize, Deserialize)]
struct EntryLine {
    pos: i64,
    at: i64,
    kind: String,
    /// The facts, byte for byte as hashed.
    body: Box<RawValue>,
    prev: String,
    hash: String,
}

#[derive(Serialize, Deserialize)]
struct SealLine {
    pos: i64,
    at: i64,
    hash: String,
    algorithm: String,
    key_id: String,
    signature: String,
}

fn hash_from(s: &str) -> Option<Hash> {
    unhex(s)?.try_into().ok()
}

impl EntryLine {
    fn of(e: &Entry) -> Result<EntryLine, CliError> {
        Ok(EntryLine {
            pos: e.pos,
            at: e.at,
            kind: e.kind.clone(),
            body: RawValue::from_string(e.body.clone())
                .map_err(|err| format!("entry {}: its body is not JSON: {err}", e.pos))?,
            prev: hex(&e.prev),
            hash: hex(&e.hash),
        })
    }

    fn entry(self) -> Option<Entry> {
        Some(Entry {
            pos: self.pos,
            at: self.at,
            kind: self.kind,
            body: self.body.get().to_string(),
            prev: hash_from(&self.prev)?,
            hash: hash_from(&self.hash)?,
        })
    }
}

impl SealLine {
    fn of(s: &Seal) -> SealLine {
        SealLine {
            pos: s.pos,
            at: s.at,
            hash: hex(&s.hash),
            algorithm: s.algorithm.clone(),
            key_id: s.key_id.clone(),
            signature: hex(&s.signature),
        }
    }

    fn seal(self) -> Option<Seal> {
        Some(Seal {
            pos: self.pos,
            at: self.at,
            hash: hash_from(&self.hash)?,
            algorithm: self.algorithm,
            key_id: self.key_id,
            signature: unhex(&self.signature)?,
        })
    }
}

/// A `--from`/`--to` bound: a position, or a time (ms).
enum Bound {
    Pos(i64),
    At(i64),
}

fn bound(s: &str, end: bool) -> Result<Bound, CliError> {
    if let Ok(p) = s.parse::<i64>() {
        return Ok(Bound::Pos(p));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        return Ok(Bound::At(ms));
    }
    let date = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        format!("{s:?} is not an entry's position, a date (2026-12-01) or a time (2026-12-01T08:00:00Z)")
    })?;
    // A bare date is a day in China (UTC+8): from its start, or to its end.
    let day = if end {
        date.succ_opt().unwrap_or(date)
    } else {
        date
    };
    let start = day
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
        .timestamp_millis()
        - 8 * 3_600_000;
    Ok(Bound::At(if end { start - 1 } else { start }))
}

/// The positions a range covers in the store, `[from, to]`, and the
/// log's counts.
async fn range(
    store: &Store,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(i64, i64, crate::store::evidence::LogCounts), CliError> {
    let counts = store.log_counts().await?;
    let last = counts.chained;
    let resolve = async |b: Option<&str>, end: bool| -> Result<i64, CliError> {
        Ok(match b.map(|s| bound(s, end)).transpose()? {
            None => {
                if end {
                    last
                } else {
                    1
                }
            }
            Some(Bound::Pos(p)) => p,
            Some(Bound::At(ms)) => store
                .evidence_position_at(ms, end)
                .await?
                .unwrap_or(if end { 0 } else { last + 1 }),
        })
    };
    let from = resolve(from, false).await?.max(1);
    let to = resolve(to, true).await?.min(last);
    Ok((from, to, counts))
}

async fn export(
    store: &Store,
    from: Option<&str>,
    to: Option<&str>,
    out: Option<&Path>,
) -> Result<(), CliError> {
    let (from, mut to, _) = range(store, from, to).await?;
    if from <= to {
        if let Some(s) = store.seal_after(to).await? {
            if s.pos > to {
                eprintln!(
                    "The range is extended to entry {} (its first seal after entry {to}), so that a seal vouches for all of it.",
                    s.pos
                );
                to = s.pos;
            }
        }
    }
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("cannot make {}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let line = |w: &mut dyn Write, l: &Line| -> Result<(), CliError> {
        serde_json::to_writer(&mut *w, l)?;
        w.write_all(b"\n")?;
        Ok(())
    };
    line(
        &mut *w,
        &Line::Export(Header {
            format: "tongban-evidence-1".into(),
            from,
            to,
            exported_at: when(crate::store::now_ms()),
        }),
    )?;
    let (mut entries, mut seals) = (0, 0);
    let mut at = from;
    while at <= to {
        let page = store.evidence(at, to, PAGE).await?;
        let Some(last) = page.last().map(|e| e.pos) else {
            break;
        };
        let page_seals = store.seals(at, last).await?;
        let mut s = page_seals.iter().peekable();
        for e in &page {
            line(&mut *w, &Line::Entry(EntryLine::of(e)?))?;
            entries += 1;
            while let Some(seal) = s.next_if(|x| x.pos <= e.pos) {
                line(&mut *w, &Line::Seal(SealLine::of(seal)))?;
                seals += 1;
            }
        }
        at = last + 1;
    }
    w.flush()?;
    if let Some(p) = out {
        eprintln!(
            "Exported entries {from} to {to} ({}, {}) to {}",
            plural(entries, "entry", "entries"),
            plural(seals, "seal", "seals"),
            p.display()
        );
    }
    Ok(())
}

/// A verification's outcome, as printed.
#[derive(Serialize)]
struct Outcome {
    intact: bool,
    first: Option<i64>,
    last: Option<i64>,
    entries: i64,
    seals_checked: i64,
    seals_unchecked: i64,
    sealed_to: Option<i64>,
    /// Entries after the last checked seal.
    unsealed: i64,
    /// Facts written but not chained yet (the store only).
    unchained: Option<i64>,
    /// The trusted keys' ids.
    keys: Vec<String>,
    broken: Option<BrokenAt>,
}

#[derive(Serialize)]
struct BrokenAt {
    pos: i64,
    why: String,
}

fn outcome(c: Checked, keys: &[VerifyKey], unchained: Option<i64>) -> Outcome {
    let v = c.verified;
    let intact = c.broken.is_none();
    Outcome {
        intact,
        unsealed: match (intact, v.last, v.sealed_to) {
            (false, ..) => 0,
            (true, Some(l), Some(s)) => (l - s).max(0),
            (true, Some(_), None) => v.entries,
            _ => 0,
        },
        first: v.first,
        last: v.last,
        entries: v.entries,
        seals_checked: v.seals_checked,
        seals_unchecked: v.seals_unchecked,
        sealed_to: v.sealed_to,
        unchained,
        keys: keys.iter().map(|k| k.id()).collect(),
        broken: c.broken.map(|b| BrokenAt {
            pos: b.pos,
            why: b.why,
        }),
    }
}

async fn verify_store(
    store: &Store,
    keys: Vec<VerifyKey>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Outcome, CliError> {
    let (from, to, counts) = range(store, from, to).await?;
    let checked = store.verify_log(keys.clone(), from, to).await?;
    Ok(outcome(checked, &keys, Some(counts.unchained)))
}

fn verify_file(file: &Path, key_files: &[PathBuf]) -> Result<Outcome, CliError> {
    let keys = read_keys(key_files)?;
    let f =
        std::fs::File::open(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut run = Verifier::new(keys.clone());
    let mut header = false;
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", file.display(), n + 1);
        let parsed: Line = serde_json::from_str(&line)
            .map_err(|e| format!("{}: not a line of a tongban export: {e}", at()))?;
        match parsed {
            Line::Export(h) => {
                if h.format != "tongban-evidence-1" {
                    return Err(format!("{}: unknown format {:?}", at(), h.format).into());
                }
                header = true;
            }
            Line::Entry(e) => {
                let pos = e.pos;
                let e = e
                    .entry()
                    .ok_or_else(|| format!("{}: entry {pos}: a hash is not 64 hex digits", at()))?;
                let _ = run.entry(&e);
            }
            Line::Seal(s) => {
                let pos = s.pos;
                let s = s.seal().ok_or_else(|| {
                    format!(
                        "{}: the seal of entry {pos}: a hash or signature is not hex",
                        at()
                    )
                })?;
                let _ = run.seal(&s);
            }
        }
        if !run.intact() {
            break;
        }
    }
    if !header {
        return Err(format!("{}: not a tongban export (no header line)", file.display()).into());
    }
    Ok(outcome(run.finish(), &keys, None))
}

fn finish(r: Result<Outcome, CliError>, json: bool) -> ExitCode {
    let o = match r {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&o).unwrap_or_default());
    } else {
        print!("{}", human(&o));
    }
    if o.intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn human(o: &Outcome) -> String {
    let mut s = String::new();
    let range = match (o.first, o.last) {
        (Some(f), Some(l)) => format!("entries {f} to {l}"),
        _ => "no entries".into(),
    };
    match &o.broken {
        Some(b) => {
            s.push_str(&format!("NOT INTACT at entry {}: {}\n", b.pos, b.why));
            if o.entries > 0 {
                s.push_str(&format!(
                    "  before it, {range} hold ({} checked)\n",
                    plural(o.entries, "entry", "entries")
                ));
            }
        }
        None if o.entries == 0 => s.push_str("No entries chained in this range\n"),
        None => {
            s.push_str(&format!(
                "Intact: {range} ({} checked)\n",
                plural(o.entries, "entry", "entries")
            ));
        }
    }
    if o.broken.is_some() && o.sealed_to.is_none() {
        // Nothing before the break was sealed: no seal line.
    } else if o.keys.is_empty() {
        s.push_str(&format!(
            "  {} found, none checked: no trusted key given (--key PUBLIC.pem)\n",
            plural(o.seals_unchecked, "seal", "seals")
        ));
    } else if let Some(to) = o.sealed_to {
        s.push_str(&format!(
            "  sealed up to entry {to}: {} verified with {}\n",
            plural(o.seals_checked, "seal", "seals"),
            o.keys.join(", ")
        ));
    } else {
        s.push_str(&format!("  no seal verified with {}\n", o.keys.join(", ")));
    }
    if o.intact && o.unsealed > 0 {
        s.push_str(&format!(
            "  {} after the last seal chained but not sealed yet\n",
            plural(o.unsealed, "entry", "entries")
        ));
    }
    if let Some(n) = o.unchained.filter(|n| *n > 0) {
        s.push_str(&format!(
            "  {} written but not chained yet (a running hub chains them every second)\n",
            plural(n, "fact", "facts")
        ));
    }
    s
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
