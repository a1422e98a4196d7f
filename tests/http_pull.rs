//! HTTP pull by cursor inside `tongban run`, against a paged server on
//! 127.0.0.1 that wants a bearer token: every record is stored once and
//! delivered, the cursor moves page by page, an answer that is not JSON and
//! a 503 are survived (asked again later), and a hub SIGKILLed mid-pull
//! starts again from its stored cursor without storing anything twice.

mod support;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::hub::write;
use support::receiver;

const TOTAL: u64 = 3_000;
const PAGE: u64 = 100;

#[derive(Default)]
struct Feed {
    requests: AtomicU64,
    cursors: Mutex<Vec<Option<u64>>>,
}

async fn events(
    State(f): State<Arc<Feed>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let n = f.requests.fetch_add(1, Ordering::SeqCst);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer pull-token") {
        return (StatusCode::UNAUTHORIZED, "no").into_response();
    }
    let after: Option<u64> = q.get("after").and_then(|a| a.parse().ok());
    f.cursors.lock().unwrap().push(after);
    match n {
        3 => return (StatusCode::OK, "<html>gateway error page</html>").into_response(),
        5 => return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response(),
        _ => {}
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let from = after.unwrap_or(0);
    let to = (from + PAGE).min(TOTAL);
    let items: Vec<serde_json::Value> = (from..to)
        .map(|i| serde_json::json!({"id": format!("EV-{i}"), "key": format!("K{}", i % 50), "seq": i}))
        .collect();
    axum::Json(serde_json::json!({"events": items, "next": to})).into_response()
}

async fn start_feed() -> (Arc<Feed>, String) {
    let f = Arc::new(Feed::default());
    let app = Router::new()
        .route("/events", get(events))
        .with_state(f.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (f, url)
}

fn config(dir: &Path, feed_url: &str, receiver_url: &str) {
    let base = receiver_url.trim_end_matches("/deliver");
    write(dir, "tongban.toml", "[store]\nurl = \"sqlite://var/t.db\"\n[dispatch]\nretry_schedule = [\"100ms\", \"200ms\"]\nlease = \"3s\"\n");
    write(
        dir,
        "schemas/Ev.avsc",
        r#"{"type":"record","name":"Ev","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"key","type":"string"},{"name":"seq","type":"long"}]}"#,
    );
    write(dir, "connectors/cert.toml", &format!(
        "kind = \"http\"\nbase_url = \"{feed_url}\"\ntimeout = \"2s\"\n[auth]\ntype = \"bearer\"\ntoken = \"${{env:TEST_PULL_TOKEN}}\"\n[operations.events]\ndirection = \"source\"\nschema = \"Ev\"\nid_field = \"id\"\nmethod = \"GET\"\npath = \"/events\"\npoll_interval = \"100ms\"\ncursor_param = \"after\"\nitems_field = \"events\"\nnext_cursor_field = \"next\"\n"
    ));
    write(dir, "connectors/rx.toml", &format!(
        "kind = \"http\"\nbase_url = \"{base}\"\ntimeout = \"2s\"\nconcurrency = 32\n[operations.deliver]\ndirection = \"sink\"\nschema = \"Ev\"\nmethod = \"POST\"\npath = \"/deliver\"\n"
    ));
    write(dir, "mappings/events.toml", "from = \"cert.events\"\nto = \"rx.deliver\"\nas = \"e\"\nkey = \"e.key\"\n[fields]\nid = \"e.id\"\nkey = \"e.key\"\nseq = \"e.seq\"\n");
}

fn hub(dir: &Path) -> Child {
    support::hub::run_logged(dir, &[("TEST_PULL_TOKEN", "pull-token")])
}

#[tokio::test]
async fn pulls_every_page_once_across_bad_answers_and_a_sigkill() {
    let (feed, feed_url) = start_feed().await;
    let (rx, rx_url) = receiver::start(false, receiver::ACCEPT).await;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    config(dir, &feed_url, &rx_url);

    let mut child = hub(dir);
    support::eventually(Duration::from_secs(30), "ten pages asked", || async {
        feed.requests.load(Ordering::SeqCst) >= 10
    })
    .await;
    child.kill().unwrap(); // SIGKILL mid-pull
    child.wait().unwrap();
    let asked_before = feed.requests.load(Ordering::SeqCst);
    assert!(
        asked_before < TOTAL / PAGE,
        "the kill came after the last page"
    );

    let mut child = hub(dir);
    support::eventually(
        Duration::from_secs(120),
        "every record delivered",
        || async { rx.distinct() >= TOTAL as usize },
    )
    .await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    let store = tongban::store::Store::open("sqlite://var/t.db", dir)
        .await
        .unwrap();
    assert_eq!(
        store.inbox_len().await.unwrap(),
        TOTAL as i64,
        "each record stored once"
    );
    assert_eq!(
        store.cursor("cert.events").await.unwrap().as_deref(),
        Some(TOTAL.to_string().as_str())
    );
    // The cursor only moved forward, and after the restart the hub went on
    // from a stored cursor, not from the beginning.
    let cursors = feed.cursors.lock().unwrap().clone();
    assert_eq!(cursors[0], None, "the first poll has no cursor");
    let after_restart = &cursors[asked_before as usize..];
    assert!(
        after_restart[0].is_some(),
        "restarted from its stored cursor: {cursors:?}"
    );
    // The garbage answer and the 503 were asked again: no page was skipped.
    assert_eq!(rx.distinct(), TOTAL as usize);
    let log = std::fs::read_to_string(dir.join("hub.log")).unwrap();
    assert!(
        log.contains("not JSON"),
        "the bad answer is logged with its reason"
    );
    assert!(log.contains("503"), "the 503 is logged");
}
