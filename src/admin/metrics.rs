//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of the outbox
//! (messages by target and state, age of the oldest pending message,
//! paused targets, quarantine) and of this process's dispatchers (requests,
//! deliveries, retries, dead letters, breaker state, request durations).
//! Labels carry target and feed names only, never personal data.

use super::{Admin, Role};
use crate::dispatch::LATENCY_BUCKETS_MS;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// A label value, escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics text.
pub async fn render(a: &Admin) -> Result<String, crate::store::StoreError> {
    let targets = a.store.targets().await?;
    // Only the quarantine counts: `Store::counts` would also join every
    // attempt to count retries, on every scrape.
    let quarantined = a.store.quarantine_counts().await?;
    let now = crate::store::now_ms();
    let mut o = String::with_capacity(4096);
    let w = &mut o;
    let _ = writeln!(
        w,
        "# HELP tongban_messages Messages in the outbox by target and state."
    );
    let _ = writeln!(w, "# TYPE tongban_messages gauge");
    for t in &targets {
        for (st, n) in [
            ("pending", t.pending),
            ("delivered", t.delivered),
            ("dead", t.dead),
            ("skipped", t.skipped),
        ] {
            let _ = writeln!(
                w,
                "tongban_messages{{target=\"{}\",status=\"{st}\"}} {n}",
                label(&t.target)
            );
        }
    }
    let _ = writeln!(
        w,
        "# HELP tongban_oldest_pending_age_seconds Age of the oldest message waiting, per target."
    );
    let _ = writeln!(w, "# TYPE tongban_oldest_pending_age_seconds gauge");
    for t in &targets {
        let age = t.oldest_pending_at.map_or(0, |at| (now - at).max(0));
        let _ = writeln!(
            w,
            "tongban_oldest_pending_age_seconds{{target=\"{}\"}} {}.{:03}",
            label(&t.target),
            age / 1000,
            age % 1000
        );
    }
    let _ = writeln!(
        w,
        "# HELP tongban_target_paused 1 while an operator has paused the target."
    );
    let _ = writeln!(w, "# TYPE tongban_target_paused gauge");
    for t in &targets {
        let _ = writeln!(
            w,
            "tongban_target_paused{{target=\"{}\"}} {}",
            label(&t.target),
            u8::from(t.paused)
        );
    }
    let _ = writeln!(
        w,
        "# HELP tongban_quarantined Source records a feed could not map."
    );
    let _ = writeln!(w, "# TYPE tongban_quarantined gauge");
    for q in &quarantined {
        let _ = writeln!(
            w,
            "tongban_quarantined{{source=\"{}\",mapping=\"{}\"}} {}",
            label(&q.source),
            label(&q.mapping),
            q.records
        );
    }
    if let Some(d) = &a.deadlines {
        let soon = crate::connectors::deadlines::soon_ms(d, now);
        let counts = a.store.stage_counts(now, soon).await?;
        type Of = fn(&crate::store::StageCount) -> i64;
        let gauges: [(&str, &str, Of); 4] = [
            (
                "tongban_applications_open",
                "Certificate applications open in a stage with a deadline.",
                |c| c.open,
            ),
            (
                "tongban_applications_overdue",
                "Certificate applications past the deadline of their stage (working days).",
                |c| c.overdue,
            ),
            (
                "tongban_applications_due_soon",
                "Certificate applications whose stage is due by the end of the next working day.",
                |c| c.due_soon,
            ),
            (
                "tongban_application_stages_late",
                "Stages of certificate applications that ended after their deadline.",
                |c| c.late,
            ),
        ];
        for (name, help, f) in gauges {
            let _ = writeln!(w, "# HELP {name} {help}");
            let _ = writeln!(w, "# TYPE {name} gauge");
            for stage in crate::connectors::deadlines::settings::STAGES {
                let n = counts.iter().find(|c| c.stage == stage).map_or(0, f);
                if d.rules.contains_key(stage) {
                    let _ = writeln!(w, "{name}{{stage=\"{stage}\"}} {n}");
                }
            }
        }
    }
    type Counter = fn(&crate::dispatch::TargetStats) -> u64;
    let counters: [(&str, &str, Counter); 4] = [
        (
            "tongban_requests_total",
            "Delivery requests sent (attempts) by this process.",
            |s| s.requests.load(Relaxed),
        ),
        (
            "tongban_delivered_total",
            "Messages delivered by this process.",
            |s| s.delivered.load(Relaxed),
        ),
        (
            "tongban_retried_total",
            "Failed attempts that will be retried.",
            |s| s.retried.load(Relaxed),
        ),
        (
            "tongban_dead_total",
            "Messages that went dead in this process.",
            |s| s.dead.load(Relaxed),
        ),
    ];
    for (name, help, f) in counters {
        let _ = writeln!(w, "# HELP {name} {help}");
        let _ = writeln!(w, "# TYPE {name} counter");
        for (t, s) in &a.served {
            let _ = writeln!(w, "{name}{{target=\"{}\"}} {}", label(&t.to_string()), f(s));
        }
    }
    let _ = writeln!(
        w,
        "# HELP tongban_breaker_state Circuit breaker: 0 closed, 1 open, 2 half-open."
    );
    let _ = writeln!(w, "# TYPE tongban_breaker_state gauge");
    for (t, s) in &a.served {
        let _ = writeln!(
            w,
            "tongban_breaker_state{{target=\"{}\"}} {}",
            label(&t.to_string()),
            s.breaker.load(Relaxed)
        );
    }
    let _ = writeln!(
        w,
        "# HELP tongban_delivery_duration_seconds Duration of delivery requests."
    );
    let _ = writeln!(w, "# TYPE tongban_delivery_duration_seconds histogram");
    for (t, s) in &a.served {
        let t = label(&t.to_string());
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += s.latency.buckets[i].load(Relaxed);
            let _ = writeln!(
                w,
                "tongban_delivery_duration_seconds_bucket{{target=\"{t}\",le=\"{}.{:03}\"}} {cumulative}",
                bound / 1000,
                bound % 1000
            );
        }
        let count = s.latency.count.load(Relaxed);
        let _ = writeln!(
            w,
            "tongban_delivery_duration_seconds_bucket{{target=\"{t}\",le=\"+Inf\"}} {count}"
        );
        let sum = s.latency.sum_us.load(Relaxed);
        let _ = writeln!(
            w,
            "tongban_delivery_duration_seconds_sum{{target=\"{t}\"}} {}.{:06}",
            sum / 1_000_000,
            sum % 1_000_000
        );
        let _ = writeln!(
            w,
            "tongban_delivery_duration_seconds_count{{target=\"{t}\"}} {count}"
        );
    }
    Ok(o)
}

/// `GET /metrics` (viewer).
pub async fn serve(State(a): State<Arc<Admin>>, h: HeaderMap) -> super::Reply {
    a.caller(&h, Role::Viewer).await?;
    let text = render(&a).await.map_err(super::store_error)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
