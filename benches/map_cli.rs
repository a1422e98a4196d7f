//! End to end: `tongban map` over 1,000,000 generated certificate events
//! (JSON lines in, JSON lines out), timed as a whole process, three runs.
//!
//! `cargo bench --bench map_cli` (set TONGBAN_BENCH_RECORDS to change the count,
//! TONGBAN_BENCH_INPUT to keep the generated input)

use std::io::{BufWriter, Write};
use std::process::{Command, Stdio};
use std::time::Instant;
use tongban::synth::{issued_event, person, Rng};

fn main() {
    let n: u64 = std::env::var("TONGBAN_BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    // TONGBAN_BENCH_INPUT keeps the generated input at that path (for profiling).
    let input = std::env::var_os("TONGBAN_BENCH_INPUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("events.jsonl"));
    let mut w = BufWriter::new(std::fs::File::create(&input).unwrap());
    let mut rng = Rng::new(1);
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
    for i in 0..n {
        let p = person(&mut rng);
        serde_json::to_writer(&mut w, &issued_event(&mut rng, &p, i, day)).unwrap();
        w.write_all(b"\n").unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let bytes = std::fs::metadata(&input).unwrap().len();
    println!("input: {n} records, {:.0} MB", bytes as f64 / 1e6);
    let root = env!("CARGO_MANIFEST_DIR");
    let mut rates = Vec::new();
    for run in 1..=3 {
        // Output goes to a file, so that the harness does not compete for the cores.
        let output = dir.path().join("out.jsonl");
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_tongban"))
            .args([
                "map",
                "--config",
                root,
                "--mapping",
                "certificate_issued_to_card_load",
            ])
            .arg(&input)
            .stdout(Stdio::from(std::fs::File::create(&output).unwrap()))
            .stderr(Stdio::piped())
            .output()
            .expect("run tongban map");
        let secs = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = std::fs::read(&output).unwrap();
        let lines = written.iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(lines, n, "every record maps");
        let rate = n as f64 / secs;
        println!("run {run}: {secs:.2} s, {rate:.0} records/s");
        rates.push(rate);
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "tongban map, JSON lines end to end: median {:.0} records/s",
        rates[1]
    );
}
