//! The web console in a real headless Chromium (Debian's chromium and
//! chromedriver; scripts/test.sh installs them): a viewer signs in and sees
//! the dead letters with personal data masked and no actions; an operator
//! signs in, replays a dead message with a reason, and sees it delivered.
//! Screenshots go to target/test-artifacts/.

mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::ops::{cli, config, people};

/// chromedriver on a free port, stopped when dropped.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Driver {
    let port = support::free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian packages chromium and chromium-driver; scripts/test.sh installs them)");
    Driver(child, port)
}

async fn browser(port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // chromedriver speaks plain HTTP on 127.0.0.1: no TLS needed.
        let http = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(http)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return c,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a Chromium session: {e}"),
        }
    }
}

/// Waits until the element's text satisfies `ok`; its text.
async fn text_until(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if ok(&t) {
                    return t;
                }
            }
        }
        assert!(std::time::Instant::now() < deadline, "waiting for {css}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(c: &Client, name: &str) {
    let dir = support::root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(dir.join(name), png).unwrap();
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(base).await.unwrap();
    c.execute("sessionStorage.clear()", vec![]).await.unwrap();
    c.goto(base).await.unwrap();
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("#signin"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_masked_data_and_an_operator_replays_a_dead_message() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (state, rx_url) = support::ops::receiver(true).await;
    let admin_addr = format!("127.0.0.1:{}", support::free_port());
    config(dir, &admin_addr, &rx_url);
    let token = |role: &str, name: &str| {
        cli(dir, &["token", "create", "--role", role, "--name", name])
            .trim()
            .to_string()
    };
    let viewer = token("viewer", "vera");
    let operator = token("operator", "otto");
    cli(
        dir,
        &[
            "ingest",
            "--source",
            "src.people",
            dir.join("input.jsonl").to_str().unwrap(),
        ],
    );
    let mut hub = support::hub::run_logged(dir, &[]);
    support::listening(&admin_addr, Duration::from_secs(30)).await;
    let store = tongban::store::Store::open("sqlite://var/tongban.db", dir)
        .await
        .unwrap();
    support::eventually(Duration::from_secs(30), "three dead letters", || async {
        store
            .counts()
            .await
            .unwrap()
            .messages("rx.deliver", tongban::store::status::DEAD)
            == 3
    })
    .await;

    let driver = chromedriver();
    let c = browser(driver.1).await;
    let base = format!("http://{admin_addr}/");

    // A viewer: the dashboard, the dead letters, one opened — masked, no actions.
    sign_in(&c, &base, &viewer).await;
    text_until(&c, "#who", |t| t.contains("vera (viewer)")).await;
    let targets = text_until(&c, "#targets tbody", |t| t.contains("rx.deliver")).await;
    assert!(targets.contains("rx.deliver"), "{targets}");
    let list = text_until(&c, "#messages tbody", |t| t.lines().count() == 3).await;
    for p in people() {
        assert!(!list.contains(&p.id), "{list}");
    }
    c.find(Locator::Css("#messages tbody tr"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let payload = text_until(&c, "#d-payload", |t| t.contains("holder_id")).await;
    let who = people()
        .into_iter()
        .find(|p| payload.contains(&tongban::domain::mask::id_number(&p.id)))
        .expect("a masked ID number");
    assert!(
        !payload.contains(&who.id) && !payload.contains(&who.name),
        "{payload}"
    );
    assert!(!c
        .find(Locator::Css("#replay"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());
    screenshot(&c, "console-viewer.png").await;

    // An operator: the receiver is fixed; replay with a reason.
    state.refuse.store(false, Ordering::SeqCst);
    sign_in(&c, &base, &operator).await;
    text_until(&c, "#who", |t| t.contains("otto (operator)")).await;
    text_until(&c, "#messages tbody", |t| t.lines().count() == 3).await;
    let first = c.find(Locator::Css("#messages tbody tr")).await.unwrap();
    let id: i64 = first
        .attr("data-id")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    first.click().await.unwrap();
    text_until(&c, "#d-status", |t| t == "dead").await;
    let replay = c.find(Locator::Css("#replay")).await.unwrap();
    assert!(replay.is_displayed().await.unwrap());
    replay.click().await.unwrap();
    c.find(Locator::Css("#reason-input"))
        .await
        .unwrap()
        .send_keys("receiver fixed, checked by phone")
        .await
        .unwrap();
    c.find(Locator::Css("#reason-ok"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    support::eventually(
        Duration::from_secs(30),
        "the replayed message delivered",
        || async {
            store.message(id).await.unwrap().unwrap().status == tongban::store::status::DELIVERED
        },
    )
    .await;
    // The console shows it delivered (after a refresh of the message).
    c.find(Locator::Css(&format!("#messages tbody tr[data-id='{id}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_until(&c, "#d-status", |t| t == "delivered").await;
    screenshot(&c, "console-operator.png").await;
    assert_eq!(state.accepted.lock().unwrap().len(), 1);
    let audit = store.audit().await.unwrap();
    assert!(audit.iter().any(|a| a.actor == "otto"
        && a.action == "replay"
        && a.reason == "receiver fixed, checked by phone"
        && a.subject == format!("message {id}")));

    c.close().await.unwrap();
    drop(driver);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());
}
