//! MariaDB for tests: `TONGBAN_TEST_MARIADB_URL` (`mysql://user:pw@host:port`)
//! when set, otherwise a private throwaway server started from the
//! installed binaries (mariadb-install-db + mariadbd on 127.0.0.1, a free
//! port, a temporary directory), shared by the tests of one test binary
//! and stopped when that process ends (the server gets SIGTERM when the
//! thread that started it dies with the process). Each test gets a
//! database of its own.
//!
//! When neither is possible the tests fail, saying what to install: they
//! never skip silently.

use mysql_async::prelude::Queryable;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty database on the shared test server; its URL.
pub async fn database() -> String {
    let base = SERVER.get_or_init(|| match std::env::var("TONGBAN_TEST_MARIADB_URL") {
        Ok(url) => Ok(url.trim_end_matches('/').to_string()),
        Err(_) => start(),
    });
    let base = match base {
        Ok(b) => b.clone(),
        Err(e) => panic!("MariaDB is needed for this test and could not be started: {e}"),
    };
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let pool = mysql_async::Pool::new(base.as_str());
    let mut conn = loop {
        match pool.get_conn().await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("cannot connect to the test MariaDB at {base}: {e}"),
        }
    };
    conn.query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
        .await
        .expect("create a test database");
    drop(conn);
    pool.disconnect().await.ok();
    format!("{base}/{name}")
}

/// Runs statements on a database.
pub async fn exec(url: &str, sql: &[&str]) {
    let pool = mysql_async::Pool::new(url);
    let mut c = pool.get_conn().await.expect("connect");
    for s in sql {
        c.query_drop(*s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    drop(c);
    pool.disconnect().await.ok();
}

fn start() -> Result<String, String> {
    let (install, server) = find_bins().ok_or(
        "no MariaDB server binaries (mariadb-install-db, mariadbd) found; install them \
         (Debian: apt-get install mariadb-server) or set TONGBAN_TEST_MARIADB_URL",
    )?;
    let dir = tempfile::Builder::new()
        .prefix("tongban-mariadb-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let data = dir.join("data");
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    let mut cmd = Command::new(&install);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if root {
        cmd.arg("--user=root");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("mariadb-install-db: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = super::free_port();
    let mut cmd = Command::new(&server);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join("sock").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .args([
            "--skip-log-bin",
            "--innodb-buffer-pool-size=256M",
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=300",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if root {
        cmd.arg("--user=root");
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let cleanup = dir.clone();
    std::thread::spawn(move || {
        match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&cleanup);
            }
            Err(e) => {
                let _ = tx.send(Err(format!("mariadbd: {e}")));
            }
        }
        loop {
            std::thread::park();
        }
    });
    rx.recv().map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            return Err(format!(
                "mariadbd did not accept connections within 30 s: {log}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    remove_stale(&dir);
    Ok(format!("mysql://root@127.0.0.1:{port}"))
}

/// Removes the directories of earlier test servers that are gone.
fn remove_stale(own: &std::path::Path) {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        if p == own
            || !e
                .file_name()
                .to_string_lossy()
                .starts_with("tongban-mariadb-")
        {
            continue;
        }
        let pid = std::fs::read_to_string(p.join("pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        // SAFETY: signal 0 only checks that the process exists.
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

fn find_bins() -> Option<(PathBuf, PathBuf)> {
    let path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let find = |names: &[&str], extra: &[&str]| {
        path.iter()
            .map(PathBuf::from)
            .chain(extra.iter().map(PathBuf::from))
            .flat_map(|d| names.iter().map(move |n| d.join(n)))
            .find(|p| p.is_file())
    };
    Some((
        find(&["mariadb-install-db", "mysql_install_db"], &["/usr/bin"])?,
        find(&["mariadbd", "mysqld"], &["/usr/sbin"])?,
    ))
}
