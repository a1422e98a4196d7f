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

enum Cluster {
    /// `TONGBAN_TEST_DATABASE_URL`, without its database name.
    External(String),
    /// A private server.
    Private(Server),
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty database on the shared test cluster; its URL.
pub async fn database() -> String {
    let cluster = CLUSTER.get_or_init(|| {
        if let Ok(url) = std::env::var("TONGBAN_TEST_DATABASE_URL") {
            // Strip a trailing database name: tests make their own databases.
            let base = match url.rfind('/') {
                Some(i) if i > "postgres://".len() => url[..i].to_string(),
                _ => url,
            };
            return Ok(Cluster::External(base));
        }
        Server::start().map(Cluster::Private)
    });
    match cluster {
        Ok(Cluster::External(base)) => create_database(base).await,
        Ok(Cluster::Private(s)) => s.database().await,
        Err(e) => panic!("PostgreSQL is needed for this test and could not be started: {e}"),
    }
}

async fn create_database(base: &str) -> String {
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    // An open port is not yet a server ready for queries: retry until it is.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (client, conn) = loop {
        match tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("cannot connect to the test cluster at {base}: {e}"),
        }
    };
    let task = tokio::spawn(conn);
    client
        .execute(&format!("CREATE DATABASE {name}"), &[])
        .await
        .expect("create a test database");
    drop(client);
    let _ = task.await;
    format!("{base}/{name}")
}

/// A private PostgreSQL server in a temporary directory, on 127.0.0.1.
pub struct Server {
    bin: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    port: u16,
    ids: Option<(u32, u32)>,
    pid: std::sync::Arc<AtomicU32>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// initdb and start a new server.
    pub fn start() -> Result<Server, String> {
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
        let server = Server {
            bin,
            data,
            sock: dir.path().to_path_buf(),
            port,
            ids,
            pid: Default::default(),
            _dir: dir,
        };
        server.launch()?;
        Ok(server)
    }

    /// Base URL, without a database name.
    pub fn base(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// A fresh database on this server; its URL.
    pub async fn database(&self) -> String {
        create_database(&self.base()).await
    }

    /// Starts the server process. It is the child of a thread that lives as
    /// long as the test process, and gets SIGTERM when that process ends.
    fn launch(&self) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
            ])
            .arg(format!("unix_socket_directories={}", self.sock.display()))
            .args(["-c", "max_connections=200", "-c", "shared_buffers=128MB"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut cmd = as_user(cmd, self.ids);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let pid = self.pid.clone();
        std::thread::spawn(move || {
            match cmd.spawn() {
                Ok(mut child) => {
                    pid.store(child.id(), Ordering::SeqCst);
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
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err("postgres did not accept connections within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        let pid = self.pid.load(Ordering::SeqCst) as i32;
        // SAFETY: signalling our own server process.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same data and port.
    pub fn restart(&self) -> Result<(), String> {
        self.launch()
    }
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
