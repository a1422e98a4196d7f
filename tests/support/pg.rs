//! PostgreSQL for tests: `TONGBAN_TEST_DATABASE_URL` when set, otherwise a
//! private throwaway cluster started from the installed binaries (initdb +
//! postgres on 127.0.0.1, a free port, a temporary directory), shared by the
//! tests of one test binary and stopped when that process ends (the server
//! gets SIGTERM when the thread that started it, which lives as long as the
//! process, dies). Each test gets a database of its own.
//!
//! When neither is possible the tests fail, saying what to install: they
//! never skip silently.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Cluster {
    /// Base URL without a database name.
    base: String,
    /// Kept so the directory outlives the server.
    _dir: Option<tempfile::TempDir>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty database; its URL.
pub async fn database() -> String {
    let cluster = match CLUSTER.get_or_init(start) {
        Ok(c) => c,
        Err(e) => panic!("PostgreSQL is needed for this test and could not be started: {e}"),
    };
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    // An open port is not yet a server ready for queries: retry until it is.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (client, conn) = loop {
        match tokio_postgres::connect(&format!("{}/postgres", cluster.base), tokio_postgres::NoTls)
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "cannot connect to the test cluster at {}: {e}",
                cluster.base
            ),
        }
    };
    let task = tokio::spawn(conn);
    client
        .execute(&format!("CREATE DATABASE {name}"), &[])
        .await
        .expect("create a test database");
    drop(client);
    let _ = task.await;
    format!("{}/{name}", cluster.base)
}

fn start() -> Result<Cluster, String> {
    if let Ok(url) = std::env::var("TONGBAN_TEST_DATABASE_URL") {
        // Strip a trailing database name: tests make their own databases.
        let base = match url.rfind('/') {
            Some(i) if i > "postgres://".len() => url[..i].to_string(),
            _ => url,
        };
        return Ok(Cluster { base, _dir: None });
    }
    let bin = find_bin().ok_or_else(|| {
        "no PostgreSQL server binaries (initdb, postgres) found on PATH or under /usr/lib/postgresql; \
         install them (Debian: apt-get install postgresql) or set TONGBAN_TEST_DATABASE_URL"
            .to_string()
    })?;
    remove_stale_clusters();
    let dir = tempfile::Builder::new()
        .prefix("tongban-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let data = dir.path().join("data");
    let ids = run_as_ids()?;
    if let Some((uid, gid)) = ids {
        chown(dir.path(), uid, gid)?;
    }
    let out = as_user(Command::new(bin.join("initdb")), ids)
        .args(["-D"])
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let (tx, rx) = std::sync::mpsc::channel();
    let sock = dir.path().to_path_buf();
    // The server is the child of a thread that lives as long as the process.
    std::thread::spawn(move || {
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
            ])
            .arg(format!("unix_socket_directories={}", sock.display()))
            .args(["-c", "max_connections=200", "-c", "shared_buffers=128MB"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut cmd = as_user(cmd, ids);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(format!("postgres: {e}")));
            }
        }
        // Keep this thread (the server's parent) alive until the process ends.
        loop {
            std::thread::park();
        }
    });
    rx.recv().map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("postgres did not accept connections within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Cluster {
        base: format!("postgres://postgres@127.0.0.1:{port}"),
        _dir: Some(dir),
    })
}

/// Removes the directories of earlier test clusters whose server is gone
/// (a cluster lives in a static and its directory outlives the process).
fn remove_stale_clusters() {
    let tmp = std::env::temp_dir();
    let Ok(rd) = std::fs::read_dir(&tmp) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        if !e.file_name().to_string_lossy().starts_with("tongban-pg-") {
            continue;
        }
        let pid = std::fs::read_to_string(p.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        let young = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60));
        if !alive && !young {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

fn find_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .collect();
        versions.sort();
        dirs.extend(versions.into_iter().rev());
    }
    dirs.into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
}

/// PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
fn run_as_ids() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns a pointer to static storage or null.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err("running as root and there is no `postgres` user to run the server as (apt-get install postgresql creates it)".into());
    }
    // SAFETY: pw is non-null and points to a valid passwd.
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

fn as_user(mut cmd: Command, ids: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown(p: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", p.display()))
}
