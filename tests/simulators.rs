//! The simulators over HTTP on 127.0.0.1: their rules (docs/domain.md), their
//! ledgers (each idempotency key applied once) and their fault switches.

mod support;

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tongban::config::connector::MacAlgorithm;
use tongban::connectors::http::sign::Signer;
use tongban::sim;

async fn serve(router: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(sim::serve(l, router));
    url
}

/// GET a URL (with basic auth if given) and read its JSON.
async fn get_json(c: &reqwest::Client, url: &str, basic: Option<(&str, &str)>) -> Value {
    let req = c.get(url);
    let req = match basic {
        Some((u, p)) => req.basic_auth(u, Some(p)),
        None => req,
    };
    req.send().await.unwrap().json().await.unwrap()
}

fn signed(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    secret: &str,
    alg: MacAlgorithm,
    body: &Value,
) -> reqwest::RequestBuilder {
    let body = serde_json::to_vec(body).unwrap();
    let s = Signer::new("tongban-hub", secret.as_bytes(), alg);
    let mut req = client.post(format!("{url}{path}")).body(body.clone());
    for (k, v) in s.sign("POST", path, &body, tongban::store::now_ms()) {
        req = req.header(k, v);
    }
    req
}

fn application(id: &str, kind: &str, app_id: &str) -> Value {
    json!({
        "application_id": app_id, "kind": kind, "id_no": id, "name": "张三", "sex": "M",
        "birth_date": "1990-03-07", "region_code": "110105", "certificate_no": null,
        "target_region_code": null, "submitted_on": "2026-11-23",
        "context": {"application_id": app_id, "phone": null,
            "bank": {"account_no": "6217000000000000004", "bank_code": "105100000017", "account_name": "张三"},
            "dibao": "DIBAO", "needs_long_term_care": true, "wants_employment": false,
            "wants_training": false, "pension": "NONE"}
    })
}

#[tokio::test]
async fn the_certificate_system_issues_reissues_and_cancels_by_its_rules() {
    let cert = sim::cert::Cert::new(Some("s3cret"));
    cert.assess("110105199003070017", 4, 1);
    let url = serve(cert.router()).await;
    let c = reqwest::Client::new();
    let post = |body: Value, secret: &str| {
        signed(
            &c,
            &url,
            "/api/cert/v3/applications",
            secret,
            MacAlgorithm::HmacSm3,
            &body,
        )
        .send()
    };
    let r = post(application("110105199003070017", "NEW", "A-1"), "wrong")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = post(application("110105199003070011", "NEW", "A-0"), "s3cret")
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        422,
        "an ID number failing its check digit"
    );
    assert!(
        r.text().await.unwrap().contains("110105********0011"),
        "masked in the reason"
    );
    for _ in 0..2 {
        let r = post(application("110105199003070017", "NEW", "A-1"), "s3cret")
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let r = post(application("110105199003070017", "NEW", "A-2"), "s3cret")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422, "a second NEW for a holder");
    post(
        application("110105199003070017", "REISSUE", "A-3"),
        "s3cret",
    )
    .await
    .unwrap();
    post(
        application("110105199003070017", "REISSUE", "A-4"),
        "s3cret",
    )
    .await
    .unwrap();
    post(application("110105199003070017", "CANCEL", "A-5"), "s3cret")
        .await
        .unwrap();
    let page = get_json(&c, &format!("{url}/api/cert/v3/events?after=0"), None).await;
    let events = page["events"].as_array().unwrap();
    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["certificate_no"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("ISSUED", "11010519900307001741"),
            ("REISSUED", "11010519900307001741B1"),
            ("REISSUED", "11010519900307001741B2"),
            ("CANCELLED", "11010519900307001741B2"),
        ]
    );
    assert_eq!(page["next"], 4);
    assert_eq!(
        events[0]["application"]["bank"]["account_no"],
        "6217000000000000004"
    );
    let later = get_json(&c, &format!("{url}/api/cert/v3/events?after=4"), None).await;
    assert_eq!(later["events"].as_array().unwrap().len(), 0);
}

