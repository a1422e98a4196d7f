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
//!
//! Platform on a topic: the provincial platform simulator produces its
//! filed forms to a topic; the hub consumes it with the shipped application
//! feed and maps each form once, keyed by the applicant.

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
    assert!(q.iter().all(|q| q.reason.contains("fingerprint")), "{q:?}");
}

/// The provincial platform simulator offers its forms on a topic as well:
/// the hub consumes the topic with the shipped application feed (its source
/// switched to the topic), maps each form once, and quarantines a form
/// whose ID number fails its check digit.
#[tokio::test]
async fn the_platform_offers_forms_on_a_topic_and_the_hub_maps_each_once() {
    const N: usize = 300;
    let brokers = kafka::brokers();
    kafka::create_topic("forms", 3).await;
    let platform = tongban::sim::platform::Platform::publishing(None, &brokers, "forms").unwrap();
    let mut rng = tongban::synth::Rng::new(7);
    let mut ids = HashSet::new();
    let mut forms = Vec::new();
    let filed_on = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    while forms.len() < N {
        let p = tongban::synth::person(&mut rng);
        if !ids.insert(p.id.clone()) {
            continue;
        }
        forms.push(serde_json::json!({
            "application_id": format!("SX-K-{:05}", forms.len()),
            "submitted_at": "2026-11-20T09:30:00+08:00",
            "request": "NEW",
            "applicant": {"id_no": p.id, "name": p.name, "phone": "13800000000",
                          "region_code": p.region, "address": null},
            "certificate_no": null, "target_region_code": null,
            "bank": {"account_no": p.card, "bank_code": p.bank_code, "account_name": p.name},
            "dibao": "DIBAO", "needs_long_term_care": false,
            "wants_employment": false, "wants_training": false, "pension": "NONE",
            // A minor applies through a guardian (监护人).
            "guardian": tongban::synth::needs_guardian(&p, filed_on, false)
                .then(|| tongban::synth::guardian(&p)),
        }));
    }
    // One ID number with a wrong check digit.
    let mut bad = forms[0].clone();
    let id = bad["applicant"]["id_no"].as_str().unwrap().to_string();
    let last = if id.ends_with('1') { '2' } else { '1' };
    bad["applicant"]["id_no"] = format!("{}{last}", &id[..17]).into();
    bad["application_id"] = "SX-K-BAD".into();
    for f in forms.iter().chain([&bad]) {
        platform.file(&serde_json::to_vec(f).unwrap());
    }
    // The same form filed again: the inbox keeps it once.
    platform.file(&serde_json::to_vec(&forms[1]).unwrap());
    support::eventually(
        Duration::from_secs(30),
        "every form acknowledged by the topic",
        || async {
            platform
                .published
                .0
                .load(std::sync::atomic::Ordering::Relaxed)
                == (N + 2) as u64
        },
    )
    .await;
    assert_eq!(
        platform
            .published
            .1
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write(
        dir,
        "tongban.toml",
        "[store]\nurl = \"sqlite://var/t.db\"\n",
    );
    for e in std::fs::read_dir(support::root().join("schemas")).unwrap() {
        let p = e.unwrap().path();
        std::fs::create_dir_all(dir.join("schemas")).unwrap();
        std::fs::copy(&p, dir.join("schemas").join(p.file_name().unwrap())).unwrap();
    }
    let mapping = std::fs::read_to_string(
        support::root().join("mappings/application_to_cert_application.toml"),
    )
    .unwrap();
    assert!(mapping.contains("from = \"provincial_platform.applications\""));
    write(
        dir,
        "mappings/application_to_cert_application.toml",
        &mapping
            .replace(
                "from = \"provincial_platform.applications\"",
                "from = \"platform_bus.applications\"",
            )
            .replace(
                "to   = \"national_cert.submit_application\"",
                "to   = \"drop.out\"",
            ),
    );
    write(dir, "connectors/platform_bus.toml", &format!("kind = \"kafka\"\nbrokers = \"{brokers}\"\n[operations.applications]\ndirection = \"source\"\nschema = \"OneApplication\"\nformat = \"json\"\ntopic = \"forms\"\nid_field = \"application_id\"\n"));
    write(dir, "connectors/drop.toml", "kind = \"file\"\ndirectory = \"x\"\n[operations.out]\ndirection = \"sink\"\nschema = \"CertificateApplication\"\nfile_pattern = \"*.jsonl\"\nbatch = 1000\n");

    let child = hub(dir);
    let out = dir.join("x/out");
    let lines = || {
        let mut v = Vec::new();
        for e in std::fs::read_dir(&out).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.extension().and_then(|x| x.to_str()) == Some("jsonl") {
                for l in std::fs::read_to_string(&p).unwrap().lines() {
                    v.push(serde_json::from_str::<serde_json::Value>(l).unwrap());
                }
            }
        }
        v
    };
    support::eventually(
        Duration::from_secs(60),
        "every good form mapped to a certificate application",
        || async { lines().len() >= N },
    )
    .await;
    sigterm(child);
    let apps = lines();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for a in &apps {
        let r = &a["record"];
        // Ordered per person: the key is the applicant's ID number.
        assert_eq!(a["key"], r["id_no"], "{a}");
        *seen
            .entry(r["application_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(apps.len(), N, "each good form once");
    for (i, f) in forms.iter().enumerate() {
        let app_id = f["application_id"].as_str().unwrap();
        assert_eq!(seen.get(app_id), Some(&1), "form {i} mapped once");
    }
    let store = tongban::store::Store::open("sqlite://var/t.db", dir)
        .await
        .unwrap();
    assert_eq!(
        store.inbox_len().await.unwrap(),
        (N + 1) as i64,
        "the form filed twice is stored once"
    );
    let q = store.quarantine("platform_bus.applications").await.unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(q[0].reason.contains("check character"), "{}", q[0].reason);
}
