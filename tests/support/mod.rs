//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod chain;
pub mod hub;
pub mod kafka;
pub mod mariadb;
pub mod ops;
pub mod payouts;
pub mod pg;
pub mod receiver;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (the shipped configuration lives there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `tongban` binary built for this test run.
pub fn tongban() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tongban"));
    c.current_dir(root());
    c
}

/// Runs `tongban` with arguments.
pub fn run(args: &[&str]) -> Output {
    tongban().args(args).output().expect("run tongban")
}

/// Copies the shipped configuration into a fresh temporary directory.
pub fn copy_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in [
        "calendar",
        "connectors",
        "layouts",
        "mappings",
        "mappings/tables",
        "schemas",
    ] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(root().join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, dir.path().join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    std::fs::copy(root().join("tongban.toml"), dir.path().join("tongban.toml")).unwrap();
    dir
}

/// Replaces `from` with `to` in a file; panics if `from` is absent, so a
/// test never passes on an edit that did not happen.
pub fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{file} does not contain {from:?}");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

/// Standard output and error as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Waits until `cond` holds, failing the test after `limit`.
pub async fn eventually<F, Fut>(limit: std::time::Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until `cond` (a check of what the simulators saw) holds, failing
/// the test after 60 s.
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    eventually(std::time::Duration::from_secs(60), what, || {
        let ok = cond();
        async move { ok }
    })
    .await;
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `addr`.
pub async fn listening(addr: &str, limit: std::time::Duration) {
    let a = addr.to_string();
    eventually(limit, &format!("a server on {addr}"), || {
        let a = a.clone();
        async move { tokio::net::TcpStream::connect(&a).await.is_ok() }
    })
    .await;
}
