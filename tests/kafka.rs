//! Kafka through `tongban run`, against a real Kafka-protocol broker
//! (tansu) on 127.0.0.1.
//!
//! Sink: 100,000 records produced by the hub (Avro single-object values),
//! consumed back with a plain consumer: every record once, each key on one
//! partition in order, every value decoded with the schema its header's
//! fingerprint names.
//!
//! Source: the hub consumes a topic mid-stream, is SIGKILLed, and starts
//! again: every record is in the inbox exactly once, and values with an
//! unknown schema fingerprint are quarantined with the reason.

mod support;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::time::Duration;
use support::hub::write;
use support::kafka;

const EV: &str = r#"{"type":"record","name":"Ev","namespace":"t","fields":[{"name":"key","type":"string"},{"name":"seq","type":"long"},{"name":"name","type":"string"}]}"#;

fn common(dir: &Path) {
    write(dir, "tongban.toml", "[store]\nurl = \"sqlite://var/t.db\"\n[dispatch]\nretry_schedule = [\"100ms\", \"200ms\", \"400ms\", \"1s\", \"1s\", \"1s\", \"1s\"]\nlease = \"5s\"\n");
    write(dir, "schemas/Ev.avsc", EV);
}

fn hub(dir: &Path) -> Child {
    support::hub::run_logged(dir, &[])
}

fn sigterm(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(
        child.wait().unwrap().success(),
        "SIGTERM stops the hub cleanly"
    );
}

fn codec() -> tongban::schema::AvroCodec {
    let mut reg = tongban::schema::Registry::default();
    reg.add(EV, "Ev.avsc".into()).unwrap();
    tongban::schema::AvroCodec::new(reg.get("Ev").unwrap().clone())
}

#[tokio::test]
async fn the_sink_produces_every_record_once_in_key_order_as_avro() {
    const N: usize = 100_000;
    const KEYS: usize = 1_000;
    let brokers = kafka::brokers();
    kafka::create_topic("cards", 3).await;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    common(dir);
    write(dir, "connectors/drop.toml", "kind = \"file\"\ndirectory = \"x\"\n[operations.events]\ndirection = \"source\"\nschema = \"Ev\"\nfile_pattern = \"*.jsonl\"\npoll_interval = \"50ms\"\n");
    write(dir, "connectors/bus.toml", &format!("kind = \"kafka\"\nbrokers = \"{brokers}\"\n[operations.cards]\ndirection = \"sink\"\nschema = \"Ev\"\nformat = \"avro\"\ntopic = \"cards\"\nbatch = 1000\n"));
    write(dir, "mappings/to_bus.toml", "from = \"drop.events\"\nto = \"bus.cards\"\nas = \"e\"\nkey = \"e.key\"\n[fields]\nkey = \"e.key\"\nseq = \"e.seq\"\nname = \"e.name\"\n");
    let input: String = (0..N)
        .map(|i| {
            format!(
                "{{\"key\":\"K{}\",\"seq\":{i},\"name\":\"张三{i}\"}}\n",
                i % KEYS
            )
        })
        .collect();
    std::fs::create_dir_all(dir.join("x/in")).unwrap();
    tongban::connectors::file::write_with_checksum(&dir.join("x/in"), "a.jsonl", input.as_bytes())
        .unwrap();
    let child = hub(dir);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "checker")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["cards"]).unwrap();
    let codec = codec();
    let fp = tongban::connectors::http::sign::hex(&codec.fingerprint());
    let mut seen: HashSet<String> = HashSet::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while seen.len() < N {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {N} consumed",
            seen.len()
        );
        let m = match tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
            Ok(m) => m.unwrap(),
            Err(_) => continue,
        };
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        assert_eq!(
            tongban::connectors::kafka::header(&m, "schema-fingerprint"),
            Some(fp.as_str())
        );
        let idem = tongban::connectors::kafka::header(&m, "idempotency-key")
            .unwrap()
            .to_string();
        let rec = codec
            .decode(m.payload().unwrap())
            .expect("an Avro single-object value");
        let tongban::schema::Datum::Record(fields) = rec else {
            panic!("not a record")
        };
        let tongban::schema::Datum::Int(seq) = fields[1] else {
            panic!("seq is not a long: {fields:?}")
        };
        assert_eq!(
            fields[0],
            tongban::schema::Datum::Str(key.as_str().into()),
            "the message key is the record's ordering key"
        );
        assert_eq!(
            *partition_of.entry(key.clone()).or_insert(m.partition()),
            m.partition(),
            "key {key} on two partitions"
        );
        let l = last.entry(key.clone()).or_insert(-1);
        if seen.insert(idem) {
            assert!(seq > *l, "key {key}: {seq} after {l}");
            *l = seq;
        }
    }
    sigterm(child);
    assert_eq!(seen.len(), N);
    let parts: HashSet<i32> = partition_of.values().copied().collect();
    assert_eq!(parts.len(), 3, "keys spread over the 3 partitions");
}

