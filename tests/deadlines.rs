//! The deadline register through the running hub, on both stores: the
//! certificate system's progress steps become stages with their working-day
//! deadlines (CDPF 2021-10 §5, on the shipped calendar). Four applications,
//! paced by the county offices: one whose assessor was never named and is
//! overdue, one due within one working day, one whose assessment took
//! weeks (late, then decided), and one done at once. `tongban deadlines`,
//! the report the operations API serves and the metrics all say so.

mod support;

use chrono::NaiveDate;
use std::time::Duration;
use tongban::domain::workdays::{china_day, end_of_day_ms};
use tongban::sim::cert::Pace;

const DAY: i64 = 86_400_000;

async fn scenario(store_url: Option<String>) {
    let support::chain::Chain {
        sims,
        dir,
        cfg,
        store,
        hub,
    } = support::chain::start(store_url).await;
    let d = dir.path();
    let settings = tongban::connectors::deadlines::report::settings(cfg).expect("deadlines");
    let cal = &settings.calendar;

    let now = tongban::store::now_ms();
    let today = china_day(now);
    let next_working = cal.add_working_days(today, 1);
    let mut rng = tongban::synth::Rng::new(19);
    let people: Vec<_> = (0..4).map(|_| tongban::synth::person(&mut rng)).collect();
    // Overdue: accepted 8 days ago, the assessor never named (3 working days).
    let accepted_a = now - 8 * DAY;
    // Due soon: accepted on the latest day whose 3 working days end today
    // or on the next working day, the assessor not yet named.
    let soon_day: NaiveDate = (0..20)
        .map(|k| today - chrono::Days::new(k))
        .find(|d| {
            let due = cal.add_working_days(*d, 3);
            due >= today && due <= next_working
        })
        .unwrap();
    let accepted_b = soon_day
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
        - 8 * 3_600_000;
    // Late, then decided: the assessor named the next day, the result and
    // notice 40 days later (10 working days allowed), decided now.
    let accepted_c = now - 45 * DAY;
    let paces = [
        (
            "SX-DUE-A",
            Pace {
                accepted_ms: accepted_a,
                assigned_ms: None,
                noticed_ms: None,
                decided: false,
            },
        ),
        (
            "SX-DUE-B",
            Pace {
                accepted_ms: accepted_b,
                assigned_ms: None,
                noticed_ms: None,
                decided: false,
            },
        ),
        (
            "SX-DUE-C",
            Pace {
                accepted_ms: accepted_c,
                assigned_ms: Some(accepted_c + DAY),
                noticed_ms: Some(accepted_c + 41 * DAY),
                decided: true,
            },
        ),
    ];
    for (app, pace) in paces {
        sims.cert.pace(app, pace);
    }
    for (i, app) in ["SX-DUE-A", "SX-DUE-B", "SX-DUE-C", "SX-DUE-D"]
        .iter()
        .enumerate()
    {
        sims.cert.assess(&people[i].id, 4, 2);
        sims.platform.file(&support::chain::form(
            app,
            "NEW",
            &people[i],
            None,
            serde_json::json!({"dibao": "NONE", "needs_long_term_care": false}),
        ));
    }
    // A: 1 stage; B: 1; C: 4 (accepted, named, noticed, decided); D: 4.
    support::eventually(
        Duration::from_secs(60),
        "every stage in the register",
        || {
            let store = store.clone();
            async move {
                let mut n = 0;
                for a in ["SX-DUE-A", "SX-DUE-B", "SX-DUE-C", "SX-DUE-D"] {
                    n += store.application_stages(a).await.unwrap().len();
                }
                n == 10
            }
        },
    )
    .await;

    let a = store.application_stages("SX-DUE-A").await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].stage, "RECEIVED");
    let due_a = cal.add_working_days(china_day(accepted_a), 3);
    assert_eq!(
        a[0].due_ms,
        Some(end_of_day_ms(due_a)),
        "3 working days after the day accepted"
    );
    assert_eq!(a[0].done_ms, None);
    let c = store.application_stages("SX-DUE-C").await.unwrap();
    let stages: Vec<&str> = c.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(
        stages,
        ["RECEIVED", "ASSESSOR_NAMED", "NOTICE_COMPLETED", "DECIDED"]
    );
    assert_eq!(
        c[0].done_ms,
        Some(accepted_c + DAY),
        "the next stage ends a stage"
    );
    assert!(c[1].breached(now), "40 days for 10 working days is late");
    assert!(!c[0].breached(now) && !c[2].breached(now));
    assert_eq!(c[3].due_ms, None, "a decided case has no deadline");
    let d_stages = store.application_stages("SX-DUE-D").await.unwrap();
    assert_eq!(d_stages.len(), 4);
    assert!(
        d_stages.iter().all(|s| !s.breached(now)),
        "done at once: {d_stages:?}"
    );

    let r = tongban::connectors::deadlines::report::report(&settings, &store, now)
        .await
        .unwrap();
    let overdue: Vec<&str> = r
        .overdue
        .iter()
        .map(|e| e.application_id.as_str())
        .collect();
    let soon: Vec<&str> = r
        .due_soon
        .iter()
        .map(|e| e.application_id.as_str())
        .collect();
    assert_eq!(overdue, ["SX-DUE-A"], "{r:?}");
    assert_eq!(soon, ["SX-DUE-B"], "{r:?}");
    assert_eq!(
        r.overdue[0].holder,
        tongban::domain::mask::id_number(&people[0].id)
    );
    assert_eq!(
        r.overdue[0].working_days_over,
        cal.working_days_between(due_a, today)
    );
    let count = |stage: &str| {
        r.stages
            .iter()
            .find(|c| c.stage == stage)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        (
            count("RECEIVED").open,
            count("RECEIVED").overdue,
            count("RECEIVED").due_soon
        ),
        (2, 1, 1)
    );
    assert_eq!(count("ASSESSOR_NAMED").late, 1);

    // The CLI says the same, from the store.
    let out = support::run(&["deadlines", "--json", "--config", d.to_str().unwrap()]);
    let (text, err) = support::text(&out);
    assert!(out.status.success(), "{text}{err}");
    let cli: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(cli["overdue"][0]["application_id"], "SX-DUE-A");
    assert_eq!(cli["due_soon"][0]["application_id"], "SX-DUE-B");
    assert!(!text.contains(&people[0].id), "holders are masked");
    let human = support::run(&["deadlines", "--config", d.to_str().unwrap()]);
    let (human, _) = support::text(&human);
    assert!(
        human.contains("Overdue: 1") && human.contains("SX-DUE-A"),
        "{human}"
    );

    // And the metrics.
    let admin = tongban::admin::Admin::new(store.clone(), cfg, Vec::new());
    let m = tongban::admin::metrics::render(&admin).await.unwrap();
    assert!(
        m.contains("tongban_applications_overdue{stage=\"RECEIVED\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tongban_applications_due_soon{stage=\"RECEIVED\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tongban_application_stages_late{stage=\"ASSESSOR_NAMED\"} 1"),
        "{m}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn applications_are_held_to_their_working_day_deadlines_sqlite() {
    scenario(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn applications_are_held_to_their_working_day_deadlines_postgres() {
    scenario(Some(support::pg::database().await)).await;
}
