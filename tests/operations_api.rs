//! The operations API of a running hub (`tongban run`), with tokens made by
//! `tongban token create`: a role matrix over every endpoint (no token 401,
//! a lower role 403, the right role works); viewers see personal data
//! masked; an operator's unmasked view needs a reason and is audited; a
//! dead message replayed after the receiver is fixed is delivered with its
//! own idempotency key; skip and pause are audited; metrics; the OpenAPI
//! description names every route; no token and no ID number in the logs.
//! The CLI's `messages`, `targets`, `replay --dry-run` and `audit` too.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;
use support::ops::{cli, config, people};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_api_roles_masking_replay_and_audit() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (state, rx_url) = support::ops::receiver(true).await;
    let admin_addr = format!("127.0.0.1:{}", support::free_port());
    config(dir, &admin_addr, &rx_url);
    let base = format!("http://{admin_addr}");

    let token = |role: &str, name: &str| {
        cli(
            dir,
            &[
                "token", "create", "--role", role, "--name", name, "--actor", "setup",
            ],
        )
        .trim()
        .to_string()
    };
    let viewer = token("viewer", "vera");
    let operator = token("operator", "otto");
    let admin = token("admin", "ada");
    assert!(viewer.starts_with("tb_") && viewer.len() == 67, "{viewer}");

    cli(
        dir,
        &[
            "ingest",
            "--source",
            "src.people",
            dir.join("input.jsonl").to_str().unwrap(),
        ],
    );
    let mut hub = support::hub::run_logged(dir, &[("TONGBAN_LOG", "debug")]);
    support::listening(&admin_addr, Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let get = |path: &str, tok: Option<&str>| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r.send()
    };

    // All three refused for good: dead, with the receiver's reason.
    support::eventually(Duration::from_secs(30), "three dead letters", || async {
        let r = get("/api/messages?status=dead", Some(&viewer))
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        v["items"].as_array().is_some_and(|a| a.len() == 3)
    })
    .await;
    let v: serde_json::Value = get(
        "/api/messages?status=dead&target=rx.deliver&limit=2",
        Some(&viewer),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let page1: Vec<i64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(page1.len(), 2);
    let next = v["next"].as_i64().expect("a next page");
    let v: serde_json::Value = get(
        &format!("/api/messages?status=dead&after={next}"),
        Some(&viewer),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let ids: Vec<i64> = page1
        .iter()
        .copied()
        .chain(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_i64().unwrap()),
        )
        .collect();
    assert_eq!(ids.len(), 3);
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    // Filters: error class, reason text, key.
    let n = |v: serde_json::Value| v["items"].as_array().unwrap().len();
    let q = |path: String| {
        let (http, viewer, base) = (http.clone(), viewer.clone(), base.clone());
        async move {
            http.get(format!("{base}{path}"))
                .bearer_auth(viewer)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(n(q("/api/messages?error_class=http_422".into()).await), 3);
    assert_eq!(n(q("/api/messages?error_class=timeout".into()).await), 0);
    assert_eq!(n(q("/api/messages?text=unknown%20person".into()).await), 3);
    assert_eq!(
        n(q("/api/messages?text=nothing%20like%20it".into()).await),
        0
    );
    let p0 = &people()[0];
    assert_eq!(n(q(format!("/api/messages?key={}", p0.id)).await), 1);

    // The role matrix over every endpoint the OpenAPI description lists
    // (so it cannot miss one): no token or a forged one 401, a role below
    // the one it names 403, that role or above gets past the check. Actions
    // are sent with an empty body: past the check they stop at "a reason is
    // needed" (400) and change nothing.
    let post = |path: String, tok: Option<String>, body: serde_json::Value| {
        let mut r = http.post(format!("{base}{path}")).json(&body);
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let rank = |r: &str| {
        ["viewer", "operator", "admin"]
            .iter()
            .position(|x| *x == r)
            .unwrap()
    };
    let tokens = [
        ("viewer", &viewer),
        ("operator", &operator),
        ("admin", &admin),
    ];
    let spec: serde_json::Value = get("/api/openapi.json", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for (template, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let desc = op["description"].as_str().unwrap_or("");
            let Some(need) = ["viewer", "operator", "admin"]
                .into_iter()
                .find(|r| desc.contains(&format!("Needs the {r} role")))
            else {
                assert_eq!(template, "/api/openapi.json", "{template} names no role");
                continue;
            };
            let path = template
                .replace("{id}", &a.to_string())
                .replace("{target}", "rx.deliver")
                .replace("{name}", "nobody");
            let path = if template == "/api/quarantine" {
                format!("{path}?source=src.people")
            } else {
                path
            };
            let call = |tok: Option<&str>| {
                let tok = tok.map(str::to_string);
                let path = path.clone();
                async move {
                    if method == "get" {
                        get(&path, tok.as_deref()).await.unwrap().status()
                    } else {
                        post(path, tok, serde_json::json!({}))
                            .await
                            .unwrap()
                            .status()
                    }
                }
            };
            assert_eq!(call(None).await, 401, "{method} {path} without a token");
            assert_eq!(call(Some("tb_forged")).await, 401, "{method} {path} forged");
            for (role, tok) in &tokens {
                let s = call(Some(tok.as_str())).await;
                if rank(role) >= rank(need) {
                    assert!(s != 401 && s != 403, "{method} {path} as {role}: {s}");
                    if method == "get" && !path.contains("/api/tasks/") {
                        assert_eq!(s, 200, "{method} {path} as {role}");
                    }
                } else {
                    assert_eq!(s, 403, "{method} {path} as {role}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} endpoints checked");
    assert_eq!(get("/api/openapi.json", None).await.unwrap().status(), 200);

    // A viewer sees the message masked, and cannot unmask it.
    let shown = get(&format!("/api/messages/{a}"), Some(&viewer))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let who = people()
        .into_iter()
        .find(|p| shown.contains(&tongban::domain::mask::id_number(&p.id)))
        .expect("a masked ID number");
    assert!(!shown.contains(&who.id), "{shown}");
    assert!(!shown.contains(&who.name), "{shown}");
    assert!(shown.contains("\"masked\":true"), "{shown}");
    assert!(shown.contains("http_422"), "{shown}");
    let s = get(
        &format!("/api/messages/{a}?unmasked=true&reason=x"),
        Some(&viewer),
    )
    .await
    .unwrap()
    .status();
    assert_eq!(s, 403);
    // An operator may, with a reason; it is audited.
    let s = get(&format!("/api/messages/{a}?unmasked=true"), Some(&operator))
        .await
        .unwrap()
        .status();
    assert_eq!(s, 400, "no reason");
    let shown = get(
        &format!("/api/messages/{a}?unmasked=true&reason=caller%20on%20the%20phone"),
        Some(&operator),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        shown.contains(&who.id) && shown.contains(&who.name),
        "{shown}"
    );

    // Dry run of a re-mapped replay: the mapping is unchanged, so nothing
    // would change, and the message stays dead.
    let r = post(
        format!("/api/messages/{a}/replay"),
        Some(operator.clone()),
        serde_json::json!({"remap": true, "dry_run": true}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["changes"], serde_json::json!([]));
    let out = cli(
        dir,
        &[
            "replay",
            &a.to_string(),
            "--remap",
            "--dry-run",
            "--reason",
            "look",
        ],
    );
    assert!(out.contains("same payload"), "{out}");

    // The receiver is fixed; the operator replays one as is, skips one.
    state.refuse.store(false, Ordering::SeqCst);
    let r = post(
        format!("/api/messages/{a}/replay"),
        Some(operator.clone()),
        serde_json::json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400, "a replay needs a reason");
    let r = post(
        format!("/api/messages/{a}/replay"),
        Some(operator.clone()),
        serde_json::json!({"reason": "receiver fixed"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(
        format!("/api/messages/{b}/skip"),
        Some(operator.clone()),
        serde_json::json!({"reason": "duplicate person"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(
        format!("/api/messages/{b}/skip"),
        Some(operator.clone()),
        serde_json::json!({"reason": "again"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409, "only a dead message is skipped");
    support::eventually(
        Duration::from_secs(30),
        "the replayed message delivered",
        || async { state.accepted.lock().unwrap().len() == 1 },
    )
    .await;
    let idem = tongban::store::Store::open("sqlite://var/tongban.db", dir)
        .await
        .unwrap()
        .message(a)
        .await
        .unwrap()
        .unwrap()
        .idem_key;
    assert_eq!(state.accepted.lock().unwrap()[0].0, idem);
    let v = q("/api/messages?status=delivered".to_string()).await;
    assert_eq!(v["items"][0]["id"], a);

    // Pause and resume; targets show it.
    let r = post(
        "/api/targets/rx.deliver/pause".into(),
        Some(operator.clone()),
        serde_json::json!({"reason": "maintenance"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v = q("/api/targets".into()).await;
    let t = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "rx.deliver")
        .unwrap()
        .clone();
    assert_eq!(t["paused"], true);
    assert_eq!(
        (
            t["delivered"].as_i64(),
            t["dead"].as_i64(),
            t["skipped"].as_i64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(t["served_here"], true);
    assert!(t.get("delivered_per_s").is_some(), "{t}");
    let r = post(
        "/api/targets/rx.deliver/resume".into(),
        Some(operator.clone()),
        serde_json::json!({"reason": "done"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    // Metrics.
    let m = get("/metrics", Some(&viewer))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "tongban_messages{target=\"rx.deliver\",status=\"dead\"} 1",
        "tongban_messages{target=\"rx.deliver\",status=\"delivered\"} 1",
        "tongban_delivery_duration_seconds_count{target=\"rx.deliver\"} 4",
        "tongban_breaker_state{target=\"rx.deliver\"} 0",
        "tongban_oldest_pending_age_seconds{target=\"rx.deliver\"}",
    ] {
        assert!(m.contains(want), "{want} in\n{m}");
    }

    // An admin makes and revokes tokens; the audit has every action.
    let r = post(
        "/api/tokens".into(),
        Some(admin.clone()),
        serde_json::json!({"name": "otto2", "role": "operator"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let t2: serde_json::Value = r.json().await.unwrap();
    let t2 = t2["token"].as_str().unwrap().to_string();
    assert_eq!(get("/api/targets", Some(&t2)).await.unwrap().status(), 200);
    let r = post(
        "/api/tokens/otto2/revoke".into(),
        Some(admin.clone()),
        serde_json::json!({"reason": "left"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get("/api/targets", Some(&t2)).await.unwrap().status(), 401);
    // A token that expires lets no one in after its time; a bad duration
    // is refused.
    let r = post(
        "/api/tokens".into(),
        Some(admin.clone()),
        serde_json::json!({"name": "brief", "role": "viewer", "expires_in": "1s"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let brief: serde_json::Value = r.json().await.unwrap();
    assert!(brief["expires_at"].is_i64(), "{brief}");
    let brief = brief["token"].as_str().unwrap().to_string();
    assert_eq!(
        get("/api/targets", Some(&brief)).await.unwrap().status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        get("/api/targets", Some(&brief)).await.unwrap().status(),
        401
    );
    let r = post(
        "/api/tokens".into(),
        Some(admin.clone()),
        serde_json::json!({"name": "bad", "role": "viewer", "expires_in": "soon"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let audit: serde_json::Value = get("/api/audit", Some(&admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().into(),
                r["action"].as_str().unwrap().into(),
                r["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    for want in [
        ("otto", "view_unmasked", "caller on the phone"),
        ("otto", "replay", "receiver fixed"),
        ("otto", "skip", "duplicate person"),
        ("otto", "pause", "maintenance"),
        ("otto", "resume", "done"),
        ("ada", "token_create", ""),
        ("ada", "token_revoke", "left"),
        ("setup", "token_create", ""),
    ] {
        assert!(
            rows.iter()
                .any(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str()) == want),
            "{want:?} in {rows:?}"
        );
    }

    // The CLI: masked list and show, targets, audit.
    let out = cli(dir, &["messages", "list", "--status", "dead"]);
    assert!(
        out.contains(&c.to_string()) && !out.contains(&who.id),
        "{out}"
    );
    let out = cli(dir, &["messages", "show", &c.to_string()]);
    assert!(out.contains("\"masked\": true"), "{out}");
    for p in people() {
        assert!(!out.contains(&p.id), "{out}");
    }
    let out = cli(dir, &["targets"]);
    assert!(out.contains("rx.deliver"), "{out}");
    let out = cli(
        dir,
        &[
            "messages",
            "show",
            &c.to_string(),
            "--unmasked",
            "--reason",
            "audit check",
            "--actor",
            "cli-ops",
        ],
    );
    assert!(out.contains("\"masked\": false"), "{out}");
    let out = cli(dir, &["audit"]);
    assert!(
        out.contains("cli-ops") && out.contains("view_unmasked"),
        "{out}"
    );

    // The OpenAPI description (read for the role matrix) names every route.
    for p in [
        "/api/targets",
        "/api/targets/{target}/pause",
        "/api/targets/{target}/resume",
        "/api/messages",
        "/api/messages/{id}",
        "/api/messages/{id}/replay",
        "/api/messages/{id}/skip",
        "/api/quarantine",
        "/api/audit",
        "/api/tokens",
        "/api/tokens/{name}/revoke",
        "/metrics",
        "/api/tasks",
        "/api/tasks/{id}",
        "/api/tasks/{id}/pause",
        "/api/tasks/{id}/resume",
        "/api/tasks/{id}/cancel",
    ] {
        assert!(spec["paths"][p].is_object(), "{p} described");
    }

    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    assert!(hub.wait().unwrap().success());
    // No token and no ID number in the hub's log (debug level).
    let log = std::fs::read_to_string(dir.join("hub.log")).unwrap();
    assert!(log.lines().count() > 5, "{log}");
    for secret in [&viewer, &operator, &admin, &t2] {
        assert!(!log.contains(secret.as_str()), "a token in the log");
    }
    for p in people() {
        assert!(!log.contains(&p.id), "an ID number in the log");
    }
}