#[tokio::test]
async fn the_source_stores_each_record_once_across_a_sigkill_and_quarantines_unknown_schemas() {
    const N: usize = 30_000;
    let brokers = kafka::brokers();
    kafka::create_topic("events", 3).await;
    let codec = codec();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut waits = Vec::new();
    for i in 0..N {
        let key = format!("K{}", i % 300);
        let rec = tongban::schema::Datum::Record(vec![
            tongban::schema::Datum::Str(key.as_str().into()),
            tongban::schema::Datum::Int(i as i64),
            tongban::schema::Datum::Str("李四".into()),
        ]);
        let value = codec.encode(&rec).unwrap();
        waits.push(
            producer
                .send_result(FutureRecord::to("events").key(&key).payload(&value))
                .unwrap(),
        );
        if i % 10_000 == 9_999 {
            for w in waits.drain(..) {
                w.await.unwrap().unwrap();
            }
        }
        if i == N / 2 {
            // Values of a schema the hub does not know, and not Avro at all.
            let mut other = value.clone();
            other[2..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
            for bad in [other.clone(), other, b"{\"key\":\"K1\"}".to_vec()] {
                waits.push(
                    producer
                        .send_result(FutureRecord::to("events").key("K1").payload(&bad))
                        .unwrap(),
                );
            }
        }
    }
    for w in waits {
        w.await.unwrap().unwrap();
    }

    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    common(dir);
    write(dir, "connectors/bus.toml", &format!("kind = \"kafka\"\nbrokers = \"{brokers}\"\n[operations.events]\ndirection = \"source\"\nschema = \"Ev\"\nformat = \"avro\"\ntopic = \"events\"\n"));
    write(dir, "connectors/drop.toml", "kind = \"file\"\ndirectory = \"x\"\n[operations.out]\ndirection = \"sink\"\nschema = \"Ev\"\nfile_pattern = \"*.jsonl\"\nbatch = 1000\n");
    write(dir, "mappings/from_bus.toml", "from = \"bus.events\"\nto = \"drop.out\"\nas = \"e\"\nkey = \"e.key\"\n[fields]\nkey = \"e.key\"\nseq = \"e.seq\"\nname = \"e.name\"\n");

    let mut child = hub(dir);
    let out = dir.join("x/out");
    support::eventually(
        Duration::from_secs(60),
        "the first records delivered",
        || async {
            std::fs::read_dir(&out)
                .map(|rd| rd.count() > 0)
                .unwrap_or(false)
        },
    )
    .await;
    child.kill().unwrap(); // SIGKILL mid-stream
    child.wait().unwrap();
    let store = tongban::store::Store::open("sqlite://var/t.db", dir)
        .await
        .unwrap();
    let before = store.inbox_len().await.unwrap();
    drop(store);
    eprintln!("{before} of {} records stored before the kill", N + 3);
    assert!(
        (before as usize) < N,
        "the kill came after the whole topic was read"
    );

    let child = hub(dir);
    let store = tongban::store::Store::open("sqlite://var/t.db", dir)
        .await
        .unwrap();
    support::eventually(
        Duration::from_secs(120),
        "the whole topic stored",
        || async { store.inbox_len().await.unwrap() >= (N + 3) as i64 },
    )
    .await;
    // Let it settle a moment more: nothing beyond N + 3 may appear.
    support::eventually(
        Duration::from_secs(60),
        "every message delivered",
        || async {
            store
                .messages("drop.out", tongban::store::status::DELIVERED, N + 10)
                .await
                .unwrap()
                .len()
                >= N
        },
    )
    .await;
    sigterm(child);
    assert_eq!(
        store.inbox_len().await.unwrap(),
        (N + 3) as i64,
        "each record stored once"
    );
    let q = store.quarantine("bus.events").await.unwrap();
    assert_eq!(q.len(), 3, "{q:?}");
    assert!(q.iter().all(|(_, _, r)| r.contains("fingerprint")), "{q:?}");
}
