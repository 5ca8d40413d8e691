//! The real `jitbot serve` binary as a child process, and a PostgreSQL cluster of a test's own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Serve {
    pub child: Child,
    pub url: String,
    /// Every line it wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real binary and waits for its "listening" line.
pub fn serve(
    db_url: &str,
    policy: &std::path::Path,
    slack: &str,
    secret: &str,
    env: &[(String, String)],
) -> Serve {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jitbot"));
    // A test that gives the secret as a file gives no plain one (both would be refused).
    if !env.iter().any(|(k, _)| k == "SLACK_SIGNING_SECRET_FILE") {
        command.env("SLACK_SIGNING_SECRET", secret);
    }
    let mut child = command
        .arg("serve")
        .env("JIT_DATABASE_URL", db_url)
        .env("JIT_POLICY", policy)
        .env("JIT_LISTEN", "127.0.0.1:0")
        .env("SLACK_BOT_TOKEN", "xoxb-test")
        .env("SLACK_API_URL", slack)
        .env("JIT_RETRY_BASE_MS", "100")
        .env("JIT_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jitbot serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.clone());
            // Text logs say `addr=…`; JSON logs carry it as a field.
            if let Some(addr) = line.split("addr=").nth(1) {
                let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
            } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(addr) = v["fields"]["addr"].as_str()
            {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("jitbot serve reports its address");
    Serve {
        child,
        url: format!("http://{addr}"),
        log,
    }
}

/// A PostgreSQL cluster of one test's own (`initdb` on a free port, in a temporary directory),
/// for stopping hard without touching the server other tests share. Removed when dropped.
pub struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// PostgreSQL's server programs (`initdb`, `pg_ctl`): on the PATH, else Debian's directory.
fn pg_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"));
    on_path
        .chain(debian)
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        .unwrap_or_else(|| {
            panic!(
                "no initdb and pg_ctl found (on the PATH or under /usr/lib/postgresql/*/bin): \
                 install PostgreSQL's server (`bash scripts/test-services.sh` does on Debian)"
            )
        })
}

/// As the `postgres` user when running as root (initdb refuses root), else as ourselves.
fn as_pg(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

impl Cluster {
    pub fn start() -> Cluster {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("jitbot-pg-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let data = dir.path().join("data");
        if running_as_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of the cluster's directory to postgres");
        }
        let out = as_pg(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let cluster = Cluster {
            bin,
            data,
            port,
            _dir: dir,
        };
        cluster.up();
        cluster
    }

    /// Starts (or starts again) the server and waits until it takes connections.
    pub fn up(&self) {
        let log = self.data.join("server.log");
        let out = as_pg(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.data.display()
            ))
            .args(["-w", "start"])
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A hard crash: `pg_ctl stop -m immediate`.
    pub fn crash(&self) {
        let _ = as_pg(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.crash();
    }
}
