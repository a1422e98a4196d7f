//! A 100 MB pain.001 uploaded over SFTP on 127.0.0.1 to a private OpenSSH
//! server: the hub's upload (`connectors::sftp::upload` and the checksum
//! file, a new connection each round, as after a restart) against the
//! `sftp` command-line client putting the same file in the same run, in
//! MB/s; and the peak RSS of this process during the hub's upload above
//! its RSS just before it.
//!
//! ```text
//! cargo bench --bench sftp
//! TONGBAN_BENCH_MB=500 cargo bench --bench sftp
//! ```
//!
//! Needs `sshd`, `ssh-keygen` and `sftp` (Debian: openssh-server,
//! openssh-client).

use std::io::BufWriter;
use std::path::Path;
use std::time::{Duration, Instant};
use tongban::connectors::sftp::{self, settings::SftpSettings, SftpClient};
use tongban::formats::pain::*;

#[path = "common/sample.rs"]
mod sample;
use sample::transfer;

/// A pain.001.001.03 of `n` transfers in one block at `path`; its size.
fn write_file(path: &Path, n: u64) -> u64 {
    let total: i64 = (0..n).map(|i| transfer(i).amount_fen).sum();
    let out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut w = Pain001Writer::start(
        out,
        Version::V03,
        GroupHeader {
            msg_id: "TB-2026-11-105100000017-0001".into(),
            created: "2026-11-23T10:00:00".into(),
            count: n as i64,
            total_fen: total,
            initiator: "某省残疾人联合会".into(),
        },
    )
    .unwrap();
    w.block(PaymentBlock {
        id: "TB-2026-11-0001-00".into(),
        execution_date: "2026-11-25".into(),
        debtor_name: "某省财政厅".into(),
        debtor_account: "110010000000000000001".into(),
        debtor_bank: "105100000017".into(),
        count: n as i64,
        total_fen: total,
    })
    .unwrap();
    for i in 0..n {
        w.transfer(&transfer(i)).unwrap();
    }
    drop(w.finish().unwrap());
    std::fs::metadata(path).unwrap().len()
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let mb: u64 = std::env::var("TONGBAN_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let d = tempfile::tempdir().unwrap();
    let sshd = tongban::sim::sshd::Sshd::start(&d.path().join("sshd"))
        .unwrap_or_else(|e| panic!("needs OpenSSH's server: {e}"));
    let bank = d.path().join("bank");
    std::fs::create_dir_all(bank.join("out")).unwrap();
    let bank = bank.canonicalize().unwrap();

    // The file: as many transfers as make `mb` MB.
    let path = d.path().join("TB-2026-11-105100000017-0001.pain001.xml");
    let sample = write_file(&path, 1000);
    let n = (mb << 20) * 1000 / sample + 1;
    let size = write_file(&path, n);
    let digest = {
        let mut h = tongban::connectors::file::Hashing::new(std::io::sink());
        std::io::copy(&mut std::fs::File::open(&path).unwrap(), &mut h).unwrap();
        h.finish().1
    };
    println!(
        "a pain.001 of {n} transfers, {:.1} MB; OpenSSH {} on 127.0.0.1:{}",
        size as f64 / 1e6,
        String::from_utf8_lossy(
            &std::process::Command::new("ssh")
                .arg("-V")
                .output()
                .unwrap()
                .stderr
        )
        .trim(),
        sshd.port
    );

    let spec: tongban::config::ConnectorSpec =
        toml::from_str(&format!("kind = \"sftp\"\n{}", sshd.connector_lines())).unwrap();
    let settings = SftpSettings::of(&spec, Path::new("/")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = format!("{}/out", bank.display());
    let name = "TB-2026-11-105100000017-0001.pain001.xml";
    let mb_s = |t: Duration| size as f64 / 1e6 / t.as_secs_f64();
    let (mut best_hub, mut best_cli) = (Duration::MAX, Duration::MAX);
    let mut peak_above = 0u64;
    for round in 1..=3 {
        // The hub: connect, log in, upload, rename, checksum file.
        let idle = status_kb("VmRSS:");
        // Resets the peak RSS (VmHWM) to the RSS now.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let t = Instant::now();
        rt.block_on(async {
            let c = SftpClient::new(&settings);
            let f = tokio::fs::File::open(&path).await.unwrap();
            sftp::upload(&c, &out, name, f, size).await.unwrap();
            sftp::place_checksum(&c, &out, name, &digest).await.unwrap();
            c.reset().await;
        });
        let hub = t.elapsed();
        let above = status_kb("VmHWM:").saturating_sub(idle);
        peak_above = peak_above.max(above);
        assert_eq!(
            std::fs::metadata(bank.join("out").join(name))
                .unwrap()
                .len(),
            size
        );
        std::fs::remove_file(bank.join("out").join(name)).unwrap();

        // The command-line client: the same file, the same server.
        let t = Instant::now();
        let mut child = std::process::Command::new("sftp")
            .args(["-q", "-b", "-", "-i"])
            .arg(&sshd.user_key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", sshd.known_hosts.display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-P"])
            .arg(sshd.port.to_string())
            .arg(format!("{}@127.0.0.1", sshd.user))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("sftp (openssh-client)");
        use std::io::Write;
        writeln!(
            child.stdin.take().unwrap(),
            "put {} {out}/cli-{name}",
            path.display()
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
        let cli = t.elapsed();
        assert_eq!(
            std::fs::metadata(bank.join("out").join(format!("cli-{name}")))
                .unwrap()
                .len(),
            size
        );
        std::fs::remove_file(bank.join("out").join(format!("cli-{name}"))).unwrap();
        best_hub = best_hub.min(hub);
        best_cli = best_cli.min(cli);
        println!(
            "round {round}: hub {:.1} MB/s ({:.2} s), sftp client {:.1} MB/s ({:.2} s); hub peak RSS {} MB above its {} MB before",
            mb_s(hub),
            hub.as_secs_f64(),
            mb_s(cli),
            cli.as_secs_f64(),
            above / 1024,
            idle / 1024
        );
    }
    println!(
        "best of 3: hub {:.1} MB/s, sftp client {:.1} MB/s: {:.0} %; hub peak RSS at most {} MB above idle",
        mb_s(best_hub),
        mb_s(best_cli),
        100.0 * best_cli.as_secs_f64() / best_hub.as_secs_f64(),
        peak_above / 1024
    );
}
