//! The webhook endpoint of `tongban run` (`POST /ingest/<connector>/<operation>`):
//! a bad signature or a stale timestamp is refused with 401 and nothing is
//! stored; a replayed nonce gets 409; an oversized body 413; an unreadable
//! record 422 (and is kept in the quarantine); an accepted record (202) is
//! in the inbox and delivered downstream, even when the hub is SIGKILLed
//! right after answering 202.

mod support;

use std::path::Path;
use std::process::Child;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::hub::write;
use support::receiver;
use tongban::config::connector::MacAlgorithm;
use tongban::connectors::http::sign::Signer;

const SECRET: &str = "hook-secret-of-the-platform";

fn config(dir: &Path, listen: &str, receiver_url: &str) {
    config_on(dir, "sqlite://var/t.db", listen, receiver_url);
}

/// The hub's configuration on the store at `store`, its admin API on a
/// free port (so that two hubs may run side by side).
fn config_on(dir: &Path, store: &str, listen: &str, receiver_url: &str) {
    let base = receiver_url.trim_end_matches("/deliver");
    let admin = support::free_port();
    write(dir, "tongban.toml", &format!(
        "[store]\nurl = \"{store}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[webhooks]\nlisten = \"{listen}\"\nmax_body_bytes = 4096\nwindow = \"5m\"\n[dispatch]\nretry_schedule = [\"100ms\", \"200ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\"]\nlease = \"3s\"\n"
    ));
    write(
        dir,
        "schemas/Form.avsc",
        r#"{"type":"record","name":"Form","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"key","type":"string"},{"name":"seq","type":"long"}]}"#,
    );
    write(dir, "connectors/platform.toml", "kind = \"http\"\nbase_url = \"http://127.0.0.1:9\"\n[auth]\ntype = \"hmac\"\napp_key = \"platform\"\nsecret = \"${env:TEST_HOOK_SECRET}\"\nalgorithm = \"hmac-sm3\"\n[operations.forms]\ndirection = \"source\"\nschema = \"Form\"\nid_field = \"id\"\nwebhook = true\n");
    write(dir, "connectors/rx.toml", &format!(
        "kind = \"http\"\nbase_url = \"{base}\"\ntimeout = \"2s\"\n[operations.deliver]\ndirection = \"sink\"\nschema = \"Form\"\nmethod = \"POST\"\npath = \"/deliver\"\n"
    ));
    write(dir, "mappings/forms.toml", "from = \"platform.forms\"\nto = \"rx.deliver\"\nas = \"f\"\nkey = \"f.key\"\n[fields]\nid = \"f.id\"\nkey = \"f.key\"\nseq = \"f.seq\"\n");
}

fn hub(dir: &Path) -> Child {
    support::hub::run_logged(dir, &[("TEST_HOOK_SECRET", SECRET)])
}

const PATH: &str = "/ingest/platform/forms";