/// The county federation's own actions on a certificate: freeze,
/// unfreeze, re-assessment (a new number; the kind says what changed),
/// cancellation with a reason; each refused where it cannot apply.
#[tokio::test]
async fn the_certificate_system_freezes_reassesses_and_cancels_on_the_federations_action() {
    let cert = sim::cert::Cert::new(None);
    let id = "110105199003070017";
    cert.assess(id, 4, 2);
    let url = serve(cert.router()).await;
    let c = reqwest::Client::new();
    let act = |body: Value| c.post(format!("{url}/_actions")).json(&body).send();
    let r = act(json!({"holder_id": id, "action": "FREEZE"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422, "no certificate yet");
    let r = c
        .post(format!("{url}/api/cert/v3/applications"))
        .json(&application(id, "NEW", "A-1"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    for (body, status) in [
        (json!({"holder_id": id, "action": "UNFREEZE"}), 422),
        (json!({"holder_id": id, "action": "FREEZE"}), 200),
        (json!({"holder_id": id, "action": "FREEZE"}), 422),
        (json!({"holder_id": id, "action": "UNFREEZE"}), 200),
        (
            json!({"holder_id": id, "action": "REASSESS", "category": 4, "level": 3}),
            200,
        ),
        (
            json!({"holder_id": id, "action": "REASSESS", "category": 5, "level": 3}),
            200,
        ),
        (
            json!({"holder_id": id, "action": "REASSESS", "category": 9, "level": 3}),
            422,
        ),
        (json!({"holder_id": id, "action": "THAW"}), 400),
        (
            json!({"holder_id": id, "action": "CANCEL", "reason": "DECEASED"}),
            200,
        ),
        (json!({"holder_id": id, "action": "UNFREEZE"}), 422),
    ] {
        let r = act(body.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
    }
    let page = get_json(&c, &format!("{url}/api/cert/v3/events?after=0"), None).await;
    let got: Vec<(String, String, String)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("kind"), s("certificate_no"), s("previous_certificate_no"))
        })
        .collect();
    let n = |s: &str| s.to_string();
    assert_eq!(
        got,
        [
            (n("ISSUED"), format!("{id}42"), n("")),
            (n("FROZEN"), format!("{id}42"), n("")),
            (n("UNFROZEN"), format!("{id}42"), n("")),
            (n("LEVEL_CHANGED"), format!("{id}43"), format!("{id}42")),
            (n("CATEGORY_CHANGED"), format!("{id}53"), format!("{id}43")),
            (n("CANCELLED"), format!("{id}53"), n("")),
        ]
    );
    let events = page["events"].as_array().unwrap();
    assert_eq!(events[5]["cancel_reason"], "DECEASED");
    assert_eq!(events[1]["holder_name"], events[0]["holder_name"]);
    assert_eq!(
        events[1]["valid_until"], events[0]["valid_until"],
        "a freeze keeps the validity"
    );
    assert_eq!(cert.holders(), 0);
}

/// Applications the certificate system receives but refuses (不予办理):
/// an assessment that finds no qualifying disability, a new application
/// within a year of a cancellation at the holder's request, a renewal
/// before the last year of the ten; each a `REJECTED` event with its
/// reason and the application's context, so the applicant hears it.
#[tokio::test]
async fn the_certificate_system_refuses_by_its_rules_and_says_why() {
    let cert = sim::cert::Cert::new(None);
    let (a, b) = ("110105199003070017", "11010519491231002X");
    cert.assess_fails(a);
    cert.assess(b, 4, 2);
    let url = serve(cert.router()).await;
    let c = reqwest::Client::new();
    let send = |body: Value| {
        c.post(format!("{url}/api/cert/v3/applications"))
            .json(&body)
            .send()
    };
    for (id, kind, app) in [
        (a, "NEW", "R-1"),
        (b, "NEW", "R-2"),
        (b, "RENEW", "R-3"),
        (b, "CANCEL", "R-4"),
        (b, "NEW", "R-5"),
    ] {
        let mut body = application(id, kind, app);
        body["context"] = json!({ "application_id": app, "dibao": "NONE" });
        let r = send(body).await.unwrap();
        assert!(r.status().is_success(), "{kind} {app}: {}", r.status());
    }
    let page = get_json(&c, &format!("{url}/api/cert/v3/events?after=0"), None).await;
    let got: Vec<(String, String, String)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (
                s("kind"),
                e["application"]["application_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                s("rejection_reason"),
            )
        })
        .collect();
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|(k, a, _)| (k.as_str(), a.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("REJECTED", "R-1"),
            ("ISSUED", "R-2"),
            ("REJECTED", "R-3"),
            ("CANCELLED", "R-4"),
            ("REJECTED", "R-5"),
        ]
    );
    assert!(got[0].2.contains("评定不符合"), "{}", got[0].2);
    assert!(
        got[2].2.contains("last year of its ten-year validity"),
        "{}",
        got[2].2
    );
    assert!(
        got[4].2.contains("within a year of a cancellation"),
        "{}",
        got[4].2
    );
    assert!(!cert.certificates().contains_key(a));

    // Nine years and a day later, the renewal is made.
    let d = "11010519850101001?";
    let d = &format!(
        "{}{}",
        &d[..17],
        tongban::domain::id::check_char(&d.as_bytes()[..17]) as char
    );
    cert.assess(d, 4, 1);
    send(application(d, "NEW", "R-6")).await.unwrap();
    cert.backdate(d, 9 * 365 + 3);
    send(application(d, "RENEW", "R-7")).await.unwrap();
    let page = get_json(&c, &format!("{url}/api/cert/v3/events?after=5"), None).await;
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ISSUED", "RENEWED"]);
}

