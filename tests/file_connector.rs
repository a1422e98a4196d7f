//! The file connector inside `tongban run`: files dropped into a directory
//! are read once complete (their checksum file written last), a bad record
//! is quarantined while the rest go on, a corrupt file goes to `failed/`
//! with its reason, a file being read when the hub is SIGKILLed is read
//! again at the next start without storing anything twice, and the file
//! sink writes each delivery atomically with a checksum file.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::time::Duration;
use support::hub::write;

fn config(dir: &Path) {
    write(
        dir,
        "tongban.toml",
        "[store]\nurl = \"sqlite://var/t.db\"\n[dispatch]\nretry_schedule = [\"100ms\", \"200ms\"]\nlease = \"3s\"\n",
    );
    write(
        dir,
        "schemas/Ev.avsc",
        r#"{"type":"record","name":"Ev","namespace":"t","fields":[{"name":"key","type":"string"},{"name":"seq","type":"long"}]}"#,
    );
    write(
        dir,
        "schemas/Out.avsc",
        r#"{"type":"record","name":"Out","namespace":"t","fields":[{"name":"key","type":"string"},{"name":"seq","type":"long"}]}"#,
    );
    write(
        dir,
        "connectors/drop.toml",
        "kind = \"file\"\ndirectory = \"exchange\"\n\
         [operations.events]\ndirection = \"source\"\nschema = \"Ev\"\nfile_pattern = \"*.jsonl\"\npoll_interval = \"50ms\"\n\
         [operations.out]\ndirection = \"sink\"\nschema = \"Out\"\nfile_pattern = \"*.jsonl\"\nbatch = 500\n",
    );
    write(
        dir,
        "mappings/ev_to_out.toml",
        "from = \"drop.events\"\nto = \"drop.out\"\nas = \"e\"\nkey = \"e.key\"\n[fields]\nkey = \"e.key\"\nseq = \"e.seq\"\n",
    );
}

fn hub(dir: &Path) -> Child {
    support::tongban()
        .args(["run", "--config", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("hub.log")).unwrap())
        .spawn()
        .unwrap()
}

fn records(n: usize, keys: usize, from: usize) -> String {
    (from..from + n)
        .map(|i| format!("{{\"key\":\"K{}\",\"seq\":{i}}}\n", i % keys))
        .collect()
}

/// Drops a file with its checksum file, the way a well-behaved writer does.
fn drop_file(dir: &Path, name: &str, contents: &str) {
    tongban::connectors::file::write_with_checksum(
        &dir.join("exchange/in"),
        name,
        contents.as_bytes(),
    )
    .unwrap();
}

/// Every line written by the file sink: (idempotency key, key, seq).
fn delivered(dir: &Path) -> Vec<(String, String, i64)> {
    let out = dir.join("exchange/out");
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    names.sort();
    let mut lines = Vec::new();
    for p in names {
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with('.') || name.ends_with(".sha256") {
            continue;
        }
        // A file is complete once its checksum file is there (written last).
        let Ok(sum) = std::fs::read_to_string(out.join(format!("{name}.sha256"))) else {
            continue;
        };
        let body = std::fs::read(&p).unwrap();
        assert_eq!(sum, tongban::connectors::file::checksum_line(&name, &body));
        for l in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            lines.push((
                v["idempotency_key"].as_str().unwrap().to_string(),
                v["record"]["key"].as_str().unwrap().to_string(),
                v["record"]["seq"].as_i64().unwrap(),
            ));
        }
    }
    lines
}

fn distinct(lines: &[(String, String, i64)]) -> usize {
    lines
        .iter()
        .map(|l| &l.0)
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Per key, the sequence numbers in delivery order never go backwards
/// except to repeat a message already delivered (a redelivery).
fn assert_key_order(lines: &[(String, String, i64)]) {
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (_, k, seq) in lines {
        let l = last.entry(k).or_insert(-1);
        if *seq < *l {
            // A repeat of an earlier message is a redelivery, not a reorder:
            // it must have been delivered before.
            assert!(
                lines.iter().any(|(_, k2, s2)| k2 == k && s2 == seq),
                "key {k}: {seq} after {l}"
            );
        }
        *l = (*l).max(*seq);
    }
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM must stop the hub cleanly: {status:?}"
    );
}

