//! The chaos run's own `redis-server`: on a free loopback port, in the run's directory, with no
//! automatic saves (`--save ''`). The checker kills it (`kill -9`), restarts it empty or from an
//! older snapshot, and freezes it (SIGSTOP/SIGCONT). Dropping the handle kills it, so the server
//! never outlives the run, on error and on panic too.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const START_WITHIN: Duration = Duration::from_secs(10);
const DUMP: &str = "dump.rdb";

/// A `redis-server` of the run's own.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

/// Whether `redis-server` and `redis-cli` can be run; why not otherwise.
pub fn tools_missing() -> Option<String> {
    for tool in ["redis-server", "redis-cli"] {
        match Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => return Some(format!("`{tool} --version` exited with {s}")),
            Err(e) => return Some(format!("`{tool}` cannot be run: {e}")),
        }
    }
    None
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether a Redis answers on loopback `port`: `PONG`, or `NOAUTH` from one that wants a
/// password (it is up all the same).
pub fn answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    // Timeouts on a loopback socket cannot fail to be set in a way that matters: a failure only
    // makes the probe wait longer.
    // Fails only for a zero duration, which these are not.
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let mut reply = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok()
        && s.read_exact(&mut reply).is_ok()
        && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
}

impl RedisServer {
    /// Starts a server in `dir` (created if needed) on a free port.
    pub fn start(dir: &Path) -> anyhow::Result<RedisServer> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut last = None;
        for _ in 0..5 {
            let mut s = RedisServer {
                port: free_port().context("no free loopback port")?,
                dir: dir.to_path_buf(),
                child: None,
                stopped: false,
            };
            match s.spawn() {
                Ok(()) => return Ok(s),
                // Someone took the port in between: another one.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server would not start")))
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log_path = self.dir.join("redis.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dbfilename", DUMP])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot run redis-server")?;
        self.child = Some(child);
        self.stopped = false;
        let started = Instant::now();
        while !answers_ping(self.port) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                bail!("redis-server exited with {status}: {}", tail.join(" | "));
            }
            if started.elapsed() > START_WITHIN {
                bail!("redis-server did not answer PING within {START_WITHIN:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn signal(&self, sig: libc::c_int) -> anyhow::Result<()> {
        let Some(child) = &self.child else {
            bail!("redis-server is not running");
        };
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: kill(2) takes no pointers; the pid is our own child, not reaped yet (only
        // `self.child` reaps it), so it cannot name another process.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            bail!(
                "kill({}, {sig}): {}",
                child.id(),
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// `kill -9`, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Already gone is fine: it is gone either way.
            // It may have exited already; `wait` reaps it either way.
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stopped = false;
    }

    /// Restarts it empty (any dump removed).
    pub fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.kill();
        match std::fs::remove_file(self.dir.join(DUMP)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.spawn()
    }

    /// Restarts it from the snapshot file `rdb` (a copy made earlier by [`RedisServer::snapshot`]).
    pub fn restart_from(&mut self, rdb: &Path) -> anyhow::Result<()> {
        self.kill();
        std::fs::copy(rdb, self.dir.join(DUMP)).context("cannot put the snapshot back")?;
        self.spawn()?;
        // The next plain restart is empty again.
        // There may be no dump yet.
        let _ = std::fs::remove_file(self.dir.join(DUMP));
        Ok(())
    }

    /// Freezes it (SIGSTOP).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.stopped = true;
        Ok(())
    }

    /// Thaws it (SIGCONT).
    pub fn cont(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGCONT)?;
        self.stopped = false;
        Ok(())
    }

    /// Whether it is frozen.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// `BGSAVE`, waits for it, and copies the dump to `to`.
    pub fn snapshot(&self, to: &Path) -> anyhow::Result<()> {
        let before = std::fs::metadata(self.dir.join(DUMP))
            .and_then(|m| m.modified())
            .ok();
        self.cli(&["BGSAVE"])?;
        let started = Instant::now();
        loop {
            let info = self.cli(&["INFO", "persistence"])?;
            let done = info.contains("rdb_bgsave_in_progress:0");
            let modified = std::fs::metadata(self.dir.join(DUMP))
                .and_then(|m| m.modified())
                .ok();
            if done && modified.is_some() && modified != before {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("BGSAVE did not finish within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::copy(self.dir.join(DUMP), to).context("cannot copy the snapshot")?;
        std::fs::remove_file(self.dir.join(DUMP)).context("cannot remove the dump")?;
        Ok(())
    }

    /// Runs `redis-cli` against it with `args`, as an operator would; returns its output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run redis-cli")?;
        if !out.status.success() {
            bail!(
                "redis-cli {} exited with {}: {}",
                args.first().copied().unwrap_or(""),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