/// Posts a body signed with `secret` at time `ts`; returns the status.
async fn post(url: &str, body: &str, secret: &str, ts: i64, nonce: Option<&str>) -> (u16, String) {
    let signer = Signer::new("platform", secret.as_bytes(), MacAlgorithm::HmacSm3);
    let mut headers = signer.sign("POST", PATH, body.as_bytes(), ts);
    if let Some(n) = nonce {
        // The same nonce as an earlier request: sign again with it.
        headers[2].1 = n.to_string();
        headers[3].1 = signer.signature("POST", PATH, &headers[1].1, n, body.as_bytes());
    }
    let mut req = reqwest::Client::new()
        .post(format!("{url}{PATH}"))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// The bodies the receiver accepted, in order.
fn bodies(rx: &receiver::Receiver) -> Vec<String> {
    let accepted = rx.accepted.lock().unwrap();
    accepted.iter().map(|(_, b)| b.clone()).collect()
}

fn form(id: &str, key: &str, seq: i64) -> String {
    format!("{{\"id\":\"{id}\",\"key\":\"{key}\",\"seq\":{seq}}}")
}

#[tokio::test]
async fn webhooks_refuse_bad_requests_and_deliver_accepted_records_even_after_sigkill() {
    let (rx, rx_url) = receiver::start(false, receiver::UNAVAILABLE).await;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let listen = format!("127.0.0.1:{}", support::free_port());
    config(dir, &listen, &rx_url);
    let url = format!("http://{listen}");
    let mut child = hub(dir);
    support::listening(&listen, Duration::from_secs(30)).await;
    let now = tongban::store::now_ms();

    // Refused: wrong secret, stale timestamp, too large, unknown operation.
    let (s, body) = post(&url, &form("F-bad", "K1", 0), "wrong secret", now, None).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("signature does not match"), "{body}");
    let (s, body) = post(
        &url,
        &form("F-old", "K1", 0),
        SECRET,
        now - 10 * 60_000,
        None,
    )
    .await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("600 s away"), "{body}");
    let big = form(&"x".repeat(5000), "K1", 0);
    let (s, _) = post(&url, &big, SECRET, now, None).await;
    assert_eq!(s, 413);
    let r = reqwest::Client::new()
        .post(format!("{url}/ingest/platform/nothing"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // Accepted once; the same request replayed gets 409.
    let signer = Signer::new("platform", SECRET.as_bytes(), MacAlgorithm::HmacSm3);
    let first = form("F-1", "K1", 1);
    let h = signer.sign("POST", PATH, first.as_bytes(), now);
    let send = |h: [(String, String); 4]| {
        let mut req = reqwest::Client::new()
            .post(format!("{url}{PATH}"))
            .body(first.clone());
        for (k, v) in h {
            req = req.header(k, v);
        }
        req.send()
    };
    let r = send(h.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = send(h.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 409, "a replayed nonce");

    // An unreadable record: 422 with the reason, kept in the quarantine.
    let (s, body) = post(
        &url,
        "{\"id\":\"F-2\",\"key\":\"K2\",\"seq\":\"two\"}",
        SECRET,
        now,
        None,
    )
    .await;
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("seq"), "{body}");

    // Accepted, then the hub is killed at once: the record is durable.
    let (s, body) = post(&url, &form("F-3", "K1", 3), SECRET, now, None).await;
    assert_eq!(s, 202, "{body}");
    child.kill().unwrap(); // SIGKILL right after the 202
    child.wait().unwrap();
    assert!(
        rx.accepted.lock().unwrap().is_empty(),
        "the receiver was down"
    );

    // The receiver recovers and the hub starts again: both accepted records
    // are delivered, in order, once each.
    rx.mode.store(receiver::ACCEPT, Ordering::SeqCst);
    let mut child = hub(dir);
    support::listening(&listen, Duration::from_secs(30)).await;
    // The nonces outlive the hub: the first request replayed after the
    // restart is still refused.
    let r = send(h).await.unwrap();
    assert_eq!(r.status().as_u16(), 409, "a nonce replayed after a restart");
    support::eventually(Duration::from_secs(60), "2 deliveries", || async {
        rx.accepted.lock().unwrap().len() >= 2
    })
    .await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let got = bodies(&rx);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].contains("F-1") && got[1].contains("F-3"), "{got:?}");

    // Nothing refused was stored: the inbox holds F-1, F-2 (quarantined), F-3.
    let store = tongban::store::Store::open("sqlite://var/t.db", dir)
        .await
        .unwrap();
    assert_eq!(store.inbox_len().await.unwrap(), 3);
    let q = store.quarantine("platform.forms").await.unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
}

/// Two hubs on one PostgreSQL store: a request accepted by one and replayed
/// to the other is refused there (the nonces are in the store, not in a
/// hub's memory), and the record is delivered once.
#[tokio::test]
async fn a_request_replayed_to_another_hub_on_the_same_postgresql_is_refused() {
    let (rx, rx_url) = receiver::start(false, receiver::ACCEPT).await;
    let url = support::pg::database().await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let listen_a = format!("127.0.0.1:{}", support::free_port());
    let listen_b = format!("127.0.0.1:{}", support::free_port());
    config_on(a.path(), &url, &listen_a, &rx_url);
    config_on(b.path(), &url, &listen_b, &rx_url);
    let mut hubs = [hub(a.path()), hub(b.path())];
    support::listening(&listen_a, Duration::from_secs(30)).await;
    support::listening(&listen_b, Duration::from_secs(30)).await;

    let signer = Signer::new("platform", SECRET.as_bytes(), MacAlgorithm::HmacSm3);
    let body = form("F-10", "K10", 1);
    let headers = signer.sign("POST", PATH, body.as_bytes(), tongban::store::now_ms());
    let send = |listen: &str| {
        let mut req = reqwest::Client::new()
            .post(format!("http://{listen}{PATH}"))
            .body(body.clone());
        for (k, v) in headers.clone() {
            req = req.header(k, v);
        }
        req.send()
    };
    let r = send(&listen_a).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = send(&listen_b).await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(status, 409, "replayed to the second hub: {text}");
    assert!(text.contains("replayed"), "{text}");
    // A new request (a fresh nonce) to the second hub is taken.
    let (s, text) = post(
        &format!("http://{listen_b}"),
        &form("F-11", "K11", 1),
        SECRET,
        tongban::store::now_ms(),
        None,
    )
    .await;
    assert_eq!(s, 202, "{text}");
    support::eventually(Duration::from_secs(60), "2 deliveries", || async {
        rx.accepted.lock().unwrap().len() >= 2
    })
    .await;
    for h in &mut hubs {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(h.id() as i32, libc::SIGTERM) };
        assert!(h.wait().unwrap().success());
    }
    let got = bodies(&rx);
    assert_eq!(got.len(), 2, "each record delivered once: {got:?}");
    assert_eq!(got.iter().filter(|b| b.contains("F-10")).count(), 1);
}