#[tokio::test]
async fn half_written_files_wait_bad_files_fail_bad_records_are_quarantined() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    config(dir);
    let inbox = dir.join("exchange/in");
    std::fs::create_dir_all(&inbox).unwrap();
    // a.jsonl is being written: half its records, no checksum file yet.
    let a = records(100, 10, 0);
    std::fs::write(inbox.join("a.jsonl"), &a[..a.len() / 2]).unwrap();
    // b.jsonl is complete, with one bad record among good ones.
    let mut b = records(50, 10, 1000);
    b.push_str("{\"key\":\"K1\",\"seq\":\"not a number\"}\n");
    b.push_str(&records(50, 10, 2000));
    drop_file(dir, "b.jsonl", &b);
    // c.jsonl's checksum file does not match its contents.
    std::fs::write(inbox.join("c.jsonl"), records(10, 10, 3000)).unwrap();
    std::fs::write(
        inbox.join("c.jsonl.sha256"),
        tongban::connectors::file::checksum_line("c.jsonl", b"something else"),
    )
    .unwrap();

    let child = hub(dir);
    // Files are read in name order in one poll: once b is done, a has been
    // looked at and must still be waiting.
    support::eventually(Duration::from_secs(30), "b.jsonl read", || async {
        inbox.join("done/b.jsonl").exists()
    })
    .await;
    assert!(
        inbox.join("a.jsonl").exists(),
        "a half-written file was picked up"
    );
    support::eventually(Duration::from_secs(10), "c.jsonl refused", || async {
        inbox.join("failed/c.jsonl.reason").exists()
    })
    .await;
    let reason = std::fs::read_to_string(inbox.join("failed/c.jsonl.reason")).unwrap();
    assert!(reason.contains("checksum"), "{reason}");
    assert!(inbox.join("failed/c.jsonl").exists());

    // The writer finishes a.jsonl and writes its checksum file last.
    std::fs::write(inbox.join("a.jsonl"), &a).unwrap();
    std::fs::write(
        inbox.join("a.jsonl.sha256"),
        tongban::connectors::file::checksum_line("a.jsonl", a.as_bytes()),
    )
    .unwrap();
    support::eventually(Duration::from_secs(30), "200 records delivered", || async {
        distinct(&delivered(dir)) >= 200
    })
    .await;
    stop(child);

    let lines = delivered(dir);
    assert_eq!(distinct(&lines), 200, "a's 100 and b's 100 good records");
    let seqs: std::collections::HashSet<i64> = lines.iter().map(|l| l.2).collect();
    assert!(
        seqs.contains(&0) && seqs.contains(&99) && seqs.contains(&1049) && seqs.contains(&2049)
    );
    assert!(
        !seqs.iter().any(|s| (3000..3010).contains(s)),
        "c.jsonl's records must not go on"
    );
    assert_key_order(&lines);

    let store = tongban::store::Store::open("sqlite://var/t.db", dir)
        .await
        .unwrap();
    let q = store.quarantine("drop.events").await.unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(
        q[0].reason.contains("seq"),
        "the reason names the field: {q:?}"
    );
    // The good and the bad records of a and b are in the inbox, once.
    assert_eq!(store.inbox_len().await.unwrap(), 201);
}

#[tokio::test]
async fn a_file_being_read_when_the_hub_is_killed_is_read_again_without_duplicates() {
    const N: usize = 60_000;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    config(dir);
    std::fs::create_dir_all(dir.join("exchange/in")).unwrap();
    drop_file(dir, "big.jsonl", &records(N, 500, 0));
    let work = dir.join("exchange/in/work/big.jsonl");

    let mut child = hub(dir);
    support::eventually(Duration::from_secs(30), "big.jsonl claimed", || async {
        work.exists()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    child.kill().unwrap(); // SIGKILL, mid-file
    child.wait().unwrap();
    assert!(
        work.exists(),
        "the file was read to the end before the kill; make it larger"
    );
    let store = tongban::store::Store::open("sqlite://var/t.db", dir)
        .await
        .unwrap();
    let before = store.inbox_len().await.unwrap();
    drop(store);
    eprintln!("{before} of {N} records stored before the kill");

    let child = hub(dir);
    support::eventually(
        Duration::from_secs(120),
        "all records delivered",
        || async { distinct(&delivered(dir)) >= N },
    )
    .await;
    stop(child);
    assert!(dir.join("exchange/in/done/big.jsonl").exists());
    let store = tongban::store::Store::open("sqlite://var/t.db", dir)
        .await
        .unwrap();
    assert_eq!(
        store.inbox_len().await.unwrap(),
        N as i64,
        "each record stored once"
    );
    let lines = delivered(dir);
    assert_eq!(distinct(&lines), N);
    assert_key_order(&lines);
}
