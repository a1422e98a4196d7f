//! A small hub configuration for process-level tests: one source operation
//! (`src.events`), one HTTP target (the test receiver), one feed.

use std::path::Path;
use std::process::{Child, Stdio};

pub fn write(dir: &Path, file: &str, text: &str) {
    let p = dir.join(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A small configuration: one source, one HTTP target (the receiver).
pub fn config(dir: &Path, store_url: &str, receiver_url: &str, keys: usize, per_key: usize) {
    let base = receiver_url.trim_end_matches("/deliver");
    write(dir, "tongban.toml", &format!(
        "[store]\nurl = \"{store_url}\"\n[dispatch]\nretry_schedule = [\"100ms\", \"200ms\", \"400ms\", \"800ms\", \"1s\", \"1s\", \"1s\"]\nlease = \"3s\"\n"
    ));
    write(
        dir,
        "schemas/Ev.avsc",
        r#"{"type":"record","name":"Ev","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"key","type":"string"},{"name":"seq","type":"long"}]}"#,
    );
    write(
        dir,
        "schemas/Out.avsc",
        r#"{"type":"record","name":"Out","namespace":"t","fields":[{"name":"key","type":"string"},{"name":"seq","type":"long"},{"name":"id","type":"string"}]}"#,
    );
    write(dir, "connectors/src.toml", "kind = \"file\"\ndirectory = \"in\"\n[operations.events]\ndirection = \"source\"\nschema = \"Ev\"\nid_field = \"id\"\nfile_pattern = \"*.jsonl\"\n");
    write(dir, "connectors/rx.toml", &format!(
        "kind = \"http\"\nbase_url = \"{base}\"\ntimeout = \"2s\"\nconcurrency = 64\n[operations.deliver]\ndirection = \"sink\"\nschema = \"Out\"\nmethod = \"POST\"\npath = \"/deliver\"\n"
    ));
    write(dir, "mappings/ev_to_rx.toml", "from = \"src.events\"\nto = \"rx.deliver\"\nas = \"e\"\nkey = \"e.key\"\n[fields]\nkey = \"e.key\"\nseq = \"e.seq\"\nid = \"e.id\"\n");
    let mut input = String::new();
    for seq in 0..per_key {
        for k in 0..keys {
            input.push_str(&format!(
                "{{\"id\":\"K{k}-{seq}\",\"key\":\"K{k}\",\"seq\":{seq}}}\n"
            ));
        }
    }
    write(dir, "input.jsonl", &input);
}

pub fn hub(dir: &Path) -> Child {
    super::tongban()
        .args(["run", "--config", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `tongban ingest` of the generated input; checks that all of it was stored.
pub fn ingest(dir: &Path, n: usize) {
    let o = super::tongban()
        .args([
            "ingest",
            "--config",
            dir.to_str().unwrap(),
            "--source",
            "src.events",
        ])
        .arg(dir.join("input.jsonl"))
        .output()
        .unwrap();
    let (out, err) = super::text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains(&format!(
            "stored {n} records (0 already stored), {n} messages, 0 quarantined"
        )),
        "{out}"
    );
}

/// `tongban run` on `dir` with these environment variables, its log
/// appended to `dir/hub.log` (kept across restarts, for assertions and for
/// reading after a failure).
pub fn run_logged(dir: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("hub.log"))
        .unwrap();
    super::tongban()
        .args(["run", "--config", dir.to_str().unwrap()])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}
