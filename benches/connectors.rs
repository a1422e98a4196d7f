//! Sinks measured against their baselines, in the same run:
//!
//! - **Kafka**: `KafkaSink` (stored JSON payload → Avro single-object value,
//!   idempotency-key and fingerprint headers, batches of 1,000 awaited
//!   together) against a bare rdkafka `FutureProducer` with the same
//!   settings sending the same, already encoded messages; then the whole
//!   dispatcher draining the same messages from the SQLite store into
//!   Kafka. Broker: tansu on 127.0.0.1 (in-memory), as in the tests.
//! - **HTTP push**: `HttpSink`, one request per message, 64 requests in
//!   flight over keep-alive connections, to an axum receiver on
//!   127.0.0.1; requests per second and latency p50 / p99.
//!
//! ```text
//! cargo bench --bench connectors                          # both
//! TONGBAN_BENCH_ONLY=kafka cargo bench --bench connectors # or http
//! TONGBAN_BENCH_MESSAGES=500000 cargo bench --bench connectors
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tongban::dispatch::Sink;
use tongban::schema::{AvroCodec, Registry, Type};
use tongban::store::Claimed;

const SCHEMA: &str = r#"{"type":"record","name":"CardLoad","namespace":"t","fields":[{"name":"request_id","type":"string"},{"name":"social_security_no","type":"string"},{"name":"name","type":"string"},{"name":"certificate_no","type":"string"},{"name":"category","type":"int"},{"name":"level","type":"int"},{"name":"valid_until","type":"string"}]}"#;

fn messages(n: usize) -> Vec<Claimed> {
    (0..n)
        .map(|i| Claimed {
            id: i as i64 + 1,
            target: "bus.cards".into(),
            key: format!("11010519900307{:04}", i % 5000),
            idem_key: format!("{:032x}", i * 7919),
            payload: format!(
                "{{\"request_id\":\"EV-{i}\",\"social_security_no\":\"110105199003070017\",\"name\":\"张三\",\"certificate_no\":\"11010519900307001741\",\"category\":4,\"level\":1,\"valid_until\":\"20361102\"}}"
            )
            .into_bytes(),
            attempts: 0,
            lease: 1,
        })
        .collect()
}