fn card_request(id: &str, cert: &str) -> String {
    format!("<?xml version=\"1.0\"?><CertificateLoadRequest xmlns=\"{}\"><request_id>R-1</request_id><operation>LOAD</operation><social_security_no>{id}</social_security_no><name>张三</name><certificate_no>{cert}</certificate_no><category>4</category><level>1</level></CertificateLoadRequest>", sim::sscard::NS)
}

#[tokio::test]
async fn the_card_system_refuses_unknown_people_and_applies_each_key_once() {
    let cards = sim::sscard::Sscard::new(Some("tok"), Some(1000));
    cards.issue_card("110105199003070017");
    let url = serve(cards.router()).await;
    let c = reqwest::Client::new();
    let load = |body: String, key: &str| {
        c.post(format!("{url}/sscard/v1/certificate/load"))
            .bearer_auth("tok")
            .header("Idempotency-Key", key.to_string())
            .body(body)
            .send()
    };
    let r = load(
        card_request("110105199003070025", "11010519900307002541"),
        "k0",
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().await.unwrap().contains("unknown person"));
    let r = load(
        card_request("110105199003070017", "11010519491231002X41"),
        "k1",
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 422, "another person's certificate");
    for _ in 0..3 {
        let r = load(
            card_request("110105199003070017", "11010519900307001741"),
            "k2",
        )
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    assert_eq!(cards.common.effects("card_loaded").len(), 1);
    assert_eq!(cards.common.ledger.lock().unwrap().repeats, 2);
    let xml = c
        .get(format!("{url}/sscard/v1/certificate/results?since=0"))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let page =
        tongban::connectors::http::pull::read_xml_page(xml.as_bytes(), Some("next")).unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.next.as_deref(), Some("1"));
    assert!(String::from_utf8_lossy(&page.records[0]).contains("<status>LOADED</status>"));

    // A load and an unload travel apart: the later event wins, whatever
    // order they arrive in (an unfreeze's load before the freeze's unload).
    let stamped = |op: &str, at: &str| {
        card_request("110105199003070017", "11010519900307001741")
            .replace(
                "<operation>LOAD</operation>",
                &format!("<operation>{op}</operation>"),
            )
            .replace(
                "</CertificateLoadRequest>",
                &format!("<occurred_at>{at}</occurred_at></CertificateLoadRequest>"),
            )
    };
    let r = load(stamped("LOAD", "2099-01-01T10:00:02.000Z"), "k3")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = c
        .post(format!("{url}/sscard/v1/certificate/unload"))
        .bearer_auth("tok")
        .header("Idempotency-Key", "k4")
        .body(stamped("UNLOAD", "2099-01-01T10:00:01.000Z"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        cards.loaded_on("110105199003070017").as_deref(),
        Some("11010519900307001741"),
        "the older unload changed nothing"
    );
    assert_eq!(cards.common.effects("card_superseded").len(), 1);
}

#[tokio::test]
async fn the_subsidies_system_pays_by_the_rules_and_stops_when_told() {
    let s =
        sim::subsidies::Subsidies::new(Some(("tongban", "pw")), sim::subsidies::Rates::default());
    let url = serve(s.router()).await;
    let c = reqwest::Client::new();
    let apply = |id: &str, cat: i64, level: i64, dibao: &str, card: &str| {
        c.post(format!("{url}/api/subsidy/v1/eligibility"))
            .basic_auth("tongban", Some("pw"))
            .header("Idempotency-Key", format!("{id}-{dibao}"))
            .json(&json!({"request_id": "x", "holder_id": id, "name": "张三",
                "certificate_no": format!("{id}{cat}{level}"), "category": cat, "level": level,
                "region_code": "110105", "dibao": dibao, "needs_long_term_care": true,
                "start_month": "2026-11", "bank_account_no": card, "bank_code": "105100000017",
                "account_name": "张三"}))
            .send()
    };
    let r = apply("110105199003070017", 4, 1, "DIBAO", "6217000000000000004")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = apply("11010519491231002X", 5, 3, "NONE", "6222000000000000004")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = apply("440524188001010014", 4, 1, "TEKUN", "6222000000000000004")
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "destitute support excludes only where the province says so"
    );
    assert_eq!(r.json::<Value>().await.unwrap()["care_fen"], 30_000);
    let r = apply("360426199101010071", 4, 1, "DIBAO", "6217000000000000001")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422, "a card failing Luhn");
    // The province pays through the card: nobody is paid before the card
    // system has reported their card's account.
    let list = get_json(
        &c,
        &format!("{url}/api/subsidy/v1/payouts?period=2026-11"),
        Some(("tongban", "pw")),
    )
    .await;
    assert_eq!(list["items"], json!([]), "{list}");
    let account = |id: &str, no: &str| {
        c.post(format!("{url}/api/subsidy/v1/accounts"))
            .basic_auth("tongban", Some("pw"))
            .header("Idempotency-Key", format!("acct-{id}-{no}"))
            .json(
                &json!({"holder_id": id, "certificate_no": format!("{id}41"),
                "bank_account_no": no, "bank_code": "103100000026", "source": "SSCARD",
                "reported_at": "2026-11-02T11:00:00+08:00"}),
            )
            .send()
    };
    let r = account("110105199003070017", "6228480000000000001")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422, "a card account failing Luhn");
    for id in [
        "110105199003070017",
        "11010519491231002X",
        "440524188001010014",
    ] {
        let r = account(id, "6228480012345678903").await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let list = get_json(
        &c,
        &format!("{url}/api/subsidy/v1/payouts?period=2026-11"),
        Some(("tongban", "pw")),
    )
    .await;
    for p in list["items"].as_array().unwrap() {
        assert_eq!(p["bank_account_no"], "6228480012345678903", "{p}");
        assert_eq!(p["bank_code"], "103100000026");
        assert_eq!(p["account_source"], "SSCARD");
    }
    let items: Vec<(String, i64)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["payout_id"].as_str().unwrap().to_string(),
                p["amount_fen"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        items,
        [
            ("LIVING-110105199003070017-2026-11".to_string(), 41_000),
            ("CARE-110105199003070017-2026-11".to_string(), 30_000),
            ("CARE-11010519491231002X-2026-11".to_string(), 7_500),
            ("CARE-440524188001010014-2026-11".to_string(), 30_000),
        ]
    );
    // Nothing before the start month; nothing from the stop month on.
    assert!(s.payout_list("2026-10").is_empty());
    c.post(format!("{url}/api/subsidy/v1/stops"))
        .basic_auth("tongban", Some("pw"))
        .json(&json!({"request_id": "s", "holder_id": "110105199003070017",
            "certificate_no": "11010519900307001741", "reason": "DECEASED", "effective_month": "2026-12"}))
        .send()
        .await
        .unwrap();
    assert_eq!(s.payout_list("2026-11").len(), 4);
    assert_eq!(s.payout_list("2026-12").len(), 2);
}

