//! A bank's SFTP server: a private OpenSSH `sshd` on 127.0.0.1 and a free
//! port, with a host key and a user key of its own made for it, serving the
//! machine's files to the current user (key login only), for tests, the
//! benchmark and `tongban demo --bank-sftp`. The bank simulator watches
//! the directory it serves, as a bank's back office watches its SFTP
//! server's directory. It stops when dropped, and with the process that
//! started it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running private sshd.
pub struct Sshd {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The user that logs in (the current user).
    pub user: String,
    /// The user's private key (OpenSSH format).
    pub user_key: PathBuf,
    /// A known_hosts file with the server's key.
    pub known_hosts: PathBuf,
    /// The server key's fingerprint, `SHA256:…`.
    pub fingerprint: String,
    /// The folder of its keys, configuration and log.
    pub dir: PathBuf,
    pid: i32,
}

fn find_sshd() -> Option<PathBuf> {
    let path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    path.into_iter()
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("sshd"))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn keygen(path: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "tongban", "-f"])
            .arg(path),
        "ssh-keygen",
    )
    .map(drop)
}

fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            run(Command::new("id").arg("-un"), "id")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "root".into())
}

impl Sshd {
    /// Starts one, its keys and configuration in `dir` (made if missing).
    pub fn start(dir: &Path) -> Result<Sshd, String> {
        let sshd = find_sshd().ok_or(
            "no OpenSSH server (sshd) found; install it (Debian: apt-get install openssh-server)",
        )?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let host_key = dir.join("host_key");
        let user_key = dir.join("user_key");
        keygen(&host_key)?;
        keygen(&user_key)?;
        let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
        let authorized = dir.join("authorized_keys");
        std::fs::copy(user_key.with_extension("pub"), &authorized)
            .map_err(|e| io(&authorized, e))?;
        // sshd needs its privilege separation directory when run as root.
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            l.local_addr().map_err(|e| e.to_string())?.port()
        };
        let user = current_user();
        let config = dir.join("sshd_config");
        let text = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host}\nPidFile {pid}\n\
             AuthorizedKeysFile {auth}\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\n\
             Subsystem sftp internal-sftp\nLogLevel INFO\nMaxStartups 100\n",
            host = host_key.display(),
            pid = dir.join("sshd.pid").display(),
            auth = authorized.display(),
        );
        std::fs::write(&config, text).map_err(|e| io(&config, e))?;
        let pid = spawn(&sshd, &config, &dir)?;
        let mut me = Sshd {
            port,
            user,
            user_key,
            known_hosts: dir.join("known_hosts"),
            fingerprint: String::new(),
            dir: dir.clone(),
            pid,
        };
        let public = std::fs::read_to_string(host_key.with_extension("pub"))
            .map_err(|e| io(&host_key, e))?;
        let mut parts = public.split_whitespace();
        let (alg, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        std::fs::write(&me.known_hosts, format!("[127.0.0.1]:{port} {alg} {key}\n"))
            .map_err(|e| io(&me.known_hosts, e))?;
        let printed = run(
            Command::new("ssh-keygen")
                .args(["-l", "-E", "sha256", "-f"])
                .arg(host_key.with_extension("pub")),
            "ssh-keygen -l",
        )?;
        let fingerprint = printed
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        me.fingerprint = fingerprint;
        me.wait_up()?;
        Ok(me)
    }

    fn wait_up(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            // SAFETY: signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(self.pid, 0) } == 0;
            if !alive || Instant::now() > deadline {
                return Err(format!(
                    "sshd did not start on 127.0.0.1:{}: {}",
                    self.port,
                    self.log().trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts the stopped server again, on the same port with the same keys.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let sshd = find_sshd().ok_or("no sshd")?;
        self.pid = spawn(&sshd, &self.dir.join("sshd_config"), &self.dir)?;
        self.wait_up()
    }

    /// What the server logged (logins, refusals).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// Stops the server and every session it serves (as a server that
    /// goes down does).
    pub fn stop(&self) {
        // The sessions first: sshd's descendants outlive the listener.
        for pid in descendants(self.pid) {
            // SAFETY: signalling a process this server started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        // SAFETY: signalling the server this value started.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(self.pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A connector file's server settings for this server: `host`,
    /// `known_hosts` and `[auth]` lines (the key as a file reference).
    pub fn connector_lines(&self) -> String {
        format!(
            "host = \"127.0.0.1:{}\"\nknown_hosts = \"{}\"\nauth = {{ type = \"key\", username = \"{}\", private_key = \"${{file:{}}}\" }}\n",
            self.port,
            self.known_hosts.display(),
            self.user,
            self.user_key.display()
        )
    }
}

/// Every process below `root` (from /proc).
fn descendants(root: i32) -> Vec<i32> {
    let mut parent = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid …`: the fields after the last `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parent.push((pid, ppid));
        }
    }
    let mut out = vec![];
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// Starts sshd on `config`, held by a thread that lives as long as the
/// process (the parent-death signal follows the thread that forks); its pid.
fn spawn(sshd: &Path, config: &Path, dir: &Path) -> Result<i32, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sshd.log"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cmd = Command::new(sshd);
    cmd.args(["-D", "-e", "-f"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let what = sshd.display().to_string();
    std::thread::spawn(move || {
        match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(child.id() as i32));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(format!("{what}: {e}")));
            }
        }
        loop {
            std::thread::park();
        }
    });
    rx.recv().map_err(|e| e.to_string())?
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
