//! A small hub for the operations tests: one file source of people (valid
//! ID numbers and Chinese names), one HTTP target, and a receiver that
//! refuses every record (422, naming the person) until told otherwise.

use axum::{extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Rx {
    pub refuse: AtomicBool,
    pub accepted: Mutex<Vec<(String, String)>>,
}

async fn rx(State(r): State<Arc<Rx>>, h: HeaderMap, body: String) -> (StatusCode, String) {
    if r.refuse.load(Ordering::SeqCst) {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{{\"error\":\"unknown person {}\"}}",
                v["holder_id"].as_str().unwrap_or("")
            ),
        );
    }
    let key = h
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    r.accepted.lock().unwrap().push((key, body));
    (StatusCode::OK, "{}".into())
}

pub fn people() -> Vec<tongban::synth::Person> {
    let mut rng = tongban::synth::Rng::new(7);
    (0..3).map(|_| tongban::synth::person(&mut rng)).collect()
}

pub fn config(dir: &std::path::Path, admin: &str, rx_url: &str) {
    let w = super::hub::write;
    w(dir, "tongban.toml", &format!(
        "[store]\nurl = \"sqlite://var/tongban.db\"\n[admin]\nlisten = \"{admin}\"\n[dispatch]\nretry_schedule = [\"100ms\"]\nlease = \"3s\"\n"
    ));
    w(
        dir,
        "schemas/Person.avsc",
        r#"{"type":"record","name":"Person","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"holder_id","type":"string"},{"name":"name","type":"string"},{"name":"seq","type":"long"}]}"#,
    );
    w(
        dir,
        "schemas/Out.avsc",
        r#"{"type":"record","name":"Out","namespace":"t","fields":[{"name":"holder_id","type":"string"},{"name":"name","type":"string"},{"name":"seq","type":"long"}]}"#,
    );
    w(dir, "connectors/src.toml", "kind = \"file\"\ndirectory = \"in\"\n[operations.people]\ndirection = \"source\"\nschema = \"Person\"\nid_field = \"id\"\nfile_pattern = \"*.jsonl\"\n");
    w(dir, "connectors/rx.toml", &format!(
        "kind = \"http\"\nbase_url = \"{rx_url}\"\ntimeout = \"2s\"\n[operations.deliver]\ndirection = \"sink\"\nschema = \"Out\"\nmethod = \"POST\"\npath = \"/deliver\"\n"
    ));
    w(dir, "mappings/people_to_rx.toml", "from = \"src.people\"\nto = \"rx.deliver\"\nas = \"p\"\nkey = \"p.holder_id\"\n[fields]\nholder_id = \"p.holder_id\"\nname = \"p.name\"\nseq = \"p.seq\"\n");
    let mut input = String::new();
    for (i, p) in people().iter().enumerate() {
        input.push_str(&format!(
            "{{\"id\":\"P{i}\",\"holder_id\":\"{}\",\"name\":\"{}\",\"seq\":{i}}}\n",
            p.id, p.name
        ));
    }
    w(dir, "input.jsonl", &input);
}

pub fn cli(dir: &std::path::Path, args: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", dir.to_str().unwrap()]);
    let o = super::run(&all);
    let (out, err) = super::text(&o);
    assert!(o.status.success(), "tongban {all:?}: {out}{err}");
    out
}

/// Starts the receiver (refusing at first if `refuse`); its state and URL.
pub async fn receiver(refuse: bool) -> (Arc<Rx>, String) {
    let state = Arc::new(Rx::default());
    state.refuse.store(refuse, Ordering::SeqCst);
    let app = Router::new()
        .route("/deliver", post(rx))
        .with_state(state.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (state, url)
}
