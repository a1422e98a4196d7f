//! The SFTP bank channel against a real OpenSSH server (a private `sshd`
//! on 127.0.0.1 with its own host key and a user key made for the test,
//! stopped when the test ends): payment files uploaded under a temporary
//! name, renamed, then their checksum file; an upload broken off by the
//! server going away repeated in place; unknown and changed host keys
//! refused; and the month's payouts end to end, the files up over SFTP,
//! the bank simulator answering in the directory the server serves, the
//! results picked up over SFTP, reconciled and moved aside on the server.

mod support;

use std::path::Path;
use std::time::Duration;
use tongban::connectors::sftp::settings::SftpSettings;
use tongban::connectors::sftp::{self, SftpClient, SftpError};
use tongban::sim::sshd::Sshd;

fn server() -> (tempfile::TempDir, Sshd) {
    let d = tempfile::tempdir().unwrap();
    let s = Sshd::start(&d.path().join("sshd")).unwrap_or_else(|e| {
        panic!("an OpenSSH server is needed (scripts/test.sh installs openssh-server): {e}")
    });
    (d, s)
}

/// The settings of an sftp connector for `sshd` with `lines` added (a
/// pin, or another key).
fn settings(sshd: &Sshd, lines: &str) -> SftpSettings {
    let host = match lines.contains("host = \"") {
        true => String::new(),
        false => format!("host = \"127.0.0.1:{}\"\n", sshd.port),
    };
    let text = format!("kind = \"sftp\"\n{host}timeout = \"5s\"\n{lines}\n");
    let spec: tongban::config::ConnectorSpec = toml::from_str(&text).unwrap();
    SftpSettings::of(&spec, Path::new("/")).unwrap_or_else(|p| panic!("{text}: {p:?}"))
}

