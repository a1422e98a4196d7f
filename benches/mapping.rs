//! Mapping throughput: the shipped certificate-issued → card-load feed,
//! compiled from CEL, against the same mapping written by hand in Rust over
//! `serde_json::Value`, on 100k generated records (already parsed), and the
//! time to load and check all shipped configuration.
//!
//! `cargo bench --bench mapping`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::hint::black_box;
use tongban::config::Config;
use tongban::domain::{CertificateNo, ResidentId};
use tongban::mapping::Outcome;
use tongban::synth::{issued_event, person, Rng};

const N: usize = 100_000;

fn events() -> Vec<Value> {
    let mut rng = Rng::new(42);
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
    (0..N as u64)
        .map(|i| {
            let p = person(&mut rng);
            issued_event(&mut rng, &p, i, day)
        })
        .collect()
}

/// The feed, by hand: the same filter, validations, lookups and formatting.
fn by_hand(e: &Value, categories: &HashMap<String, String>) -> Result<Option<Value>, String> {
    let kind = e["kind"].as_str().ok_or("kind")?;
    if !matches!(
        kind,
        "ISSUED" | "RENEWED" | "REISSUED" | "MIGRATED" | "CATEGORY_CHANGED" | "LEVEL_CHANGED"
    ) {
        return Ok(None);
    }
    let holder = e["holder_id"].as_str().ok_or("holder_id")?;
    ResidentId::parse(holder).map_err(|e| e.to_string())?;
    let cert_no = e["certificate_no"].as_str().ok_or("certificate_no")?;
    let cert = CertificateNo::parse(cert_no).map_err(|e| e.to_string())?;
    let name = e["holder_name"].as_str().ok_or("holder_name")?.trim();
    let category = cert.category();
    let category_name = categories.get(&category.to_string()).ok_or("category")?;
    let valid = chrono::NaiveDate::parse_from_str(
        e["valid_until"].as_str().ok_or("valid_until")?,
        "%Y-%m-%d",
    )
    .map_err(|e| e.to_string())?;
    let application_id = e
        .get("application")
        .and_then(|a| a.get("application_id"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut out = Map::new();
    out.insert("request_id".into(), e["event_id"].clone());
    out.insert("application_id".into(), application_id);
    out.insert("operation".into(), json!("LOAD"));
    out.insert("social_security_no".into(), json!(holder));
    out.insert("name".into(), json!(name));
    out.insert("certificate_no".into(), json!(cert_no));
    out.insert("category".into(), json!(category));
    out.insert("category_name".into(), json!(category_name));
    out.insert("level".into(), json!(cert.level()));
    out.insert(
        "valid_until".into(),
        json!(valid.format("%Y%m%d").to_string()),
    );
    Ok(Some(Value::Object(out)))
}

fn bench(c: &mut Criterion) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (cfg, diags) = Config::load(&root);
    let cfg = cfg.unwrap_or_else(|| panic!("{diags}"));
    let m = &cfg.mappings["certificate_issued_to_card_load"];
    let raw = events();
    let parsed: Vec<_> = raw
        .iter()
        .map(|v| m.decode_json(v.to_string().as_bytes()).unwrap())
        .collect();
    for d in &parsed[..100] {
        assert!(matches!(m.apply(d), Ok(Outcome::Mapped { .. })));
    }
    let categories: HashMap<String, String> = (1..=7)
        .map(|i| {
            (
                i.to_string(),
                ["视力", "听力", "言语", "肢体", "智力", "精神", "多重"][i - 1].to_string(),
            )
        })
        .collect();
    assert!(by_hand(&raw[0], &categories).unwrap().is_some());

    let mut g = c.benchmark_group("certificate_issued_to_card_load");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    g.bench_function("compiled_cel", |b| {
        b.iter(|| {
            for d in &parsed {
                black_box(m.program.run(black_box(d)).unwrap());
            }
        })
    });
    g.bench_function("compiled_cel_hot_1k_x100", |b| {
        b.iter(|| {
            for _ in 0..100 {
                for d in &parsed[..1000] {
                    black_box(m.program.run(black_box(d)).unwrap());
                }
            }
        })
    });
    g.bench_function("hand_written_serde_json", |b| {
        b.iter(|| {
            for v in &raw {
                black_box(by_hand(black_box(v), &categories).unwrap());
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("config");
    g.sample_size(20);
    g.bench_function("load_and_check_shipped", |b| {
        b.iter(|| black_box(Config::load(&root).0.is_some()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