#[tokio::test]
async fn fault_switches_answer_503_429_and_hang() {
    let p = sim::referral::Referral::new(sim::referral::Kind::Pension, None);
    let url = serve(p.router()).await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let body = json!({"holder_id": "110105199003070017", "level": 1, "request_id": "r"});
    let set = |f: Value| c.post(format!("{url}/_faults")).json(&f).send();
    let send = || {
        c.post(format!("{url}/api/pension/v1/enrolments"))
            .json(&body)
            .send()
    };
    set(json!({"error_permille": 1000})).await.unwrap();
    assert_eq!(send().await.unwrap().status().as_u16(), 503);
    set(json!({"throttle_permille": 1000, "retry_after_s": 3}))
        .await
        .unwrap();
    let r = send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    set(json!({"hang_permille": 1000})).await.unwrap();
    assert!(send().await.unwrap_err().is_timeout());
    set(json!({})).await.unwrap();
    assert_eq!(send().await.unwrap().status().as_u16(), 200);
    let r = c
        .post(format!("{url}/api/pension/v1/enrolments"))
        .json(&json!({"holder_id": "110105199003070017", "level": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422, "level 3 is not enrolled");
    // A child of 11 is enrolled from the month of the 16th birthday, not
    // before.
    let child = |start: &str| {
        c.post(format!("{url}/api/pension/v1/enrolments"))
            .json(
                &json!({"holder_id": "110105201506100038", "level": 1, "request_id": start,
                          "birth_date": "2015-06-10", "start_month": start}),
            )
            .send()
    };
    let r = child("2031-05").await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().await.unwrap().contains("16 at the earliest"));
    assert_eq!(child("2031-06").await.unwrap().status().as_u16(), 200);
    set(json!({"crash_at": 1})).await.unwrap();
    assert!(send().await.is_err(), "a crashed simulator answers nothing");
    let ledger = get_json(&c, &format!("{url}/_ledger"), None).await;
    assert_eq!(ledger["effects"].as_array().unwrap().len(), 2);
    assert!(ledger["faulted"].as_u64().unwrap() >= 3);
    let _ = Arc::strong_count(&p);
}

#[tokio::test]
async fn certificate_applications_go_through_assessment_notice_and_approval() {
    let cert = sim::cert::Cert::new(None);
    let url = serve(cert.router()).await;
    let c = reqwest::Client::new();
    let stages = json!({"assessment_ms": 150, "notice_ms": 150, "approval_ms": 150});
    let r = c
        .post(format!("{url}/_stages"))
        .json(&stages)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = c
        .post(format!("{url}/api/cert/v3/applications"))
        .json(&application("110105199003070017", "NEW", "A-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "received, to be decided later");
    assert_eq!(cert.events(), 0, "no certificate before approval");
    support::eventually(
        Duration::from_secs(10),
        "the certificate issued",
        || async { cert.events() == 1 },
    )
    .await;
    let stages: Vec<&str> = cert
        .common
        .ledger
        .lock()
        .unwrap()
        .effects()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        stages,
        [
            "application",
            "assessed",
            "noticed",
            "approved",
            "certificate"
        ]
    );
}

/// Status updates to the platform, one per request or in a batch: a batch
/// with one update lacking its fields is refused whole (422, naming it) and
/// applies nothing; a good batch applies each update once by its own
/// idempotency key, and sending it again applies nothing more.
#[tokio::test]
async fn the_platform_takes_status_updates_alone_or_in_batches_once_each() {
    let p = sim::platform::Platform::new(Some("s3cret"));
    let url = serve(p.router()).await;
    let c = reqwest::Client::new();
    let path = "/api/v1/applications/status";
    let alg = MacAlgorithm::HmacSha256;
    let one = json!({"application_id": "A-1", "status": "ACCEPTED"});
    let r = signed(&c, &url, path, "s3cret", alg, &one)
        .header("Idempotency-Key", "k-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let item = |k: &str, app: &str, st: &str| json!({"idempotency_key": k, "record": {"application_id": app, "status": st}});
    let bad = json!({"items": [item("k-2", "A-2", "ACCEPTED"), {"idempotency_key": "k-3", "record": {"application_id": "A-3"}}]});
    let r = signed(&c, &url, path, "s3cret", alg, &bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().await.unwrap().contains("update 1"));
    assert_eq!(p.statuses().len(), 1, "a refused batch applies nothing");

    let good = json!({"items": [item("k-2", "A-2", "ACCEPTED"), item("k-3", "A-3", "CERTIFIED"), item("k-1", "A-1", "ACCEPTED")]});
    for _ in 0..2 {
        let r = signed(&c, &url, path, "s3cret", alg, &good)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let st = p.statuses();
    assert_eq!(st.len(), 3);
    assert_eq!(st["A-3"], "CERTIFIED");
    assert_eq!(p.common.count("status"), 3, "each key applied once");
    // Unsigned batches are refused like single updates.
    let r = c
        .post(format!("{url}{path}"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

/// Every event of a feed, read page by page from `path` (with `query`).
async fn all_events(c: &reqwest::Client, url: &str, query: &str) -> Vec<Value> {
    let (mut out, mut after) = (Vec::new(), 0);
    loop {
        let page = get_json(
            c,
            &format!("{url}/api/cert/v3/events?after={after}{query}"),
            None,
        )
        .await;
        let events = page["events"].as_array().unwrap().clone();
        let next = page["next"].as_u64().unwrap();
        if events.is_empty() {
            assert_eq!(next, after, "an empty page keeps the cursor");
            return out;
        }
        assert!(next > after);
        out.extend(events);
        after = next;
    }
}

/// A provincial hub reads its province's events: those of its counties,
/// and the migrations out of them without the application of the province
/// applied in; pages run past other provinces' events without skipping
/// one of its own.
#[tokio::test]
async fn the_certificate_system_serves_each_province_its_own_events() {
    let cert = sim::cert::Cert::new(None);
    let url = serve(cert.router()).await;
    let c = reqwest::Client::new();
    let mut rng = tongban::synth::Rng::new(5);
    let people: Vec<_> = (0..1300)
        .map(|_| tongban::synth::person(&mut rng))
        .collect();
    let apply = |v: Value| {
        c.post(format!("{url}/api/cert/v3/applications"))
            .json(&v)
            .send()
    };
    for (i, p) in people.iter().enumerate() {
        let mut a = application(&p.id, "NEW", &format!("N-{i}"));
        a["region_code"] = json!(p.region);
        // (Through a guardian: some are assessed intellectual or mental.)
        a["guardian"] = tongban::synth::guardian(p);
        assert!(apply(a).await.unwrap().status().is_success());
    }
    // One person of Shanxi moves to Zichuan (Shandong), filed there.
    let p = people.iter().find(|p| p.region.starts_with("14")).unwrap();
    let mut m = application(&p.id, "MIGRATE", "M-1");
    m["region_code"] = json!("370302");
    m["certificate_no"] = json!(cert.certificates()[&p.id]);
    m["target_region_code"] = json!("370302");
    assert!(apply(m).await.unwrap().status().is_success());

    let every = all_events(&c, &url, "").await;
    assert_eq!(every.len(), 1301);
    let migrated = every.last().unwrap();
    assert_eq!(migrated["kind"], "MIGRATED");
    assert_eq!(migrated["region_code"], "370302");
    assert_eq!(migrated["previous_region_code"], p.region.as_str());
    assert_eq!(migrated["application"]["application_id"], "M-1");
    for (province, moved) in [("14", "out"), ("37", "in"), ("11", "")] {
        let got = all_events(&c, &url, &format!("&province={province}")).await;
        let expected: Vec<&Value> = every
            .iter()
            .filter(|e| {
                e["region_code"].as_str().unwrap().starts_with(province)
                    || e["previous_region_code"]
                        .as_str()
                        .is_some_and(|r| r.starts_with(province))
            })
            .collect();
        assert!(expected.len() > 100, "{province}: {}", expected.len());
        assert_eq!(got.len(), expected.len(), "{province}");
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g["event_id"], e["event_id"]);
        }
        let last = got.last().unwrap();
        match moved {
            "out" => {
                assert_eq!(last["kind"], "MIGRATED");
                assert_eq!(
                    last["application"],
                    Value::Null,
                    "the application is the province applied in's"
                );
            }
            "in" => assert_eq!(last["application"]["application_id"], "M-1"),
            _ => assert_ne!(last["kind"], "MIGRATED"),
        }
    }
    // Past a province's last record, a page holds none of its records but
    // moves its cursor past those of the others, so that they are not
    // looked at again.
    let last_beijing = every
        .iter()
        .rposition(|e| e["region_code"].as_str().unwrap().starts_with("11"))
        .unwrap();
    let page = get_json(
        &c,
        &format!(
            "{url}/api/cert/v3/events?after={}&province=11",
            last_beijing + 1
        ),
        None,
    )
    .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 0);
    assert_eq!(page["next"], 1301);
}