fn pinned(sshd: &Sshd) -> SftpSettings {
    settings(sshd, &sshd.connector_lines())
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn local(bytes: &[u8]) -> (tokio::fs::File, u64) {
    use std::io::{Seek, Write};
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(bytes).unwrap();
    f.rewind().unwrap();
    (tokio::fs::File::from_std(f), bytes.len() as u64)
}

#[tokio::test]
async fn a_file_is_placed_whole_then_its_checksum_and_a_broken_upload_is_repeated_in_place() {
    let (d, mut sshd) = server();
    let bank = d.path().join("bank");
    let out = format!("{}/out", bank.display());
    let c = SftpClient::new(&pinned(&sshd));
    // 64 MB of payment-file-like text, not all alike.
    let body: Vec<u8> = (0..1_000_000u32)
        .flat_map(|i| {
            format!("<CdtTrfTxInf><EndToEndId>P{i:09}</EndToEndId></CdtTrfTxInf>\n").into_bytes()
        })
        .collect();
    let digest = tongban::connectors::file::sha256_hex(&body);
    let name = "TB-2026-11-105100000017-0001.pain001.xml";

    // The server goes away during the upload: the upload fails (the
    // dispatcher will retry it); the bank's directory holds no file under
    // its name, only the temporary dot-file at most.
    let (f, len) = local(&body);
    let up = {
        let c = &c;
        let out = out.clone();
        async move { sftp::upload(c, &out, name, f, len).await }
    };
    let stop = async {
        // Once some bytes are there.
        let tmp = bank.join("out").join(sftp::temp_name(name));
        support::eventually(Duration::from_secs(20), "the upload started", || async {
            std::fs::metadata(&tmp).is_ok_and(|m| m.len() > 0 && m.len() < len)
        })
        .await;
        sshd.stop();
    };
    let (broken, ()) = tokio::join!(up, stop);
    let e = broken.expect_err("the upload cannot finish without the server");
    // The exchange broke (not a refusal the server answered, nor a local
    // or secret problem): the dispatcher retries it.
    assert!(
        matches!(
            e,
            SftpError::Connect { .. }
                | SftpError::Timeout { .. }
                | SftpError::Remote { status: None, .. }
        ),
        "{e}"
    );
    assert!(
        !bank.join("out").join(name).exists(),
        "no half file under its name"
    );

    // The server is back: the same bytes go to the same place, the
    // checksum file after them, and no temporary file is left.
    sshd.restart().unwrap();
    let (f, len) = local(&body);
    sftp::upload(&c, &out, name, f, len).await.unwrap();
    assert!(!bank.join("out").join(format!("{name}.sha256")).exists());
    sftp::place_checksum(&c, &out, name, &digest).await.unwrap();
    assert_eq!(
        names(&bank.join("out")),
        [name.to_string(), format!("{name}.sha256")]
    );
    assert_eq!(std::fs::read(bank.join("out").join(name)).unwrap(), body);
    assert_eq!(
        std::fs::read_to_string(bank.join("out").join(format!("{name}.sha256"))).unwrap(),
        tongban::connectors::file::checksum_line(name, &body)
    );
    // A retry after the file is placed (a crash before the hub recorded
    // the delivery) puts the same bytes there again: same name, no second file.
    let (f, len) = local(&body);
    sftp::upload(&c, &out, name, f, len).await.unwrap();
    assert_eq!(names(&bank.join("out")).len(), 2);
    assert_eq!(std::fs::read(bank.join("out").join(name)).unwrap(), body);
    // The file without its checksum file (a crash in between): `finish`
    // writes it; with both there, it does nothing.
    std::fs::remove_file(bank.join("out").join(format!("{name}.sha256"))).unwrap();
    assert!(sftp::finish(&c, &out, name, &digest).await.unwrap());
    assert!(!sftp::finish(&c, &out, name, &digest).await.unwrap());
    assert!(bank.join("out").join(format!("{name}.sha256")).exists());
}

#[tokio::test]
async fn an_unknown_or_changed_host_key_and_a_key_the_server_does_not_know_are_refused() {
    let (d, sshd) = server();
    // Why a connection with these settings lines is refused.
    let refused = |lines: &str| {
        let c = SftpClient::new(&settings(&sshd, lines));
        let lines = lines.to_string();
        async move {
            match c.probe().await {
                Err(e) => e.to_string(),
                Ok(()) => panic!("connected with {lines}"),
            }
        }
    };
    let auth = format!(
        "auth = {{ type = \"key\", username = \"{}\", private_key = \"${{file:{}}}\" }}",
        sshd.user,
        sshd.user_key.display()
    );
    // The pinned fingerprint is right: connected.
    let ok = settings(
        &sshd,
        &format!("host_key = \"{}\"\n{auth}", sshd.fingerprint),
    );
    SftpClient::new(&ok).probe().await.unwrap();

    // Another fingerprint.
    let other = format!("SHA256:{}", "A".repeat(43));
    let e = refused(&format!("host_key = \"{other}\"\n{auth}")).await;
    assert!(e.contains("host key refused"), "{e}");
    assert!(e.contains(&sshd.fingerprint) && e.contains(&other), "{e}");

    // A known_hosts file that holds another key for this host: changed.
    let other_key = d.path().join("other");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .status()
        .unwrap();
    let pub_key = std::fs::read_to_string(other_key.with_extension("pub")).unwrap();
    let mut parts = pub_key.split_whitespace();
    let kh = d.path().join("known_hosts_changed");
    std::fs::write(
        &kh,
        format!(
            "# the bank's key\n[127.0.0.1]:{} {} {}\n",
            sshd.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        ),
    )
    .unwrap();
    let e = refused(&format!("known_hosts = \"{}\"\n{auth}", kh.display())).await;
    assert!(e.contains("CHANGED") && e.contains("line 2"), "{e}");

    // A known_hosts file without this host: unknown.
    let kh = d.path().join("known_hosts_empty");
    std::fs::write(&kh, "[10.0.0.1]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKjnAJH+ZqKeAh9PfrH9Zg2qXb3vChxg4uGq6qP3Jqx7\n").unwrap();
    let e = refused(&format!("known_hosts = \"{}\"\n{auth}", kh.display())).await;
    assert!(e.contains("unknown host"), "{e}");

    // The host is right but the key is not one the server knows.
    let stranger = format!(
        "known_hosts = \"{}\"\nauth = {{ type = \"key\", username = \"{}\", private_key = \"${{file:{}}}\" }}",
        sshd.known_hosts.display(),
        sshd.user,
        other_key.display()
    );
    let e = refused(&stranger).await;
    assert!(e.contains("login as") && e.contains("refused"), "{e}");
    assert!(
        !e.contains("PRIVATE KEY"),
        "no key material in the message: {e}"
    );
}

#[tokio::test]
async fn the_month_s_payment_files_go_up_over_sftp_and_the_results_come_back() {
    let d = support::copy_config();
    let dir = d.path();
    let cfg = dir.to_str().unwrap();
    let mut sshd = Sshd::start(&dir.join("var/sshd")).expect("openssh-server");
    let bank_dir = dir.join("var/bank");
    std::fs::create_dir_all(&bank_dir).unwrap();
    let bank_dir = bank_dir.canonicalize().unwrap();
    let toml = std::fs::read_to_string(dir.join("connectors/bank.toml")).unwrap();
    let toml = toml.replace("kind = \"file\"", "kind = \"sftp\"").replace(
        "directory = \"var/bank\"",
        &format!(
            "directory = \"{}\"\nretry_schedule = [\"1s\", \"1s\", \"2s\", \"5s\", \"10s\"]\n{}",
            bank_dir.display(),
            sshd.connector_lines()
        ),
    );
    std::fs::write(dir.join("connectors/bank.toml"), toml).unwrap();
    let o = support::run(&["check", "--config", cfg]);
    assert!(o.status.success(), "{:?}", support::text(&o));

    let lines = support::payouts::ingest_sample(cfg);
    let paid: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["amount_fen"].as_i64() > Some(0))
        .collect();
    let mut hub = support::hub::run_logged(dir, &[]);
    let store = tongban::store::Store::open("sqlite://var/tongban.db", dir)
        .await
        .unwrap();
    support::payouts::recorded(&store, paid.len()).await;
    // The bank's server is down when the month's files are built: each
    // file waits, saying why; the running hub's dispatcher tries again on
    // the connector's schedule and delivers them once the server is back.
    sshd.stop();
    let o = support::run(&["payouts", "build", "--config", cfg, "--period", "2026-11"]);
    let (out, err) = support::text(&o);
    assert!(!o.status.success(), "{out}");
    let waiting = format!(
        "NOT DELIVERED YET (connect: the target could not be reached: sftp://127.0.0.1:{}: cannot connect: Connection refused",
        sshd.port
    );
    assert_eq!(out.matches(&waiting).count(), 4, "{out}{err}");
    assert!(
        names(&bank_dir).iter().all(|n| n != "out"),
        "nothing reached the bank"
    );
    sshd.restart().unwrap();
    let target = "bank.payment_instructions/files";
    support::eventually(
        Duration::from_secs(60),
        "the files delivered after the outage",
        || async {
            store
                .messages(target, tongban::store::status::DELIVERED, 100)
                .await
                .unwrap()
                .len()
                == 4
        },
    )
    .await;
    for m in store
        .messages(target, tongban::store::status::DELIVERED, 100)
        .await
        .unwrap()
    {
        let attempts = store.attempts(m.id).await.unwrap();
        assert!(attempts.len() >= 2, "{attempts:?}");
        assert_eq!(attempts[0].error_class.as_deref(), Some("connect"));
        let last = attempts.last().unwrap();
        assert!(
            last.excerpt
                .as_deref()
                .unwrap_or("")
                .starts_with("uploaded to sftp://127.0.0.1:"),
            "{last:?}"
        );
    }

    // Each file is on the server whole with its checksum file; nothing
    // else is left there.
    let outdir = bank_dir.join("out");
    let files = names(&outdir);
    assert_eq!(files.len(), 8, "{files:?}");
    for f in files.iter().filter(|f| !f.ends_with(".sha256")) {
        let bytes = std::fs::read(outdir.join(f)).unwrap();
        assert_eq!(
            std::fs::read_to_string(outdir.join(format!("{f}.sha256"))).unwrap(),
            tongban::connectors::file::checksum_line(f, &bytes)
        );
        let id = f.trim_end_matches(".pain001.xml");
        assert_eq!(
            store.written(id).await.unwrap(),
            Some(tongban::connectors::file::sha256_hex(&bytes))
        );
    }

    // The bank's back office answers in the directory the server serves;
    // the running hub picks the answers up over SFTP and reconciles them.
    let bank = tongban::sim::bank::Bank::new(&bank_dir);
    let closed = "6228480012345678903";
    support::payouts::open_accounts(&bank, &lines, closed);
    assert_eq!(bank.poll_once().unwrap(), 4);
    let results = support::payouts::all_results(&store, paid.len()).await;
    let n_closed = paid
        .iter()
        .filter(|v| v["bank_account_no"] == closed)
        .count() as i64;
    assert_eq!(support::payouts::tally(&results, "REJECTED").0, n_closed);
    assert_eq!(
        support::payouts::tally(&results, "ACCEPTED").0,
        paid.len() as i64 - n_closed
    );
    // Moved aside on the server once stored, with their checksum files.
    let indir = bank_dir.join("in");
    support::eventually(
        Duration::from_secs(20),
        "answers moved to done/",
        || async {
            names(&indir).iter().all(|n| n == "done") && names(&indir.join("done")).len() == 8
        },
    )
    .await;
    assert!(bank.paid_twice().is_empty());

    // A result file that does not match its checksum file goes to
    // failed/ on the server with the reason beside it; nothing of it is
    // stored.
    let bad = "TB-BAD.pain002.xml";
    std::fs::write(indir.join(bad), b"<Document/>").unwrap();
    std::fs::write(
        indir.join(format!("{bad}.sha256")),
        format!("{}  {bad}\n", "0".repeat(64)),
    )
    .unwrap();
    let reason = indir.join("failed").join(format!("{bad}.reason"));
    // The reason first, then the file, then its checksum file.
    let moved = indir.join("failed").join(format!("{bad}.sha256"));
    support::eventually(Duration::from_secs(20), "the bad file refused", || async {
        moved.exists()
    })
    .await;
    assert!(std::fs::read_to_string(&reason)
        .unwrap()
        .contains("incomplete or corrupted"));
    assert!(indir.join("failed").join(bad).exists());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

/// `tongban demo --bank-sftp`: both provinces' banks over SFTP; every
/// invariant holds (nobody paid twice, each month paid what the rules
/// give), every result file picked up over SFTP and moved aside there.
#[tokio::test]
async fn the_demo_runs_the_bank_leg_over_sftp() {
    let d = tempfile::tempdir().unwrap();
    let work = d.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        support::tongban()
            .args([
                "demo",
                "--people",
                "300",
                "--months",
                "1",
                "--timeout",
                "180s",
            ])
            .args(["--bank-sftp", "--workdir"])
            .arg(&work)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = support::text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("bank over SFTP"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["channels"]["bank"], "sftp");
    for (name, ok) in report["invariants"].as_object().unwrap() {
        assert_eq!(ok, true, "invariant {name}: {stdout}");
    }
    assert!(
        report["bank"]["paid"].as_u64().unwrap() > 100,
        "{}",
        report["bank"]
    );
    for prov in [d.path().to_path_buf(), d.path().join("shandong")] {
        let connector = std::fs::read_to_string(prov.join("connectors/bank.toml")).unwrap();
        assert!(connector.contains("kind = \"sftp\""), "{connector}");
        let indir = prov.join("var/bank/in");
        let answers = names(&indir.join("done"))
            .into_iter()
            .filter(|n| n.ends_with(".pain002.xml"))
            .count();
        assert!(
            answers >= 2,
            "{}: {answers} result files read over SFTP",
            prov.display()
        );
        assert_eq!(
            names(&indir),
            ["done"],
            "{}: nothing left unread",
            prov.display()
        );
        let log = std::fs::read_to_string(prov.join("var/sshd/sshd.log")).unwrap();
        assert!(log.contains("Accepted publickey"), "{log}");
    }
}

/// `tongban run` killed with SIGKILL three times while it reads 50 files
/// of records from an SFTP directory and delivers them, then left to
/// finish: every record stored and delivered once (by its id), each key's
/// records in order across the files, every file moved to `done/` on the
/// server, nothing left unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_reading_over_sftp_loses_nothing_and_stores_nothing_twice() {
    use support::receiver;
    const KEYS: usize = 200;
    const PER_KEY: usize = 50;
    let (d, sshd) = server();
    let (rx, url) = receiver::start(false, receiver::ACCEPT).await;
    let dir = d.path().join("hub");
    support::hub::config(&dir, "sqlite://outbox.db", &url, KEYS, PER_KEY);
    let remote = d.path().join("remote");
    std::fs::create_dir_all(remote.join("in")).unwrap();
    let remote = remote.canonicalize().unwrap();
    support::hub::write(
        &dir,
        "connectors/src.toml",
        &format!(
            "kind = \"sftp\"\ndirectory = \"{}\"\n{}[operations.events]\ndirection = \"source\"\nschema = \"Ev\"\nid_field = \"id\"\nfile_pattern = \"*.jsonl\"\npoll_interval = \"50ms\"\n",
            remote.display(),
            sshd.connector_lines()
        ),
    );
    // One file per sequence number, each with every key: a key's records
    // are in order across the files' names.
    let input = std::fs::read_to_string(dir.join("input.jsonl")).unwrap();
    let lines: Vec<&str> = input.lines().collect();
    for (i, chunk) in lines.chunks(KEYS).enumerate() {
        let body = chunk.join("\n") + "\n";
        tongban::connectors::file::write_with_checksum(
            &remote.join("in"),
            &format!("part-{i:04}.jsonl"),
            body.as_bytes(),
        )
        .unwrap();
    }
    let mut rng = tongban::synth::Rng::new(tongban::store::now_ms() as u64);
    for _ in 0..3 {
        let mut child = support::hub::hub(&dir);
        tokio::time::sleep(Duration::from_millis(400 + rng.below(800))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let done_during = names(&remote.join("in/done")).len();
    let mut child = support::hub::hub(&dir);
    support::eventually(
        Duration::from_secs(120),
        "every record delivered",
        || async { rx.distinct() >= KEYS * PER_KEY },
    )
    .await;
    let left = || names(&remote.join("in"));
    for _ in 0..300 {
        if left() == ["done"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left(), ["done"], "every file moved aside");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    eprintln!("{done_during} of 50 files done before the last start");
    assert_eq!(
        names(&remote.join("in/done")).len(),
        100,
        "50 files and their checksum files"
    );

    let store = tongban::store::Store::open("sqlite://outbox.db", &dir)
        .await
        .unwrap();
    let delivered = store
        .counts()
        .await
        .unwrap()
        .messages("rx.deliver", tongban::store::status::DELIVERED);
    assert_eq!(
        delivered,
        (KEYS * PER_KEY) as i64,
        "each record stored once, one message each"
    );
    let accepted = rx.accepted.lock().unwrap().clone();
    let mut per_key: std::collections::HashMap<String, Vec<u64>> = Default::default();
    let mut seen = std::collections::HashSet::new();
    for (idem, body) in &accepted {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        if seen.insert(idem.clone()) {
            per_key
                .entry(v["key"].as_str().unwrap().to_string())
                .or_default()
                .push(v["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seen.len(), KEYS * PER_KEY);
    for (k, seqs) in &per_key {
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "key {k} out of order: {seqs:?}"
        );
    }
}
