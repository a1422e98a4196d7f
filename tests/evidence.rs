//! The exchange log end to end, on both stores: records ingested, delivered
//! by a running hub and an operator's actions are chained and sealed;
//! `tongban log verify` proves the store's log and an export intact, and
//! names the first entry that is not after someone with write access to
//! the store (or to the export) changed history: an entry's content
//! changed, the chain rewritten after it, an entry removed, a seal forged.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;
use support::hub::write;
use support::receiver;
use tongban::store::evidence::{entry_hash, hex};

fn config(dir: &Path, store: &str, receiver_url: &str) {
    let base = receiver_url.trim_end_matches("/deliver");
    let admin = support::free_port();
    write(dir, "tongban.toml", &format!(
        "[store]\nurl = \"{store}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[evidence]\nsigning_key = \"${{file:keys/evidence.pem}}\"\nseal_every = \"200ms\"\nchain_every = \"100ms\"\n[dispatch]\nretry_schedule = [\"100ms\"]\nlease = \"3s\"\n"
    ));
    write(
        dir,
        "schemas/Form.avsc",
        r#"{"type":"record","name":"Form","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"key","type":"string"}]}"#,
    );
    write(dir, "connectors/files.toml", "kind = \"file\"\ndirectory = \"in\"\n[operations.forms]\ndirection = \"source\"\nschema = \"Form\"\nid_field = \"id\"\nfile_pattern = \"*.jsonl\"\n");
    write(dir, "connectors/rx.toml", &format!(
        "kind = \"http\"\nbase_url = \"{base}\"\ntimeout = \"2s\"\n[operations.deliver]\ndirection = \"sink\"\nschema = \"Form\"\nmethod = \"POST\"\npath = \"/deliver\"\n"
    ));
    write(dir, "mappings/forms.toml", "from = \"files.forms\"\nto = \"rx.deliver\"\nas = \"f\"\nkey = \"f.key\"\n[fields]\nid = \"f.id\"\nkey = \"f.key\"\n");
}

