//! The dispatcher: for each target, claims due messages from the store (at
//! most one per key, so one person's messages stay in order), delivers them
//! through the target's sink within its concurrency and rate limits,
//! records every attempt, and settles each message as delivered, retried
//! later or dead, in one batch per round. A circuit breaker stops it from
//! hammering a target that is down; one slow or dead target never holds up
//! another, because each target runs in a task of its own.
//!
//! Layer 3: uses only the store's `Queue` (claim, settle), the domain and
//! synth (jitter).

pub mod breaker;
pub mod failure;
pub mod retry;

use crate::store::{Attempt, Claimed, Outcome, Queue, Settle, StoreError};
use breaker::{Breaker, BreakerConfig, Permit};
use failure::{Class, DeliveryError};
use futures::future::BoxFuture;
use retry::RetryPolicy;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A successful delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// HTTP status or similar.
    pub status_code: Option<u16>,
    /// Anything worth keeping from the answer (masked).
    pub excerpt: Option<String>,
    /// SHA-256 (hex) of the answer's body, where there is one (for the
    /// exchange log).
    pub response_sha256: Option<String>,
}

/// Where a target's messages go: one kind per connector kind.
pub trait Sink: Send + Sync {
    /// Delivers one message, carrying its idempotency key.
    fn deliver<'a>(&'a self, m: &'a Claimed) -> BoxFuture<'a, Result<Delivered, DeliveryError>>;

    /// How many messages one delivery may carry; above 1 the dispatcher
    /// calls [`Sink::deliver_batch`].
    fn max_batch(&self) -> usize {
        1
    }

    /// Delivers several messages (of different keys) at once; they succeed
    /// or fail together, each still carrying its own idempotency key.
    fn deliver_batch<'a>(
        &'a self,
        ms: &'a [Claimed],
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            let mut last = Delivered::default();
            for m in ms {
                last = self.deliver(m).await?;
            }
            Ok(last)
        })
    }

    /// Delivers several messages at once, each with its own outcome (a
    /// receiver that refuses one of them and takes the others). By
    /// default, the outcome of [`Sink::deliver_batch`] for each.
    fn deliver_each<'a>(
        &'a self,
        ms: &'a [Claimed],
    ) -> BoxFuture<'a, Vec<Result<Delivered, DeliveryError>>> {
        Box::pin(async move {
            let r = self.deliver_batch(ms).await;
            vec![r; ms.len()]
        })
    }
}

/// How one target is dispatched.
#[derive(Clone, Debug)]
pub struct TargetSettings {
    /// `connector.operation`.
    pub target: String,
    /// Deliveries in flight at once (also the claim batch size).
    pub concurrency: usize,
    /// Sustained deliveries per second, if limited.
    pub rate_per_second: Option<NonZeroU32>,
    /// Burst allowance of the rate limit.
    pub burst: Option<NonZeroU32>,
    /// Retries.
    pub retry: RetryPolicy,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// How long a claim lasts; longer than the sink's timeout.
    pub lease: Duration,
    /// Pause between polls when nothing is due.
    pub idle_poll: Duration,
}

impl TargetSettings {
    /// Defaults for a target.
    pub fn new(target: &str) -> Self {
        TargetSettings {
            target: target.to_string(),
            concurrency: 16,
            rate_per_second: None,
            burst: None,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            lease: Duration::from_secs(60),
            idle_poll: Duration::from_millis(200),
        }
    }
}

/// Counters of one target, readable while it runs.
#[derive(Debug, Default)]
pub struct TargetStats {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Messages delivered.
    pub delivered: AtomicU64,
    /// Attempts that failed and will be retried.
    pub retried: AtomicU64,
    /// Messages that went dead.
    pub dead: AtomicU64,
    /// The breaker: 0 closed, 1 open, 2 half-open.
    pub breaker: std::sync::atomic::AtomicU8,
    /// Request durations.
    pub latency: Histogram,
}

