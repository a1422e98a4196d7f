//! The deadline register: a stage recorded once, ended by the next stage
//! of its application (whatever order they arrive in), open stages found
//! by their due time, late ones counted.

use super::*;

conformance!(
    stages_are_recorded_once_and_ended_by_the_next,
    open_late_and_due_stages_are_counted_per_stage,
);

fn stage(app: &str, stage: &str, rank: i64, entered: i64, due: Option<i64>) -> StageRow {
    StageRow {
        application_id: app.into(),
        stage: stage.into(),
        stage_rank: rank,
        holder_id: "110105199003070017".into(),
        office_region: "110105".into(),
        entered_ms: entered,
        due_ms: due,
        done_ms: None,
    }
}

async fn stages_are_recorded_once_and_ended_by_the_next(store: Store) {
    let received = stage("A-1", "RECEIVED", 0, 1_000, Some(5_000));
    assert_eq!(
        store.record_stages(vec![received.clone()]).await.unwrap(),
        1
    );
    // A redelivery changes nothing.
    assert_eq!(
        store.record_stages(vec![received.clone()]).await.unwrap(),
        0
    );
    let named = stage("A-1", "ASSESSOR_NAMED", 1, 3_000, Some(9_000));
    store.record_stages(vec![named]).await.unwrap();
    let got = store.application_stages("A-1").await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].done_ms, Some(3_000), "the next stage ends it");
    assert_eq!(got[1].done_ms, None);
    // Out of order: the decision first, then the notice it followed; and
    // two stages at the same instant, the later in order ending the other.
    store
        .record_stages(vec![stage("A-2", "DECIDED", 4, 8_000, None)])
        .await
        .unwrap();
    store
        .record_stages(vec![
            stage("A-2", "RECEIVED", 0, 2_000, Some(4_000)),
            stage("A-2", "ASSESSOR_NAMED", 1, 2_000, Some(6_000)),
            stage("A-2", "NOTICE_COMPLETED", 2, 7_000, Some(7_500)),
        ])
        .await
        .unwrap();
    let got: Vec<(String, Option<i64>)> = store
        .application_stages("A-2")
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.stage, s.done_ms))
        .collect();
    assert_eq!(
        got,
        [
            ("RECEIVED".to_string(), Some(2_000)),
            ("ASSESSOR_NAMED".to_string(), Some(7_000)),
            ("NOTICE_COMPLETED".to_string(), Some(8_000)),
            ("DECIDED".to_string(), None),
        ]
    );
}

async fn open_late_and_due_stages_are_counted_per_stage(store: Store) {
    let now = 100_000;
    store
        .record_stages(vec![
            // Overdue, open.
            stage("B-1", "RECEIVED", 0, 1_000, Some(50_000)),
            // Due by the soon mark.
            stage("B-2", "RECEIVED", 0, 90_000, Some(150_000)),
            // Open, due later.
            stage("B-3", "RECEIVED", 0, 95_000, Some(500_000)),
            // Late: ended after its deadline.
            stage("B-4", "ASSESSOR_NAMED", 1, 1_000, Some(2_000)),
            stage("B-4", "NOTICE_COMPLETED", 2, 3_000, Some(900_000)),
        ])
        .await
        .unwrap();
    let counts = store.stage_counts(now, 200_000).await.unwrap();
    let of = |s: &str| counts.iter().find(|c| c.stage == s).cloned().unwrap();
    let r = of("RECEIVED");
    assert_eq!((r.open, r.overdue, r.due_soon, r.late), (3, 1, 1, 0));
    let a = of("ASSESSOR_NAMED");
    assert_eq!((a.open, a.late), (0, 1));
    assert_eq!(of("NOTICE_COMPLETED").open, 1);
    let due: Vec<String> = store
        .open_stages_due_between(i64::MIN, 200_000, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.application_id)
        .collect();
    assert_eq!(due, ["B-1", "B-2"], "by due time, the overdue first");
    let soon: Vec<String> = store
        .open_stages_due_between(now, 200_000, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.application_id)
        .collect();
    assert_eq!(soon, ["B-2"], "due from now on, not the overdue");
    let late = store.late_stages(10).await.unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(
        (late[0].application_id.as_str(), late[0].done_ms),
        ("B-4", Some(3_000))
    );
    assert!(late[0].breached(now));
}