fn codec() -> (AvroCodec, Type) {
    let mut reg = Registry::default();
    reg.add(SCHEMA, "CardLoad.avsc".into()).unwrap();
    let s = reg.get("CardLoad").unwrap().clone();
    (AvroCodec::new(s.clone()), Type::Record(s.record.clone()))
}

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// The bare producer: the same keys, values and headers, encoded beforehand.
async fn bare(brokers: &str, topic: &str, ms: &[Claimed]) -> f64 {
    let (codec, ty) = codec();
    let encoded: Vec<Vec<u8>> = ms
        .iter()
        .map(|m| {
            codec
                .encode(&tongban::schema::decode_json(&m.payload, &ty).unwrap())
                .unwrap()
        })
        .collect();
    let fp = tongban::connectors::http::sign::hex(&codec.fingerprint());
    let p = producer(brokers);
    let t = Instant::now();
    for (chunk, values) in ms.chunks(1000).zip(encoded.chunks(1000)) {
        let mut waits = Vec::with_capacity(chunk.len());
        for (m, v) in chunk.iter().zip(values) {
            let h = OwnedHeaders::new()
                .insert(Header {
                    key: "idempotency-key",
                    value: Some(m.idem_key.as_bytes()),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some("avro/binary".as_bytes()),
                })
                .insert(Header {
                    key: "schema-fingerprint",
                    value: Some(fp.as_bytes()),
                });
            let mut rec = FutureRecord::to(topic)
                .key(m.key.as_bytes())
                .payload(v)
                .headers(h);
            loop {
                match p.send_result(rec) {
                    Ok(w) => {
                        waits.push(w);
                        break;
                    }
                    Err((_, r)) => {
                        rec = r;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
        }
        for w in waits {
            w.await.unwrap().unwrap();
        }
    }
    ms.len() as f64 / t.elapsed().as_secs_f64()
}

/// `KafkaSink`, batches of 1,000 as the dispatcher hands them over.
async fn sink(brokers: &str, topic: &str, ms: &[Claimed]) -> f64 {
    let s = tongban::connectors::kafka::KafkaSink::new(
        brokers,
        topic,
        Some(codec()),
        1000,
        Duration::from_secs(30),
    )
    .unwrap();
    let t = Instant::now();
    for chunk in ms.chunks(1000) {
        s.deliver_batch(chunk).await.unwrap();
    }
    ms.len() as f64 / t.elapsed().as_secs_f64()
}

/// The dispatcher draining the same messages from the SQLite store.
async fn dispatched(brokers: &str, topic: &str, n: usize) -> f64 {
    use tongban::store::{Ingest, NewMessage, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(
            &format!("sqlite://{}", dir.path().join("b.db").display()),
            dir.path(),
        )
        .await
        .unwrap(),
    );
    for (c, chunk) in messages(n).chunks(1000).enumerate() {
        let batch = chunk
            .iter()
            .map(|m| Ingest {
                source: "bench.src".into(),
                source_id: format!("{c}-{}", m.id),
                record: b"{}".to_vec(),
                messages: vec![NewMessage {
                    mapping: "bench".into(),
                    target: "bus.cards".into(),
                    key: m.key.clone(),
                    payload: m.payload.clone(),
                    idem_key: None,
                }],
                quarantine: vec![],
                cursor: None,
            })
            .collect();
        store.ingest(batch).await.unwrap();
    }
    let sink = Arc::new(
        tongban::connectors::kafka::KafkaSink::new(
            brokers,
            topic,
            Some(codec()),
            1000,
            Duration::from_secs(30),
        )
        .unwrap(),
    );
    let mut settings = tongban::dispatch::TargetSettings::new("bus.cards");
    settings.concurrency = 1000;
    let stats = Arc::new(tongban::dispatch::TargetStats::default());
    let (stop, watch) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    let task = tokio::spawn(tongban::dispatch::run_target(
        store.clone(),
        sink,
        settings,
        stats.clone(),
        watch,
    ));
    while stats.delivered.load(std::sync::atomic::Ordering::Relaxed) < n as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    rate
}

async fn kafka(n: usize) {
    let brokers = support::kafka::brokers();
    for t in ["bare", "sink", "dispatched"] {
        support::kafka::create_topic(t, 3).await;
    }
    let ms = messages(n);
    // Warm the broker and the connections up.
    bare(&brokers, "bare", &ms[..n.min(10_000)]).await;
    let mut rows = Vec::new();
    for round in 1..=3 {
        let b = bare(&brokers, "bare", &ms).await;
        let s = sink(&brokers, "sink", &ms).await;
        println!(
            "kafka round {round}: bare rdkafka producer {b:>9.0} msg/s   KafkaSink {s:>9.0} msg/s   ({:.0} %)",
            100.0 * s / b
        );
        rows.push((b, s));
    }
    let d = dispatched(&brokers, "dispatched", n).await;
    println!("kafka: dispatcher from the SQLite store into Kafka {d:>9.0} msg/s ({n} messages)");
}

async fn http(n: usize) {
    use axum::{routing::post, Router};
    let app = Router::new().route("/deliver", post(|| async { "ok" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/deliver", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let sink = Arc::new(
        tongban::connectors::http::HttpSink::new(&url, "POST", Duration::from_secs(10)).unwrap(),
    );
    let ms = Arc::new(messages(n));
    for round in 1..=3 {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (sink, ms, next) = (sink.clone(), ms.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= ms.len() {
                        return lat;
                    }
                    let t = Instant::now();
                    sink.deliver(&ms[i]).await.unwrap();
                    lat.push(t.elapsed());
                }
            }));
        }
        let mut lat = Vec::with_capacity(n);
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let secs = t.elapsed().as_secs_f64();
        lat.sort();
        let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
        println!(
            "http round {round}: {n} requests, 64 in flight: {:>7.0} requests/s   p50 {:?}   p99 {:?}",
            n as f64 / secs,
            p(0.50),
            p(0.99)
        );
    }
}

fn main() {
    let n: usize = std::env::var("TONGBAN_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let only = std::env::var("TONGBAN_BENCH_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if only.is_empty() || only == "kafka" {
            kafka(n).await;
        }
        if only.is_empty() || only == "http" {
            http(n).await;
        }
    });
}