/// Upper bounds of the request-duration buckets, in ms.
pub const LATENCY_BUCKETS_MS: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000,
];

/// A histogram of request durations (Prometheus buckets: each counts the
/// requests at or under its bound).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bound of [`LATENCY_BUCKETS_MS`], then the rest.
    pub buckets: [AtomicU64; 13],
    /// Sum of the durations, in µs.
    pub sum_us: AtomicU64,
    /// Number of requests.
    pub count: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let ms = d.as_millis() as u64;
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs one target until `shutdown` turns true. In-flight deliveries finish
/// and are settled before it returns.
///
/// The target's concurrency is shared among up to [`LANES`] lanes, each a
/// loop of claim → deliver → settle, so that one slow request holds back
/// only its own lane's round. The lanes share the rate limit and the
/// breaker; leases keep them apart, as they keep hubs apart.
pub async fn run_target(
    store: Arc<dyn Queue>,
    sink: Arc<dyn Sink>,
    s: TargetSettings,
    stats: Arc<TargetStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    use governor::{Quota, RateLimiter};
    let limiter = Arc::new(s.rate_per_second.map(|r| {
        let q = Quota::per_second(r).allow_burst(s.burst.unwrap_or(r));
        RateLimiter::direct(q)
    }));
    let breaker = Arc::new(std::sync::Mutex::new(Breaker::new(s.breaker.clone())));
    let total = s.concurrency.max(1);
    let lanes = total.min(LANES);
    let mut handles = Vec::with_capacity(lanes);
    for lane in 0..lanes {
        let share = total / lanes + usize::from(lane < total % lanes);
        handles.push(tokio::spawn(run_lane(
            store.clone(),
            sink.clone(),
            s.clone(),
            share,
            lane as u64,
            limiter.clone(),
            breaker.clone(),
            stats.clone(),
            shutdown.clone(),
        )));
    }
    let mut first_error = Ok(());
    for h in handles {
        let r = h
            .await
            .map_err(|e| StoreError::Task(e.to_string()))
            .and_then(|r| r);
        if first_error.is_ok() {
            first_error = r;
        }
    }
    first_error
}

/// Most lanes per target.
pub const LANES: usize = 4;

type Limiter = governor::DefaultDirectRateLimiter;