fn tongban(dir: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", dir.to_str().unwrap()]);
    support::tongban().args(&all).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn verify(dir: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["log", "verify"];
    args.extend(extra);
    let o = tongban(dir, &args);
    (o.status.code().unwrap_or(-1), text(&o))
}

/// Facts of every kind through the real paths: `tongban ingest`, a hub
/// delivering to a receiver and chaining, `tongban pause`/`resume`.
async fn make_history(dir: &Path) {
    let o = support::tongban()
        .args(["log", "keygen", "--algorithm", "sm2", "--out"])
        .arg(dir.join("keys/evidence.pem"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("Made a signing key (sm2)"),
        "{}",
        text(&o)
    );
    write(dir, "forms.jsonl", "{\"id\":\"F-1\",\"key\":\"110105199003070017\"}\n{\"id\":\"F-2\",\"key\":\"K2\"}\n{\"id\":\"F-3\",\"key\":\"K3\"}\n");
    let o = tongban(
        dir,
        &[
            "ingest",
            "--source",
            "files.forms",
            dir.join("forms.jsonl").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    for cmd in ["pause", "resume"] {
        let o = tongban(
            dir,
            &[
                cmd,
                "rx.deliver",
                "--reason",
                "bank window",
                "--actor",
                "ops-1",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
}

async fn run_hub_until_delivered(dir: &Path, rx: &receiver::Receiver) {
    let mut hub = support::hub::run_logged(dir, &[]);
    support::eventually(Duration::from_secs(60), "3 deliveries", || async {
        rx.accepted.lock().unwrap().len() >= 3
    })
    .await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());
}

/// Rewrites an export's entry `pos` with `body`, and (if `rechain`) every
/// hash from it on, as one who knows the format but not the key would.
fn tamper_export(export: &str, pos: i64, body: &str, rechain: bool) -> String {
    let mut prev: Option<[u8; 32]> = None;
    let mut out = Vec::new();
    for line in export.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let touched = v
            .get("entry")
            .and_then(|e| e["pos"].as_i64())
            .is_some_and(|p| p == pos || (rechain && p > pos));
        if !touched {
            // Kept byte for byte (a value read and written again would
            // order its keys anew).
            if let Some(h) = v.get("entry").and_then(|e| e["hash"].as_str()) {
                let h = tongban::store::evidence::unhex(h).unwrap();
                prev = Some(h.try_into().unwrap());
            }
            out.push(line.to_string());
            continue;
        }
        if let Some(e) = v.get_mut("entry") {
            let p = e["pos"].as_i64().unwrap();
            if p == pos {
                e["body"] = serde_json::from_str(body).unwrap();
            }
            if rechain && p >= pos {
                let prev_h = prev.unwrap_or([0; 32]);
                e["prev"] = hex(&prev_h).into();
                let h = entry_hash(
                    &prev_h,
                    p,
                    e["at"].as_i64().unwrap(),
                    e["kind"].as_str().unwrap(),
                    &serde_json::to_string(&e["body"]).unwrap(),
                );
                e["hash"] = hex(&h).into();
            }
            let h = tongban::store::evidence::unhex(e["hash"].as_str().unwrap()).unwrap();
            prev = Some(h.try_into().unwrap());
        }
        out.push(serde_json::to_string(&v).unwrap());
    }
    out.join("\n") + "\n"
}

async fn the_log_proves_history_and_names_each_change(
    dir: &Path,
    rx: &receiver::Receiver,
    tamper: impl AsyncFn(&str),
) {
    make_history(dir).await;
    run_hub_until_delivered(dir, rx).await;

    // The store's log: intact, every entry sealed (the hub seals on stop).
    let (code, out) = verify(dir, &["--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let last = v["last"].as_i64().unwrap();
    assert!(last >= 4, "received, 2 operator actions, delivered: {v}");
    assert_eq!(v["sealed_to"], last, "{v}");
    assert!(v["seals_checked"].as_i64().unwrap() >= 1, "{v}");
    assert_eq!(v["unchained"], 0, "{v}");
    let (code, human) = verify(dir, &[]);
    assert_eq!(code, 0);
    assert!(
        human.starts_with(&format!("Intact: entries 1 to {last}")),
        "{human}"
    );
    assert!(human.contains("verified with sm2:"), "{human}");

    // An export verifies on its own with the public key, and holds no ID
    // number in the clear.
    let export_file = dir.join("export.jsonl");
    let o = tongban(
        dir,
        &["log", "export", "--out", export_file.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let export = std::fs::read_to_string(&export_file).unwrap();
    for kind in ["\"received\"", "\"delivered\"", "\"operator\""] {
        assert!(export.contains(kind), "{kind} in {export}");
    }
    assert!(!export.contains("110105199003070017"), "{export}");
    let key = dir.join("keys/evidence.pem.pub");
    let key = key.to_str().unwrap();
    let file_verify = |name: &str, content: &str| {
        let f = dir.join(name);
        std::fs::write(&f, content).unwrap();
        let o = support::tongban()
            .args(["log", "verify", "--file", f.to_str().unwrap(), "--key", key])
            .output()
            .unwrap();
        (o.status.code().unwrap(), text(&o))
    };
    let (code, out) = file_verify("copy.jsonl", &export);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("sealed up to entry {last}")), "{out}");

    // Changes to an export: an entry's content; the same with the chain
    // made again after it; an entry removed; a seal's signature.
    let (code, out) = file_verify(
        "changed.jsonl",
        &tamper_export(&export, 2, "{\"rows\":[]}", false),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("NOT INTACT at entry 2: its content does not match its hash"),
        "{out}"
    );
    let (code, out) = file_verify(
        "rechained.jsonl",
        &tamper_export(&export, 2, "{\"rows\":[]}", true),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("were rewritten"), "{out}");
    let removed: String = export
        .lines()
        .filter(|l| !l.starts_with("{\"entry\":{\"pos\":2,"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (code, out) = file_verify("removed.jsonl", &removed);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("NOT INTACT at entry 3: follows entry 1: entries 2 to 2 are missing"),
        "{out}"
    );
    let forged = export.replacen("\"signature\":\"", "\"signature\":\"00", 1);
    let (code, out) = file_verify("forged.jsonl", &forged);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the seal's signature does not verify"),
        "{out}"
    );

    // In the store: a chained entry cannot be changed as is (a trigger),
    // and one who removes the trigger to change it is found out.
    tamper("UPDATE evidence SET body = '{\"rows\":[]}' WHERE id = (SELECT id FROM evidence_chain WHERE pos = 2)").await;
    let (code, out) = verify(dir, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT INTACT at entry 2"), "{out}");
    assert!(out.contains("before it, entries 1 to 1 hold"), "{out}");
}

#[tokio::test]
async fn sqlite_log_proves_history_and_names_each_change() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let (rx, rx_url) = receiver::start(false, receiver::ACCEPT).await;
    config(&dir, "sqlite://var/t.db", &rx_url);
    let db = dir.join("var/t.db");
    the_log_proves_history_and_names_each_change(&dir, &rx, async |sql: &str| {
        let c = rusqlite::Connection::open(&db).unwrap();
        let refused = c.execute(sql, []).unwrap_err().to_string();
        assert!(refused.contains("append-only"), "{refused}");
        c.execute_batch("DROP TRIGGER evidence_no_update").unwrap();
        assert_eq!(c.execute(sql, []).unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn postgres_log_proves_history_and_names_each_change() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let url = support::pg::database().await;
    let (rx, rx_url) = receiver::start(false, receiver::ACCEPT).await;
    config(&dir, &url, &rx_url);
    let u = url.clone();
    the_log_proves_history_and_names_each_change(&dir, &rx, async move |sql: &str| {
        let (c, conn) = tokio_postgres::connect(&u, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let refused = c.execute(sql, &[]).await.unwrap_err();
        let refused = refused
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        assert!(refused.contains("append-only"), "{refused}");
        c.batch_execute("ALTER TABLE evidence DISABLE TRIGGER evidence_append_only")
            .await
            .unwrap();
        assert_eq!(c.execute(sql, &[]).await.unwrap(), 1);
    })
    .await;
}
