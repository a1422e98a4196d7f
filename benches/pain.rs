//! ISO 20022 payment files at scale: 1,000,000 transfers written as one
//! pain.001.001.03 file (streamed from an iterator, 20 payment blocks), and
//! a pain.002 with 1,000,000 transaction statuses read back as a stream.
//! Prints the time of each and the process's peak RSS.
//!
//! ```text
//! cargo bench --bench pain
//! TONGBAN_BENCH_TRANSFERS=200000 cargo bench --bench pain
//! ```

use std::io::{BufReader, BufWriter};
use std::time::Instant;
use tongban::formats::pain::*;

#[path = "common/sample.rs"]
mod sample;
use sample::transfer;

fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn main() {
    let n: u64 = std::env::var("TONGBAN_BENCH_TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let blocks = 20u64;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.pain001.xml");

    for round in 1..=3 {
        let t = Instant::now();
        // Totals first (the batch builder reads them from the store), then
        // the transfers streamed from an iterator: nothing is held in memory.
        let per = n / blocks;
        let block_total = |b: u64| {
            (b * per..(b + 1) * per)
                .map(|i| transfer(i).amount_fen)
                .sum::<i64>()
        };
        let totals: Vec<i64> = (0..blocks).map(block_total).collect();
        let out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
        let mut w = Pain001Writer::start(
            out,
            Version::V03,
            GroupHeader {
                msg_id: "TB-2026-11-105100000017-0001".into(),
                created: "2026-11-23T10:00:00".into(),
                count: (per * blocks) as i64,
                total_fen: totals.iter().sum(),
                initiator: "某省残疾人联合会".into(),
            },
        )
        .unwrap();
        for b in 0..blocks {
            w.block(PaymentBlock {
                id: format!("TB-2026-11-0001-{b:02}"),
                execution_date: "2026-11-25".into(),
                debtor_name: "某省财政厅".into(),
                debtor_account: "110010000000000000001".into(),
                debtor_bank: "105100000017".into(),
                count: per as i64,
                total_fen: totals[b as usize],
            })
            .unwrap();
            for i in b * per..(b + 1) * per {
                w.transfer(&transfer(i)).unwrap();
            }
        }
        let out = w.finish().unwrap();
        drop(out);
        let write = t.elapsed();
        let size = std::fs::metadata(&path).unwrap().len();

        // The bank's answer: a pain.002 with every transaction's status.
        let report_path = dir.path().join("batch.pain002.xml");
        let statuses = (0..per * blocks).map(|i| TxStatus {
            end_to_end_id: transfer(i).end_to_end_id,
            status: if i % 50 == 0 {
                "RJCT".into()
            } else {
                "ACSC".into()
            },
            reason: (i % 50 == 0).then(|| "AC04".to_string()),
        });
        let out = BufWriter::new(std::fs::File::create(&report_path).unwrap());
        write_pain002(
            out,
            &StatusReport {
                msg_id: "R-1".into(),
                original_msg_id: "TB-2026-11-105100000017-0001".into(),
                original_count: Some((per * blocks) as i64),
                original_total_fen: Some(totals.iter().sum()),
                group_status: Some("PART".into()),
                group_reason: None,
            },
            "2026-11-26T09:00:00",
            statuses,
        )
        .unwrap();
        let t = Instant::now();
        let (mut accepted, mut rejected) = (0u64, 0u64);
        let input = BufReader::with_capacity(1 << 20, std::fs::File::open(&report_path).unwrap());
        let report = read_pain002(input, |tx| {
            if tx.status == "RJCT" {
                rejected += 1;
            } else {
                accepted += 1;
            }
        })
        .unwrap();
        let read = t.elapsed();
        assert_eq!(accepted + rejected, per * blocks);
        assert_eq!(report.original_count, Some((per * blocks) as i64));
        println!(
            "round {round}: pain.001 with {} transfers ({} MB) written in {:.2} s; pain.002 with {} statuses read in {:.2} s ({} rejected); peak RSS {} MB",
            per * blocks,
            size >> 20,
            write.as_secs_f64(),
            accepted + rejected,
            read.as_secs_f64(),
            rejected,
            peak_rss_mb()
        );
    }
}