#[allow(clippy::too_many_arguments)]
async fn run_lane(
    store: Arc<dyn Queue>,
    sink: Arc<dyn Sink>,
    s: TargetSettings,
    concurrency: usize,
    lane: u64,
    limiter: Arc<Option<Limiter>>,
    breaker: Arc<std::sync::Mutex<Breaker>>,
    stats: Arc<TargetStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let mut rng = crate::synth::Rng::new(
        crate::store::now_ms() as u64 ^ hash(&s.target) ^ lane.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut store_failures = 0u32;
    let mut recording = None;
    loop {
        if *shutdown.borrow() {
            return finish(&mut recording).await;
        }
        let per = sink.max_batch().max(1);
        let permit = breaker.lock().unwrap().acquire(Instant::now());
        let limit = match permit {
            Permit::Flow => concurrency * per,
            Permit::Probe => 1,
            Permit::Wait(until) => {
                wait(
                    &mut shutdown,
                    until.saturating_duration_since(Instant::now()),
                )
                .await;
                continue;
            }
        };
        let claimed = match store.claim(&s.target, limit, s.lease).await {
            Ok(c) => {
                store_failures = 0;
                c
            }
            Err(e) => {
                if permit == Permit::Probe {
                    breaker.lock().unwrap().unprobe();
                }
                // The store is unreachable (a restart, say): back off and try again.
                store_failures += 1;
                tracing::warn!(target_name = %s.target, error = %e, "Claiming failed; retrying");
                wait(&mut shutdown, backoff(store_failures)).await;
                continue;
            }
        };
        if claimed.is_empty() {
            if permit == Permit::Probe {
                breaker.lock().unwrap().unprobe();
            }
            if recording.is_some() {
                // The last round's keys come free once it is recorded.
                finish(&mut recording).await?;
            } else {
                wait(&mut shutdown, s.idle_poll).await;
            }
            continue;
        }
        // One delivery per message, or per chunk of `per` messages.
        let deliveries = claimed.chunks(per).map(|chunk| {
            let (sink, limiter) = (&sink, limiter.as_ref());
            async move {
                if let Some(l) = limiter {
                    let n = NonZeroU32::new(chunk.len() as u32).unwrap_or(NonZeroU32::MIN);
                    // A chunk larger than the burst could never pass: take it one by one.
                    if l.until_n_ready(n).await.is_err() {
                        for _ in 0..chunk.len() {
                            l.until_ready().await;
                        }
                    }
                }
                let at = crate::store::now_ms();
                let t0 = Instant::now();
                let r = if chunk.len() == 1 {
                    vec![sink.deliver(&chunk[0]).await]
                } else {
                    sink.deliver_each(chunk).await
                };
                (r, at, t0.elapsed())
            }
        });
        let results = futures::future::join_all(deliveries).await;
        let now = Instant::now();
        let mut settles = Vec::with_capacity(claimed.len());
        let mut per_message = Vec::with_capacity(claimed.len());
        {
            let mut breaker = breaker.lock().unwrap();
            for (chunk, r) in claimed.chunks(per).zip(results) {
                // The breaker counts requests, not the messages they carried. A
                // permanent refusal is an answer: the receiver is up.
                stats.requests.fetch_add(1, Ordering::Relaxed);
                stats.latency.observe(r.2);
                let down =
                    r.0.iter()
                        .any(|r| matches!(r, Err(e) if e.class() == Class::Transient));
                match down {
                    true => breaker.failure(now),
                    false => breaker.success(),
                }
                let (at, took) = (r.1, r.2);
                per_message.extend(chunk.iter().zip(r.0).map(|(m, r)| (m, (r, at, took))));
            }
            stats.breaker.store(
                match breaker.state(now) {
                    breaker::State::Closed => 0,
                    breaker::State::Open => 1,
                    breaker::State::HalfOpen => 2,
                },
                Ordering::Relaxed,
            );
        }
        for (m, (r, at, took)) in per_message {
            let mut attempt = Attempt {
                at,
                duration_ms: took.as_millis() as i64,
                ..Default::default()
            };
            let outcome = match r {
                Ok(d) => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    attempt.status_code = d.status_code.map(i64::from);
                    attempt.excerpt = d.excerpt;
                    attempt.response_sha256 = d.response_sha256;
                    Outcome::Delivered
                }
                Err(e) => {
                    attempt.status_code = e.status().map(i64::from);
                    attempt.error_class = Some(e.error_class());
                    attempt.excerpt = Some(e.to_string());
                    match e.class() {
                        Class::Permanent => {
                            stats.dead.fetch_add(1, Ordering::Relaxed);
                            Outcome::Dead {
                                reason: format!("refused for good: {e}"),
                            }
                        }
                        Class::Transient => {
                            let failed = m.attempts as usize + 1;
                            let jitter = (rng.next_u64() % 1_000_001) as u32;
                            match s.retry.next_delay(failed, e.retry_after(), jitter) {
                                Some(d) => {
                                    stats.retried.fetch_add(1, Ordering::Relaxed);
                                    Outcome::Retry {
                                        at: crate::store::now_ms() + d.as_millis() as i64,
                                    }
                                }
                                None => {
                                    stats.dead.fetch_add(1, Ordering::Relaxed);
                                    Outcome::Dead {
                                        reason: format!(
                                            "gave up after {failed} attempts; the last: {e}"
                                        ),
                                    }
                                }
                            }
                        }
                    }
                }
            };
            settles.push(Settle {
                id: m.id,
                target: m.target.clone(),
                key: m.key.clone(),
                lease: m.lease,
                outcome,
                attempt,
            });
        }
        // Record this round while the next one is claimed and delivered:
        // its keys stay leased until then, so nothing of theirs is claimed
        // early. At most one round is being recorded at a time.
        finish(&mut recording).await?;
        let (store, target, lease) = (store.clone(), s.target.clone(), s.lease);
        recording = Some(tokio::spawn(record(store, target, lease, settles)));
    }
}

/// Waits for the round being recorded, if any.
async fn finish(
    recording: &mut Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
) -> Result<(), StoreError> {
    match recording.take() {
        None => Ok(()),
        Some(h) => h.await.map_err(|e| StoreError::Task(e.to_string()))?,
    }
}

/// The deliveries happened: keep trying to record them while the leases
/// last (after that, the messages go again with the same idempotency keys,
/// and receivers drop the repeats).
async fn record(
    store: Arc<dyn Queue>,
    target: String,
    lease: Duration,
    settles: Vec<Settle>,
) -> Result<(), StoreError> {
    let deadline = Instant::now() + lease;
    let mut tries = 0;
    loop {
        match store.settle(settles.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tries += 1;
                tracing::warn!(target_name = %target, error = %e, "Settling failed; retrying");
                tokio::time::sleep(backoff(tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn backoff(n: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << n.min(6)))
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

async fn wait(shutdown: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    //! The dispatcher over an in-memory [`Queue`]: what it does with each
    //! kind of answer, without a database. The same behaviour over the real
    //! stores is tested in tests/dispatch_http.rs and the crash tests.
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;

    /// Messages of one target, claimed one per key in id order, as the
    /// stores do; settles are recorded.
    #[derive(Default)]
    struct MemQueue {
        /// (message, due at ms) by id.
        pending: Mutex<Vec<(Claimed, i64)>>,
        /// Keys with a message out.
        out: Mutex<HashSet<String>>,
        /// Keys parked by a dead message.
        parked: Mutex<HashSet<String>>,
        settled: Mutex<Vec<Settle>>,
    }

    impl MemQueue {
        fn with(messages: &[(i64, &str)]) -> Self {
            let q = MemQueue::default();
            for (id, key) in messages {
                q.pending.lock().unwrap().push((
                    Claimed {
                        id: *id,
                        target: "t.op".into(),
                        key: key.to_string(),
                        idem_key: format!("idem-{id}"),
                        payload: format!("{{\"n\":{id}}}").into_bytes(),
                        attempts: 0,
                        lease: 1,
                    },
                    0,
                ));
            }
            q
        }
    }

    impl Queue for MemQueue {
        fn claim<'a>(
            &'a self,
            _target: &'a str,
            limit: usize,
            _lease: Duration,
        ) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
            Box::pin(async move {
                let now = crate::store::now_ms();
                let pending = self.pending.lock().unwrap();
                let mut out = self.out.lock().unwrap();
                let parked = self.parked.lock().unwrap();
                let mut firsts: HashMap<&str, &(Claimed, i64)> = HashMap::new();
                for p in pending.iter() {
                    firsts.entry(p.0.key.as_str()).or_insert(p);
                }
                let mut due: Vec<Claimed> = firsts
                    .into_values()
                    .filter(|(m, at)| {
                        *at <= now && !out.contains(&m.key) && !parked.contains(&m.key)
                    })
                    .map(|(m, _)| m.clone())
                    .collect();
                due.sort_by_key(|m| m.id);
                due.truncate(limit);
                out.extend(due.iter().map(|m| m.key.clone()));
                Ok(due)
            })
        }

        fn settle(&self, settles: Vec<Settle>) -> BoxFuture<'_, Result<usize, StoreError>> {
            Box::pin(async move {
                let mut pending = self.pending.lock().unwrap();
                for s in &settles {
                    self.out.lock().unwrap().remove(&s.key);
                    let i = pending.iter().position(|(m, _)| m.id == s.id).unwrap();
                    match &s.outcome {
                        Outcome::Delivered => {
                            pending.remove(i);
                        }
                        Outcome::Retry { at } => {
                            pending[i].1 = *at;
                            pending[i].0.attempts += 1;
                        }
                        Outcome::Dead { .. } => {
                            self.parked.lock().unwrap().insert(s.key.clone());
                        }
                    }
                }
                self.settled.lock().unwrap().extend(settles.iter().cloned());
                Ok(settles.len())
            })
        }
    }

    /// Fails message 1's first attempt with a 503, refuses message 3 for
    /// good with a 422, delivers the rest; keeps the order of deliveries.
    #[derive(Default)]
    struct Scripted {
        delivered: Mutex<Vec<i64>>,
        tried_1: std::sync::atomic::AtomicBool,
    }

    impl Sink for Scripted {
        fn deliver<'a>(
            &'a self,
            m: &'a Claimed,
        ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
            Box::pin(async move {
                let status = |status| DeliveryError::Status {
                    status,
                    retry_after: None,
                    excerpt: String::new(),
                };
                match m.id {
                    1 if !self.tried_1.swap(true, Ordering::SeqCst) => Err(status(503)),
                    3 => Err(status(422)),
                    id => {
                        self.delivered.lock().unwrap().push(id);
                        Ok(Delivered::default())
                    }
                }
            })
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_parks_a_refused_key_and_keeps_key_order() {
        // Key a: 1, 2 (1 fails once); key b: 3, 4 (3 refused for good);
        // key c: 5, 6.
        let q = Arc::new(MemQueue::with(&[
            (1, "a"),
            (2, "a"),
            (3, "b"),
            (4, "b"),
            (5, "c"),
            (6, "c"),
        ]));
        let sink = Arc::new(Scripted::default());
        let mut s = TargetSettings::new("t.op");
        s.concurrency = 4;
        s.idle_poll = Duration::from_millis(5);
        s.retry = RetryPolicy {
            schedule: vec![Duration::from_millis(20)],
            jitter_percent: 0,
            ..RetryPolicy::default()
        };
        let stats = Arc::new(TargetStats::default());
        let (stop, watch) = watch::channel(false);
        let task = tokio::spawn(run_target(q.clone(), sink.clone(), s, stats.clone(), watch));
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.delivered.lock().unwrap().len() < 4 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stop.send(true);
        task.await.unwrap().unwrap();

        let delivered = sink.delivered.lock().unwrap().clone();
        let at = |id| delivered.iter().position(|d| *d == id);
        assert_eq!(delivered.len(), 4, "{delivered:?}");
        assert!(at(1) < at(2) && at(5) < at(6), "key order: {delivered:?}");
        assert_eq!(at(4), None, "key b is parked behind its dead message 3");
        let settled = q.settled.lock().unwrap();
        let of = |id| -> Vec<&Outcome> {
            settled
                .iter()
                .filter(|s| s.id == id)
                .map(|s| &s.outcome)
                .collect()
        };
        assert!(
            matches!(of(1)[..], [Outcome::Retry { .. }, Outcome::Delivered]),
            "{:?}",
            of(1)
        );
        match of(3)[..] {
            [Outcome::Dead { reason }] => assert!(reason.contains("HTTP 422"), "{reason}"),
            ref other => panic!("message 3: {other:?}"),
        }
        let attempt = &settled.iter().find(|s| s.id == 3).unwrap().attempt;
        assert_eq!(attempt.status_code, Some(422));
        assert_eq!(attempt.error_class.as_deref(), Some("http_422"));
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 4);
        assert_eq!(stats.retried.load(Ordering::Relaxed), 1);
        assert_eq!(stats.dead.load(Ordering::Relaxed), 1);
    }
}
