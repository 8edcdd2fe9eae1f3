//! The `freshcache` binary, end to end: every command run as a real process, its exit code, its
//! stdout (parsed when it is JSON) and its stderr (one line that says what to do, never a panic),
//! and that no password given to it ever shows up in its output or its log files.
//!
//! Harness: every invocation runs in a sandbox of its own — a fresh temporary directory holding
//! the data directory (`--data-dir`), `XDG_CONFIG_HOME`, `XDG_STATE_HOME`, `XDG_DATA_HOME`, `HOME`
//! and `FRESHCACHE_LOG_DIR` — with every inherited `FRESHCACHE_*` variable removed, stdin closed
//! (not a terminal), and a 60 s limit after which the child is killed and the test fails. One
//! small demo warehouse (`warehouse init --sales 2000 --customers 200`) is created once per run
//! and copied into the sandboxes that need data. Sandboxes are removed on drop; the shared
//! template at process exit (and, should a run be killed, by the next run).
//!
//! Backends: unreachable Redis and PostgreSQL are closed loopback ports (free ports nobody listens
//! on). The PostgreSQL on 127.0.0.1:5432, if any, is only ever asked for a database that does not
//! exist. A Redis with a password is a `redis-server` of the test's own on a free port (skipped
//! loudly when Redis is not installed, a failure with `FRESHCACHE_REQUIRE_REDIS=1`).

// Tests may unwrap, panic and cast freely: a failure is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_freshcache");
/// Longest any one invocation may run before it is killed and the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The password given in URLs, files and variables; it must never be printed or logged.
const SENTINEL: &str = "Sentinel-Pw-7f3a";
/// Prefix of every temporary directory this file creates.
const PREFIX: &str = "freshcache-cli-test";
/// The catalog's tables.
const TABLES: [&str; 3] = ["sales", "inventory", "customers"];

// ---------------------------------------------------------------------------------------------
// Harness: temporary directories, sandboxes, running the binary
// ---------------------------------------------------------------------------------------------

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(kind: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        sweep_stale_dirs();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "{PREFIX}-{}-{kind}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes directories left by earlier runs of this file that were killed (their process is
/// gone), once per process.
fn sweep_stale_dirs() {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
}

static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_template() {
    if let Some(root) = TEMPLATE.get() {
        let _ = std::fs::remove_dir_all(root);
    }
}

/// The data directory of a small initialised demo warehouse, created once per test process.
fn template_data() -> PathBuf {
    TEMPLATE
        .get_or_init(|| {
            sweep_stale_dirs();
            let root =
                std::env::temp_dir().join(format!("{PREFIX}-{}-template", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).expect("the template directory");
            // SAFETY: atexit takes a plain `extern "C" fn()` that captures nothing; it runs once at
            // process exit and only removes a directory.
            unsafe {
                libc::atexit(remove_template);
            }
            let sandbox = Sandbox::at(None, root.clone());
            let out = sandbox
                .fc()
                .words("--json warehouse init --sales 2000 --customers 200")
                .run();
            out.expect(0);
            assert_eq!(out.json()["loaded"], Value::Bool(true), "{}", out.dump());
            root
        })
        .join("data")
}

/// Where one test's invocations live: data dir, XDG dirs, logs, and the files the test writes.
struct Sandbox {
    _dir: Option<TempDir>,
    root: PathBuf,
}

impl Sandbox {
    fn at(dir: Option<TempDir>, root: PathBuf) -> Sandbox {
        for sub in [
            "data", "config", "state", "xdg-data", "home", "logs", "input",
        ] {
            std::fs::create_dir_all(root.join(sub)).expect("a sandbox directory");
        }
        Sandbox { _dir: dir, root }
    }

    /// A sandbox whose data directory is empty (not initialised).
    fn empty() -> Sandbox {
        let dir = TempDir::new("sandbox");
        let root = dir.path().to_path_buf();
        Sandbox::at(Some(dir), root)
    }

    /// A sandbox with a copy of the initialised demo warehouse.
    fn with_data() -> Sandbox {
        let template = template_data();
        let sandbox = Sandbox::empty();
        for entry in std::fs::read_dir(&template).expect("the template's data directory") {
            let entry = entry.expect("a template file");
            std::fs::copy(entry.path(), sandbox.data().join(entry.file_name()))
                .expect("a copy of a template file");
        }
        sandbox
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    fn xdg_config(&self) -> PathBuf {
        self.root.join("config")
    }

    fn xdg_state(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Writes a file the test gives to the binary (kept apart from what the binary writes).
    fn input(&self, name: &str, text: &str) -> PathBuf {
        let path = self.root.join("input").join(name);
        std::fs::write(&path, text).expect("an input file");
        path
    }

    /// The binary with a clean environment pointed into the sandbox, no options.
    fn fc_bare(&self) -> Fc {
        let mut cmd = Command::new(BIN);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FRESHCACHE_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE")
            .env("XDG_CONFIG_HOME", self.xdg_config())
            .env("XDG_STATE_HOME", self.xdg_state())
            .env("XDG_DATA_HOME", self.root.join("xdg-data"))
            .env("HOME", self.root.join("home"))
            .env("FRESHCACHE_LOG_DIR", self.logs())
            .stdin(Stdio::null());
        Fc {
            cmd,
            shown: vec!["freshcache".into()],
        }
    }

    /// The binary on the sandbox's data directory with no simulated warehouse latency.
    fn fc(&self) -> Fc {
        let data = self.data();
        self.fc_bare()
            .arg_path("--data-dir", &data)
            .args(["--latency", "0s"])
    }

    /// Every file under the log directory, as (path, bytes); asserts there is at least one.
    fn log_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let files = files_under(&self.logs());
        assert!(
            !files.is_empty(),
            "no log file was written in {}",
            self.logs().display()
        );
        files
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).expect("a log file");
                (p, bytes)
            })
            .collect()
    }

    fn log_text(&self) -> String {
        self.log_files()
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    /// The versions and update_log of the sandbox's warehouse (`--json warehouse status`).
    /// Runs the command line `line` (see [`Fc::words`]) in this sandbox, asserts it succeeded and
    /// returns its stdout as one JSON document.
    fn ok_json(&self, line: &str) -> Value {
        self.fc().words(line).run().expect(0).json()
    }

    fn status(&self) -> Value {
        self.ok_json("--json warehouse status")
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// One invocation being put together.
struct Fc {
    cmd: Command,
    shown: Vec<String>,
}

impl Fc {
    fn args<I, S>(mut self, args: I) -> Fc
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for a in args {
            self.cmd.arg(a.as_ref());
            self.shown.push(a.as_ref().escape_debug().to_string());
        }
        self
    }

    /// The words of `line` (split at white space) as arguments: a command line as typed.
    fn words(self, line: &str) -> Fc {
        self.args(line.split_whitespace())
    }

    fn arg_path(mut self, flag: &str, path: &Path) -> Fc {
        self.cmd.arg(flag).arg(path);
        self.shown.push(flag.into());
        self.shown.push(path.display().to_string());
        self
    }

    fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Fc {
        self.shown.insert(
            0,
            format!("{key}={}", value.as_ref().to_string_lossy().escape_debug()),
        );
        self.cmd.env(key, value);
        self
    }

    fn env_remove(mut self, key: &str) -> Fc {
        self.cmd.env_remove(key);
        self
    }

    fn spawn_piped(mut self) -> (Child, String) {
        let shown = self.shown.join(" ");
        let child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e}"));
        (child, shown)
    }

    /// Runs to the end (at most [`TIMEOUT`], then the child is killed and the test fails).
    fn run(self) -> Out {
        let (child, shown) = self.spawn_piped();
        let mut guard = ChildGuard(Some(child));
        let child = guard.0.as_mut().expect("the child");
        let stdout = read_all(child.stdout.take().expect("stdout"));
        let stderr = read_all(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for the child") {
                break status;
            }
            if Instant::now() > deadline {
                drop(guard);
                panic!("`{shown}` did not finish within {TIMEOUT:?}; killed");
            }
            thread::sleep(Duration::from_millis(5));
        };
        guard.0 = None;
        let raw_stdout = stdout.join().expect("the stdout reader");
        let raw_stderr = stderr.join().expect("the stderr reader");
        Out {
            shown,
            status,
            stdout: String::from_utf8_lossy(&raw_stdout).into_owned(),
            stderr: String::from_utf8_lossy(&raw_stderr).into_owned(),
            raw_stdout,
            raw_stderr,
        }
    }

    /// Starts a long-running command; its stdout arrives line by line.
    fn spawn(self) -> Running {
        let (mut child, shown) = self.spawn_piped();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = read_all(child.stderr.take().expect("stderr"));
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            shown,
            child: ChildGuard(Some(child)),
            lines,
            stderr: Some(stderr),
        }
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Kills and reaps its child on drop, unless it was taken out.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one finished invocation did.
struct Out {
    shown: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    raw_stdout: Vec<u8>,
    raw_stderr: Vec<u8>,
}

impl Out {
    fn dump(&self) -> String {
        format!(
            "`{}` exited with {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.shown,
            self.status.code(),
            self.stdout,
            self.stderr
        )
    }

    /// Never a panic, a backtrace or an internal error.
    fn no_panic(&self) -> &Self {
        assert!(
            self.status.code().is_some(),
            "killed by a signal: {}",
            self.dump()
        );
        assert_ne!(self.status.code(), Some(101), "a panic: {}", self.dump());
        for bad in [
            "panicked",
            "RUST_BACKTRACE",
            "stack backtrace",
            "internal error",
        ] {
            assert!(
                !self.stderr.contains(bad),
                "stderr shows `{bad}`: {}",
                self.dump()
            );
        }
        self
    }

    /// Asserts the exit code (and no panic).
    fn expect(&self, code: i32) -> &Self {
        self.no_panic();
        assert_eq!(
            self.status.code(),
            Some(code),
            "wrong exit code: {}",
            self.dump()
        );
        self
    }

    /// Asserts a failure with `code` and exactly one stderr line `freshcache: ...` that contains
    /// every one of `says`; returns the line.
    fn fails(&self, code: i32, says: &[&str]) -> String {
        self.expect(code);
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line on stderr: {}",
            self.dump()
        );
        let line = lines[0];
        // With --json the line is a JSON object whose `error` says it; otherwise it is text.
        let json: Option<Value> = serde_json::from_str(line).ok();
        let line = match &json {
            Some(e) => {
                assert_eq!(e["code"], code, "{}", self.dump());
                e["error"].as_str().unwrap_or_default()
            }
            None => {
                assert!(
                    line.starts_with("freshcache: "),
                    "the error line does not start with `freshcache: `: {}",
                    self.dump()
                );
                line
            }
        };
        for s in says {
            assert!(
                line.contains(s),
                "the error line does not say `{s}`: {}",
                self.dump()
            );
        }
        line.to_string()
    }

    /// Asserts a command-line error: exit 2, clap's `error:` and a pointer to `--help`.
    fn usage_error(&self, says: &str) {
        self.expect(2);
        assert!(
            self.stderr.starts_with("error:"),
            "a usage error starts with `error:`: {}",
            self.dump()
        );
        assert!(
            self.stderr.contains("--help"),
            "a usage error points to --help: {}",
            self.dump()
        );
        assert!(
            self.stderr.contains(says),
            "the usage error does not say `{says}`: {}",
            self.dump()
        );
        assert!(self.stdout.is_empty(), "stdout: {}", self.dump());
    }

    /// stdout as one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", self.dump()))
    }

    /// stdout as JSON Lines.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("a stdout line is not JSON ({e}): {l}\n{}", self.dump())
                })
            })
            .collect()
    }
}

/// A long-running child (`--follow`, `--watch`); killed on drop.
struct Running {
    shown: String,
    child: ChildGuard,
    lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    /// The next stdout line, waiting at most `within`.
    fn line(&mut self, within: Duration) -> String {
        match self.lines.recv_timeout(within) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("`{}` printed no line within {within:?}", self.shown)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let code = self
                    .child
                    .0
                    .as_mut()
                    .and_then(|c| c.wait().ok())
                    .and_then(|s| s.code());
                let stderr = self
                    .stderr
                    .take()
                    .and_then(|h| h.join().ok())
                    .unwrap_or_default();
                panic!(
                    "`{}` closed its stdout (exit {code:?}); stderr: {}",
                    self.shown,
                    String::from_utf8_lossy(&stderr)
                )
            }
        }
    }

    /// Sends SIGINT (Ctrl-C) and waits at most 10 s for the exit; returns (code, stderr).
    fn interrupt(mut self) -> (Option<i32>, String) {
        let mut child = self.child.0.take().expect("the child");
        let pid = libc::pid_t::try_from(child.id()).expect("a pid");
        // SAFETY: kill(2) takes no pointers; `pid` is our own child, not reaped yet (only
        // `child.wait` below reaps it), so it cannot name another process.
        let rc = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(rc, 0, "kill(SIGINT) failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for the child") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`{}` did not stop within 10 s of SIGINT; killed",
                    self.shown
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (status.code(), String::from_utf8_lossy(&stderr).into_owned())
    }
}

/// A loopback port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let port = listener.local_addr().expect("its address").port();
    drop(listener);
    assert_ne!(port, 6379, "never the Redis on 6379");
    port
}

fn postgres_listens() -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], 5432)),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// A database name that exists nowhere (never created, never dropped).
const ABSENT_DB: &str = "freshcache_cli_test_no_such_database_7f3a";

fn versions(status: &Value) -> Value {
    status["versions"].clone()
}

fn version(status: &Value, table: &str) -> u64 {
    status["versions"][table]
        .as_u64()
        .unwrap_or_else(|| panic!("no version of {table} in {status}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_string()
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn all_tables() -> Vec<String> {
    sorted(TABLES.iter().map(|t| t.to_string()).collect())
}

/// Fails with every collected problem listed.
fn assert_none(problems: &[String], what: &str) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
}

// ---------------------------------------------------------------------------------------------
// Version, help, completions, usage errors
// ---------------------------------------------------------------------------------------------

#[test]
fn version_and_top_level_help() {
    let s = Sandbox::empty();
    let out = s.fc_bare().args(["--version"]).run();
    out.expect(0);
    assert_eq!(
        out.stdout.trim(),
        format!("freshcache {}", env!("CARGO_PKG_VERSION"))
    );
    let out = s.fc_bare().args(["--help"]).run();
    out.expect(0);
    for code in [
        "0  success",
        "2  the command line",
        "3  refused",
        "4  bad input",
        "5  a backend",
        "6  the configuration",
    ] {
        assert!(
            out.stdout.contains(code),
            "--help lacks `{code}`: {}",
            out.dump()
        );
    }
}

/// Regression (issue 12): `--env production get` on an empty data directory created the demo
/// warehouse and answered from it (exit 0). Production never creates demo data: exit 5, saying
/// what to do, and nothing is written.
#[test]
fn production_never_creates_demo_data() {
    let s = Sandbox::empty();
    s.fc()
        .args(["--env", "production", "get", "stock_outs"])
        .run()
        .fails(5, &["no warehouse", "--warehouse"]);
    assert!(
        !s.data().join("warehouse.sqlite").exists(),
        "no warehouse file was created"
    );
}

/// Regression (issue 12): output into a closed pipe panicked (exit 101). It ends quietly now,
/// as any Unix tool's does.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let bin = env!("CARGO_BIN_EXE_freshcache");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{bin}' --json config check | true; '{bin}' config default | true"
        ))
        .output()
        .expect("sh runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Regression (issue 12): with `--json`, an error is one JSON object on stderr.
#[test]
fn json_errors_are_json() {
    let s = Sandbox::empty();
    let out = s
        .fc()
        .args(["--json", "--env", "production", "get", "stock_outs"])
        .run();
    out.expect(5);
    let e: Value =
        serde_json::from_str(out.stderr.trim()).unwrap_or_else(|_| panic!("{}", out.dump()));
    assert_eq!(e["code"], 5, "{}", out.dump());
    assert!(
        e["error"].as_str().unwrap().contains("no warehouse"),
        "{}",
        out.dump()
    );
    assert!(!e["hint"].as_str().unwrap().is_empty());
}

/// The subcommands listed in the `Commands:` section of a help text (`help` left out).
fn listed_subcommands(help: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        // Entries are indented by two spaces; wrapped descriptions by more.
        if !line.starts_with("  ") {
            break;
        }
        if line.starts_with("   ") {
            continue;
        }
        if let Some(name) = line.split_whitespace().next()
            && name != "help"
        {
            names.push(name.to_string());
        }
    }
    names
}

#[test]
fn every_subcommand_help_shows_an_example() {
    let s = Sandbox::empty();
    let mut queue: Vec<Vec<String>> = vec![Vec::new()];
    let mut seen = Vec::new();
    let mut problems = Vec::new();
    while let Some(path) = queue.pop() {
        let out = s.fc_bare().args(&path).args(["--help"]).run();
        let name = if path.is_empty() {
            "freshcache".to_string()
        } else {
            format!("freshcache {}", path.join(" "))
        };
        if out.status.code() != Some(0) || out.stderr.contains("panicked") {
            problems.push(format!(
                "`{name} --help` exited with {:?}: {}",
                out.status.code(),
                out.stderr
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
            ));
            continue;
        }
        if !path.is_empty() && !out.stdout.contains("Example") {
            problems.push(format!("`{name} --help` shows no Example"));
        }
        // Its own options first, then the shared ones under their own heading.
        let own = out.stdout.find("\nOptions:");
        let global = out.stdout.find("\nGlobal options:");
        if !path.is_empty() && !matches!((own, global), (Some(o), Some(g)) if o < g) {
            problems.push(format!(
                "`{name} --help` does not show its own options before \"Global options\""
            ));
        }
        for sub in listed_subcommands(&out.stdout) {
            let mut p = path.clone();
            p.push(sub);
            queue.push(p);
        }
        seen.push(path.join(" "));
    }
    for expected in [
        "get",
        "etl-complete",
        "simulate-partial",
        "invalidate",
        "warm",
        "traffic",
        "events",
        "stats",
        "warehouse",
        "etl",
        "config",
        "completions",
        "demo",
        "console",
        "bench",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "the crawl never reached `{expected}` (seen: {seen:?})"
        );
    }
    assert_none(&problems, "help texts");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let s = Sandbox::empty();
    for shell in ["bash", "zsh", "fish"] {
        let out = s.fc_bare().args(["completions", shell]).run();
        out.expect(0);
        assert!(out.stdout.len() > 200, "a short script: {}", out.dump());
        for sub in [
            "etl-complete",
            "invalidate",
            "warehouse",
            "simulate-partial",
        ] {
            assert!(
                out.stdout.contains(sub),
                "the {shell} script does not mention `{sub}`"
            );
        }
    }
}

#[test]
fn command_line_errors_exit_2() {
    let s = Sandbox::empty();
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus", "stats"], "'--bogus'"),
        (&["frobnicate"], "'frobnicate'"),
        (&["get"], "<QUERY>"),
        (&["etl-complete"], "--batch"),
        (&["simulate-partial"], "--fail"),
        (&["invalidate", "--yes"], "--table"),
        (&["completions"], "<SHELL>"),
        (&["completions", "tcsh"], "tcsh"),
        (&["warm", "--top", "x"], "--top"),
        (&["stats", "--interval"], "--interval"),
        (&["--log-keep", "0", "stats"], "--log-keep"),
        (&["--env", "bogus", "stats"], "--env"),
        (&["--strategy", "fastest", "stats"], "fastest"),
    ];
    for (args, says) in cases {
        s.fc().args(*args).run().usage_error(says);
    }
}

// ---------------------------------------------------------------------------------------------
// Success paths
// ---------------------------------------------------------------------------------------------

#[test]
fn warehouse_init_then_status() {
    let s = Sandbox::empty();
    let out = s
        .fc()
        .words("--json warehouse init --sales 300 --customers 30")
        .run();
    out.expect(0);
    let doc = out.json();
    assert_eq!(doc["loaded"], Value::Bool(true), "{}", out.dump());
    assert!(
        doc["warehouse"]
            .as_str()
            .unwrap()
            .contains("warehouse.sqlite")
    );
    assert!(s.data().join("warehouse.sqlite").is_file());

    let out = s.fc().args(["warehouse", "init"]).run();
    out.expect(0);
    assert!(
        out.stdout.contains("already initialised, nothing changed"),
        "{}",
        out.dump()
    );

    let status = s.status();
    let log = status["update_log"].as_array().expect("update_log");
    assert_eq!(log.len(), 3, "{status}");
    let sales = log.iter().find(|e| e["table"] == "sales").expect("sales");
    assert_eq!(sales["rows"], 300, "{status}");
    for t in TABLES {
        assert_eq!(version(&status, t), 0);
    }

    let out = s.fc().args(["warehouse", "status"]).run();
    out.expect(0);
    assert!(out.stdout.contains("update_log batch"), "{}", out.dump());
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("sales") && l.contains("300"))
    );
}

#[test]
fn get_answers_with_its_freshness() {
    let s = Sandbox::with_data();
    let out = s
        .fc()
        .words("--json get sales_by_region quarter=Q2 year=2026")
        .run();
    out.expect(0);
    let a = out.json();
    assert_eq!(a["query"], "sales_by_region");
    assert_eq!(a["params"]["quarter"], "Q2");
    assert_eq!(a["params"]["year"], "2026");
    assert_eq!(a["freshness"], "fresh");
    assert_eq!(a["versions"]["sales"], 0);
    assert_eq!(
        strings(&a["value"]["columns"]),
        ["region", "revenue_cents", "orders"]
    );
    assert_eq!(a["value"]["rows"].as_array().map(Vec::len), Some(5), "{a}");

    // Defaults fill the parameters left out; text mode shows the request and its freshness.
    let out = s.fc().args(["get", "sales_by_region"]).run();
    out.expect(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "sales_by_region quarter=Q1 year=2026",
        "{}",
        out.dump()
    );
    assert!(lines[1].starts_with("fresh · computed "), "{}", out.dump());
    assert!(lines[2].starts_with("region"), "{}", out.dump());
    assert!(out.stdout.contains("North America"), "{}", out.dump());
}

#[test]
fn etl_run_then_etl_complete_is_idempotent_and_reports_tables_behind() {
    let s = Sandbox::with_data();
    let doc = s.ok_json("--json etl run");
    let batch = doc["run"]["batch"].as_str().expect("a batch").to_string();
    for t in doc["run"]["tables"].as_array().expect("tables") {
        assert_eq!(t["outcome"], "loaded", "{doc}");
    }
    assert_eq!(
        sorted(strings(&doc["etl_complete"]["bumped"])),
        all_tables()
    );
    let status = s.status();
    for t in TABLES {
        assert_eq!(version(&status, t), 1, "{status}");
    }
    for e in status["update_log"].as_array().expect("update_log") {
        assert_eq!(e["batch"], batch.as_str(), "{status}");
    }

    // The same batch again: verified, nothing more bumped.
    let out = s
        .fc()
        .args(["--json", "etl-complete", "--batch", &batch])
        .run();
    out.expect(0);
    let r = out.json();
    assert_eq!(sorted(strings(&r["verified"])), all_tables());
    assert!(strings(&r["bumped"]).is_empty(), "{r}");
    assert_eq!(versions(&r), versions(&status));

    // A batch the warehouse has not reached: every table behind, with the reason.
    let later = format!("{batch}.9");
    let out = s
        .fc()
        .args(["etl-complete", "--batch", &later, "--tables", "sales"])
        .run();
    out.expect(0);
    assert!(
        out.stdout.contains("bumped:          none"),
        "{}",
        out.dump()
    );
    assert!(
        out.stdout
            .contains("behind:          sales (update_log is at"),
        "{}",
        out.dump()
    );
    assert_eq!(versions(&s.status()), versions(&status));

    // Regression (issue 10 I): a label that is not a time, or lies in the future, would sort
    // above every real batch: refused with exit 4, nothing changed.
    for (label, why) in [
        ("garbage", "not a date"),
        ("20991231-23:00", "in the future"),
    ] {
        let out = s.fc().args(["etl-complete", "--batch", label]).run();
        out.expect(4);
        assert!(out.stderr.contains(why), "{}", out.dump());
    }
    assert_eq!(versions(&s.status()), versions(&status));
}

#[test]
fn simulate_partial_in_development_and_staging() {
    for env in ["development", "staging"] {
        let s = Sandbox::with_data();
        let out = s
            .fc()
            .args([
                "--env",
                env,
                "--json",
                "simulate-partial",
                "--fail",
                "inventory",
                "--yes",
            ])
            .run();
        out.expect(0);
        let doc = out.json();
        let inventory = doc["run"]["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .find(|t| t["table"] == "inventory")
            .expect("inventory")
            .clone();
        assert_eq!(inventory["outcome"], "failed", "{doc}");
        let behind: Vec<&str> = doc["etl_complete"]["behind"]
            .as_array()
            .expect("behind")
            .iter()
            .map(|b| b["table"].as_str().expect("a table"))
            .collect();
        assert_eq!(behind, ["inventory"], "{doc}");
        assert_eq!(
            sorted(strings(&doc["etl_complete"]["bumped"])),
            ["customers", "sales"]
        );
        let status = s.status();
        assert_eq!(version(&status, "inventory"), 0, "{env}: {status}");
        assert_eq!(version(&status, "sales"), 1, "{env}: {status}");
    }
}

#[test]
fn invalidate_with_yes_bumps_versions_and_is_logged() {
    let s = Sandbox::with_data();
    let r = s.ok_json("--json invalidate --table sales --yes");
    assert_eq!(strings(&r["bumped"]), ["sales"], "{r}");
    let status = s.status();
    assert_eq!(version(&status, "sales"), 1);
    assert_eq!(version(&status, "inventory"), 0);

    let out = s.fc().args(["invalidate", "--all", "--yes"]).run();
    out.expect(0);
    let status = s.status();
    assert_eq!(version(&status, "sales"), 2, "{status}");
    assert_eq!(version(&status, "inventory"), 1, "{status}");
    assert_eq!(version(&status, "customers"), 1, "{status}");

    let out = s.fc().args(["--json", "events"]).run();
    out.expect(0);
    let actions: Vec<Value> = out
        .json_lines()
        .into_iter()
        .filter(|e| e["type"] == "operator_action" && e["action"] == "invalidate")
        .collect();
    assert_eq!(actions.len(), 2, "{}", out.dump());
    assert!(
        actions.iter().all(|e| e["result"] == "ok"),
        "{}",
        out.dump()
    );
}

#[test]
fn warm_loads_the_top_keys() {
    let s = Sandbox::with_data();
    let p = s.ok_json("--json warm --top 5");
    assert_eq!(p["total"], 5, "{p}");
    assert_eq!(p["done"], 5, "{p}");
    assert_eq!(p["failed"], 0, "{p}");
    // Embedded: the warmed answers end with the process, and it says so.
    assert_eq!(p["shared"], false, "{p}");
    let out = s.fc().args(["warm", "--top", "2"]).run();
    out.expect(0);
    assert!(out.stderr.contains("end with it"), "{}", out.dump());
}

#[test]
fn traffic_asks_questions_and_prints_a_summary() {
    let s = Sandbox::with_data();
    let r = s.ok_json("--json traffic --users 20 --duration 2s --think 100ms");
    assert_eq!(r["users"], 20, "{r}");
    assert!(
        r["requests"].as_u64().unwrap() > 0,
        "no question was asked: {r}"
    );
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["warehouse_queries"].as_u64().unwrap() > 0, "{r}");
    let seconds = r["seconds"].as_f64().unwrap();
    assert!((1.5..30.0).contains(&seconds), "{r}");

    let out = s
        .fc()
        .words("traffic --users 5 --duration 300ms --think 50ms")
        .run();
    out.expect(0);
    assert!(
        out.stdout.starts_with("traffic summary (5 users"),
        "{}",
        out.dump()
    );
    assert!(out.stdout.contains("questions asked"), "{}", out.dump());
}

#[test]
fn events_lists_json_lines_and_follow_prints_new_ones() {
    let s = Sandbox::with_data();
    s.fc().args(["etl", "run"]).run().expect(0);
    s.fc()
        .args(["invalidate", "--table", "customers", "--yes"])
        .run()
        .expect(0);

    let out = s.fc().args(["--json", "events"]).run();
    out.expect(0);
    let events = out.json_lines();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for t in ["etl_run", "warehouse_updated", "operator_action"] {
        assert!(types.contains(&t), "no {t} event: {}", out.dump());
    }
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let last_seq = *seqs.last().unwrap();

    let out = s.fc().args(["events", "--limit", "1"]).run();
    out.expect(0);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.dump());
    assert!(
        out.stdout.starts_with(&format!("#{last_seq} ")),
        "{}",
        out.dump()
    );

    // --follow: the latest event at once, then what another process does.
    let mut follow = s
        .fc()
        .args(["--json", "events", "--follow", "--limit", "1"])
        .spawn();
    let first: Value = serde_json::from_str(&follow.line(Duration::from_secs(20))).unwrap();
    assert_eq!(first["seq"], last_seq);
    s.fc()
        .args(["invalidate", "--table", "sales", "--yes"])
        .run()
        .expect(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e: Value = serde_json::from_str(&follow.line(left)).unwrap();
        assert!(e["seq"].as_u64().unwrap() > last_seq, "{e}");
        if e["type"] == "operator_action" && e["targets"] == serde_json::json!(["sales"]) {
            break;
        }
    }
    let (code, stderr) = follow.interrupt();
    assert_eq!(
        code,
        Some(0),
        "events --follow after SIGINT; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn stats_once_and_watching() {
    let s = Sandbox::with_data();
    s.fc()
        .args(["invalidate", "--table", "sales", "--yes"])
        .run()
        .expect(0);
    let doc = s.ok_json("--json stats");
    assert_eq!(doc["versions"]["sales"], 1, "{doc}");
    // The console's per-instance rows, the same list (empty: no instance runs here).
    assert!(doc["fleet"].is_array(), "{doc}");
    for key in [
        "instances",
        "requests",
        "hits",
        "misses",
        "warehouse_queries",
        "bad_events",
    ] {
        assert!(doc[key].is_u64(), "no {key}: {doc}");
    }

    let out = s.fc().args(["stats"]).run();
    out.expect(0);
    assert!(
        out.stdout.contains("live instance(s) on embedded"),
        "{}",
        out.dump()
    );
    assert!(out.stdout.contains("sales=1"), "{}", out.dump());

    let mut watch = s
        .fc()
        .args(["--json", "stats", "--watch", "--interval", "200ms"])
        .spawn();
    let mut stamps = Vec::new();
    for _ in 0..3 {
        let doc: Value = serde_json::from_str(&watch.line(Duration::from_secs(20)))
            .expect("a JSON line from stats --watch");
        assert_eq!(doc["versions"]["sales"], 1, "{doc}");
        stamps.push(doc["at"].as_str().expect("at").to_string());
    }
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    let (code, stderr) = watch.interrupt();
    assert_eq!(
        code,
        Some(0),
        "stats --watch after SIGINT; stderr: {stderr}"
    );
}

/// `config check` shows the effective value of every setting: where a default applies, the
/// default itself with its origin "default" (the data directory, the warehouse file in it, the
/// simulated latency, the log level and directory), never "(unset)".
#[test]
fn config_check_prints_the_defaults_it_applies() {
    let s = Sandbox::empty();
    let out = s.fc_bare().args(["config", "check"]).run();
    out.expect(0);
    assert!(!out.stdout.contains("(unset)"), "{}", out.dump());
    let row = |stdout: &str, key: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let data = s.root.join("xdg-data").join("freshcache");
    let expect = [
        ("data_dir", data.display().to_string()),
        (
            "warehouse.url",
            data.join("warehouse.sqlite").display().to_string(),
        ),
        ("warehouse.latency", "2s-5s".to_string()),
        ("log.level", "info".to_string()),
    ];
    for (key, value) in &expect {
        assert_eq!(
            row(&out.stdout, key),
            [key.to_string(), value.clone(), "default".to_string()],
            "{}",
            out.dump()
        );
    }
    for key in ["redis.url", "redis.ca", "hour", "metrics.addr"] {
        let r = row(&out.stdout, key);
        assert_eq!(r[1], "none:", "{}", out.dump());
        assert_eq!(
            r.last().map(String::as_str),
            Some("default"),
            "{}",
            out.dump()
        );
    }

    // A PostgreSQL warehouse has no simulated latency by default.
    let out = s
        .fc_bare()
        .words("--warehouse postgres://analyst@127.0.0.1/sales config check")
        .run();
    out.expect(0);
    assert_eq!(
        row(&out.stdout, "warehouse.latency")[1],
        "0s",
        "{}",
        out.dump()
    );

    // The JSON report carries the same values.
    let out = s.fc_bare().args(["--json", "config", "check"]).run();
    out.expect(0);
    let doc = out.json();
    let setting = |key: &str| {
        doc["settings"]
            .as_array()
            .expect("settings")
            .iter()
            .find(|x| x["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {doc}"))
            .clone()
    };
    assert_eq!(setting("data_dir")["value"], data.display().to_string());
    assert_eq!(setting("data_dir")["origin"]["kind"], "default");
    assert_eq!(setting("log.level")["value"], "info");
    assert_eq!(setting("redis.url")["value"], Value::Null);
}

#[test]
fn config_check_and_default() {
    let s = Sandbox::with_data();
    let out = s.fc().args(["config", "check"]).run();
    out.expect(0);
    let default_path = s.xdg_config().join("freshcache").join("config.toml");
    assert!(
        out.stdout.starts_with(&format!(
            "configuration file: none (looked for {})",
            default_path.display()
        )),
        "{}",
        out.dump()
    );
    assert_eq!(out.stdout.lines().last(), Some("valid"));
    assert!(
        out.stdout.contains("environment FRESHCACHE_LOG_DIR"),
        "{}",
        out.dump()
    );

    let doc = s.ok_json("--json config check");
    assert_eq!(doc["file"], Value::Null);
    let settings = doc["settings"].as_array().expect("settings");
    let setting = |key: &str| {
        settings
            .iter()
            .find(|x| x["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {doc}"))
            .clone()
    };
    assert_eq!(setting("data_dir")["origin"]["flag"], "--data-dir");
    assert_eq!(setting("log.dir")["origin"]["var"], "FRESHCACHE_LOG_DIR");
    assert_eq!(setting("redis.url")["value"], Value::Null);
    assert_eq!(setting("strategy")["origin"]["kind"], "default");

    // The documented default file passes the check and changes nothing.
    let out = s.fc_bare().args(["config", "default"]).run();
    out.expect(0);
    assert!(
        out.stdout.starts_with("# freshcache configuration"),
        "{}",
        out.dump()
    );
    let file = s.input("default.toml", &out.stdout);
    let out = s
        .fc()
        .arg_path("--config", &file)
        .args(["--json", "config", "check"])
        .run();
    out.expect(0);
    let doc = out.json();
    assert_eq!(doc["file"], file.display().to_string());
    let strategy = doc["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == "strategy")
        .unwrap()
        .clone();
    assert_eq!(strategy["value"], "freshcache");
    assert_eq!(strategy["origin"]["kind"], "file", "{doc}");
    s.fc()
        .arg_path("--config", &file)
        .args(["stats"])
        .run()
        .expect(0);

    // Precedence: flag > FRESHCACHE_* > file > default.
    let file = s.input("ttl.toml", "# strategy below\nstrategy = \"ttl\"\n");
    let effective = |fc: Fc| {
        let out = fc.args(["--json", "config", "check"]).run();
        out.expect(0);
        out.json()["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["key"] == "strategy")
            .unwrap()
            .clone()
    };
    let st = effective(s.fc().arg_path("--config", &file));
    assert_eq!(st["value"], "ttl");
    assert_eq!(st["origin"]["line"], 2, "{st}");
    let st = effective(
        s.fc()
            .arg_path("--config", &file)
            .env("FRESHCACHE_STRATEGY", "lock"),
    );
    assert_eq!(st["value"], "lock");
    assert_eq!(st["origin"]["var"], "FRESHCACHE_STRATEGY");
    let st = effective(
        s.fc()
            .arg_path("--config", &file)
            .env("FRESHCACHE_STRATEGY", "lock")
            .args(["--strategy", "swr"]),
    );
    assert_eq!(st["value"], "swr");
    assert_eq!(st["origin"]["flag"], "--strategy");

    // FRESHCACHE_CONFIG names the file too.
    let st = effective(s.fc().env("FRESHCACHE_CONFIG", &file));
    assert_eq!(st["value"], "ttl");
}

#[test]
fn logs_go_to_daily_files_in_the_log_dir() {
    let s = Sandbox::with_data();
    s.fc().args(["stats"]).run().expect(0);
    let files = s.log_files();
    let name = files[0]
        .0
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let date = name
        .strip_prefix("freshcache.")
        .and_then(|n| n.strip_suffix(".log"))
        .unwrap_or_else(|| panic!("log file name {name}"));
    assert!(
        date.len() == 10 && date.chars().filter(|c| *c == '-').count() == 2,
        "{name}"
    );
    let text = s.log_text();
    assert!(text.contains("start") && text.contains("stats"), "{text}");
    // Nothing under the default location while FRESHCACHE_LOG_DIR points elsewhere.
    assert!(!s.xdg_state().join("freshcache").exists());

    // Without FRESHCACHE_LOG_DIR: $XDG_STATE_HOME/freshcache/logs.
    s.fc()
        .env_remove("FRESHCACHE_LOG_DIR")
        .args(["stats"])
        .run()
        .expect(0);
    assert!(
        !files_under(&s.xdg_state().join("freshcache").join("logs")).is_empty(),
        "no log under $XDG_STATE_HOME/freshcache/logs"
    );
    // --log-dir wins over the variable.
    let other = s.root.join("other-logs");
    s.fc()
        .arg_path("--log-dir", &other)
        .args(["stats"])
        .run()
        .expect(0);
    assert!(!files_under(&other).is_empty(), "no log under --log-dir");
}

#[test]
fn demo_without_a_terminal_tells_the_story_and_console_refuses() {
    let s = Sandbox::empty();
    // No command and no terminal: the headless demo.
    let out = s.fc_bare().run();
    out.expect(0);
    assert!(out.stdout.starts_with("freshcache demo"), "{}", out.dump());
    assert!(out.stdout.contains("warehouse queries"), "{}", out.dump());

    let s = Sandbox::with_data();
    s.fc()
        .args(["console"])
        .run()
        .fails(1, &["needs a terminal", "headless"]);
}

#[test]
fn demo_headless_json_prints_json() {
    let s = Sandbox::empty();
    let out = s.fc_bare().args(["--json", "demo", "--headless"]).run();
    out.expect(0);
    out.json();
}

#[test]
fn bench_lag_runs() {
    let s = Sandbox::empty();
    // Bare: the benches run on simulated warehouses of their own and refuse `--latency`.
    let out = s
        .fc_bare()
        .args(["--json", "bench", "lag", "--rounds", "5"])
        .run();
    out.expect(0);
    let r = out.json();
    assert_eq!(r["rounds"], 5, "{r}");
    assert!(r["p50_ms"].is_f64(), "{r}");
}

#[test]
fn bench_stampede_runs() {
    let s = Sandbox::empty();
    let out = s
        .fc_bare()
        .words("--json bench stampede --requesters 20 --load-ms 5")
        .run();
    out.expect(0);
    out.json();
}

/// A shared option a bench would ignore is a command-line error that names the option, the bench
/// and its own option for the job, never silently dropped; the same setting from the environment
/// (shared by every command) is not refused.
#[test]
fn benches_refuse_shared_options_they_ignore() {
    let s = Sandbox::empty();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["bench", "stampede", "--latency", "1s", "--requesters", "2"],
            &["`--latency` does nothing for `bench stampede` (it has `--load-ms`)"],
        ),
        (
            &["--latency", "0s", "bench", "stampede", "--requesters", "2"],
            &["`--latency` does nothing for `bench stampede` (it has `--load-ms`)"],
        ),
        (
            &["bench", "day", "--hour", "10s", "--hours", "1"],
            &["`--hour` does nothing for `bench day` (it has `--hour-real`)"],
        ),
        (
            &["bench", "day", "--latency", "1s", "--hours", "1"],
            &["`--latency` does nothing for `bench day` (it has `--warehouse-ms`)"],
        ),
        (
            &[
                "--strategy",
                "ttl",
                "bench",
                "stampede",
                "--requesters",
                "2",
            ],
            &["`--strategy` does nothing for `bench stampede` (it has `--strategies`)"],
        ),
        (
            &["bench", "lag", "--rounds", "2", "--lease", "5s"],
            &["`--lease` does nothing for `bench lag`"],
        ),
        (
            &[
                "--redis",
                "redis://127.0.0.1:1/0",
                "--warehouse",
                "w.sqlite",
                "bench",
                "redis-hits",
            ],
            &["`--warehouse` does nothing for `bench redis-hits`"],
        ),
    ];
    for (args, says) in cases {
        s.fc_bare().args(*args).run().fails(2, says);
    }
    s.fc_bare()
        .env("FRESHCACHE_LATENCY", "1s")
        .args(["--json", "bench", "lag", "--rounds", "2"])
        .run()
        .expect(0);
}

/// The lines of one heading of a help text (`Options:`, `Global options:`), up to the next one.
fn help_section<'a>(help: &'a str, heading: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|l| *l != heading)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter(|l| l.trim_start().starts_with('-'))
        .collect()
}

/// A subcommand's help lists its own options first, then under "Global options" only the shared
/// options it reads: `bench stampede` has `--load-ms`, not `--latency`; `bench day` has
/// `--hour-real`, not `--hour`; `stats` shows the warehouse and Redis, not the lease.
#[test]
fn subcommand_help_shows_its_own_options_first_and_only_the_shared_ones_it_reads() {
    let s = Sandbox::empty();
    let flag = |line: &&str| {
        line.split_whitespace()
            .find(|w| w.starts_with("--"))
            .map(|w| w.trim_end_matches(',').to_string())
            .unwrap_or_default()
    };
    // (command, own options, shared options shown, shared options hidden)
    type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &["bench", "stampede"],
            &[
                "--requesters",
                "--load-ms",
                "--strategies",
                "--processes",
                "--keys",
            ],
            &["--redis", "--lease", "--json", "--config", "--log-dir"],
            &[
                "--latency",
                "--hour",
                "--strategy",
                "--warehouse",
                "--redis-timeout",
                "--env",
            ],
        ),
        (
            &["bench", "day"],
            &[
                "--users",
                "--hours",
                "--hour-real",
                "--warehouse-ms",
                "--strategies",
            ],
            &["--json", "--config"],
            &["--hour", "--latency", "--strategy", "--redis", "--lease"],
        ),
        (
            &["stats"],
            &["--live", "--watch", "--interval"],
            &[
                "--warehouse",
                "--data-dir",
                "--redis",
                "--redis-timeout",
                "--json",
            ],
            &[
                "--lease",
                "--strategy",
                "--max-unverified",
                "--metrics-addr",
                "--read-only",
            ],
        ),
        (
            &["get"],
            &[],
            &[
                "--redis",
                "--lease",
                "--strategy",
                "--env",
                "--read-only",
                "--json",
            ],
            &["--metrics-addr"],
        ),
    ];
    for (command, own, shown, hidden) in cases {
        let out = s.fc_bare().args(*command).args(["--help"]).run();
        out.expect(0);
        let help = &out.stdout;
        let own_at = help.find("\nOptions:").unwrap_or(usize::MAX);
        let global_at = help.find("\nGlobal options:").unwrap_or(0);
        assert!(own_at < global_at, "own options first: {help}");
        let own_flags: Vec<String> = help_section(help, "Options:").iter().map(flag).collect();
        let global_flags: Vec<String> = help_section(help, "Global options:")
            .iter()
            .map(flag)
            .collect();
        for f in *own {
            assert!(
                own_flags.iter().any(|o| o == f),
                "{command:?}: {f} not under Options: {help}"
            );
        }
        assert!(
            !own_flags
                .iter()
                .any(|o| shown.contains(&o.as_str()) || hidden.contains(&o.as_str())),
            "{command:?}: a shared option among its own: {own_flags:?}"
        );
        for f in *shown {
            assert!(
                global_flags.iter().any(|g| g == f),
                "{command:?}: {f} not under Global options: {help}"
            );
        }
        for f in *hidden {
            assert!(
                !global_flags.iter().any(|g| g == f),
                "{command:?}: {f} does nothing there but is shown: {help}"
            );
        }
    }
}

/// A shared option given on the command line to a command that does nothing with it is refused
/// (exit 2, naming the option and the command), whatever the command; the same setting in the
/// environment is shared by every command and is not refused.
#[test]
fn every_command_refuses_shared_options_it_ignores() {
    let s = Sandbox::with_data();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--lease", "3s", "stats"],
            &["`--lease` does nothing for `stats`; leave it out"],
        ),
        (
            &["--metrics-addr", "127.0.0.1:9", "get", "sales_by_region"],
            &["`--metrics-addr` does nothing for `get`"],
        ),
        (
            &["warehouse", "status", "--strategy", "ttl"],
            &["`--strategy` does nothing for `warehouse status`"],
        ),
        (
            &["--json", "console"],
            &["`--json` does nothing for `console`"],
        ),
        (
            &["--redis-timeout", "1s", "bench", "lag", "--rounds", "2"],
            &["`--redis-timeout` does nothing for `bench lag`"],
        ),
        (
            &["--read-only", "completions", "bash"],
            &["`--read-only` does nothing for `completions`"],
        ),
    ];
    for (args, says) in cases {
        // Refused before anything is opened: no data directory needed.
        let out = s.fc_bare().args(*args).run();
        out.fails(2, says);
        assert!(out.stdout.is_empty(), "{}", out.dump());
    }
    s.fc()
        .env("FRESHCACHE_LEASE", "3s")
        .env("FRESHCACHE_METRICS_ADDR", "127.0.0.1:9")
        .args(["stats"])
        .run()
        .expect(0);
}

/// `config check` on a file with several bad values reports every one of them at once, each with
/// its file and line and what is accepted, and exits 6.
#[test]
fn config_check_reports_every_bad_value_of_a_file_at_once() {
    let s = Sandbox::empty();
    let file = s.input(
        "many.toml",
        "environment = \"moon\"\nstrategy = \"fastest\"\n\n[redis]\ntimeout = \"soon\"\nlease = \"0s\"\nurl = \"http://ann:S3NT1NEL@h/0\"\n\n[log]\nkeep = 400\nbogus = 1\n",
    );
    let out = s
        .fc_bare()
        .arg_path("--config", &file)
        .args(["config", "check"])
        .run();
    out.expect(6);
    let shown = file.display().to_string();
    let lines: Vec<&str> = out.stderr.lines().collect();
    let expect = [
        ("line 1", "`environment`", "development"),
        ("line 2", "`strategy`", "freshcache"),
        ("line 5", "`redis.timeout`", "`soon`"),
        ("line 6", "`redis.lease`", "more than zero"),
        ("line 7", "`redis.url`", "redis://"),
        ("line 10", "`log.keep`", "1 to 365"),
        ("line 11", "unknown key `bogus`", "`keep`"),
    ];
    assert_eq!(lines.len(), expect.len(), "{}", out.dump());
    for (line, (at, key, accepted)) in lines.iter().zip(expect) {
        assert!(
            line.starts_with("freshcache: config file ")
                && line.contains(&shown)
                && line.contains(&format!("{at}:"))
                && line.contains(key)
                && line.contains(accepted),
            "`{line}` lacks {at} / {key} / {accepted}: {}",
            out.dump()
        );
    }
    assert!(!out.stderr.contains("S3NT1NEL"), "{}", out.dump());
    assert!(out.stdout.is_empty(), "{}", out.dump());
}

// ---------------------------------------------------------------------------------------------
// Bad input (4) and guards (3)
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_input_exits_4_with_what_is_accepted() {
    let s = Sandbox::with_data();
    let before = s.status();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["get", "nope"],
            &["unknown query `nope`", "sales_by_region"],
        ),
        (
            &["get", "sales_by_region", "bogus=1"],
            &["no parameter `bogus`", "quarter, year"],
        ),
        (
            &["get", "sales_by_region", "quarter=Q9"],
            &["`Q9` is not one of Q1, Q2, Q3, Q4"],
        ),
        (&["get", "sales_by_region", "noequals"], &["NAME=VALUE"]),
        (
            &["invalidate", "--table", "nope", "--yes"],
            &["unknown table `nope`", "sales, inventory, customers"],
        ),
        (
            &["etl-complete", "--batch", "bad label"],
            &["bad batch label", "e.g. 20261126-10:00"],
        ),
        (
            &[
                "etl-complete",
                "--batch",
                "20261126-10:00",
                "--tables",
                "nope",
            ],
            &["unknown table `nope`"],
        ),
        (
            &["simulate-partial", "--fail", "nope"],
            &["unknown table `nope`"],
        ),
        (&["etl", "run", "--late", "customers"], &["TABLE=DURATION"]),
        (&["etl", "run", "--fail", "nope"], &["unknown table `nope`"]),
        (&["stats", "--interval", "0s"], &["--interval", "e.g."]),
        (&["stats", "--live", "soon"], &["--live"]),
        (&["traffic", "--duration", "soon"], &["--duration", "e.g."]),
        (&["bench", "redis-hits"], &["needs --redis"]),
    ];
    for (args, says) in cases {
        s.fc().args(*args).run().fails(4, says);
    }
    assert_eq!(
        versions(&s.status()),
        versions(&before),
        "bad input changed versions"
    );
}

#[test]
fn control_characters_in_input_are_refused_and_never_echoed_raw() {
    let s = Sandbox::with_data();
    let cases: &[&[&str]] = &[
        &["get", "sales_by_region", "quarter=\u{1b}[2J\u{1b}[31mQ1"],
        &["get", "\u{1b}]0;pwned\u{7}sales_by_region"],
        &["get", "sales_by_region", "\u{1b}[31mquarter=Q1"],
        &["invalidate", "--table", "\u{1b}[2Jsales", "--yes"],
        &["etl-complete", "--batch", "2026\u{1b}[2J"],
    ];
    for args in cases {
        let out = s.fc().args(*args).run();
        out.fails(4, &[]);
        for (what, bytes) in [("stderr", &out.raw_stderr), ("stdout", &out.raw_stdout)] {
            assert!(
                !bytes.iter().any(|b| *b == 0x1b || *b == 0x07),
                "{what} carries a raw control character: {}",
                out.dump()
            );
        }
    }
}

#[test]
fn guards_refuse_with_exit_3_and_change_nothing() {
    let s = Sandbox::with_data();
    let before = s.status();
    s.fc()
        .words("--env production simulate-partial --fail inventory")
        .run()
        .fails(3, &["refused", "production"]);
    s.fc()
        .args(["--read-only", "invalidate", "--table", "sales", "--yes"])
        .run()
        .fails(3, &["refused", "read-only"]);
    s.fc()
        .args(["--read-only", "warm"])
        .run()
        .fails(3, &["refused", "read-only"]);

    // No --yes and stdin is not a terminal: the blast radius, then the refusal.
    for args in [
        &["invalidate", "--table", "sales"][..],
        &["--env", "production", "invalidate", "--all"][..],
        &["simulate-partial", "--fail", "inventory"][..],
    ] {
        let out = s.fc().args(args).run();
        out.expect(3);
        let last = out.stderr.lines().last().unwrap_or("");
        assert!(
            last.starts_with("freshcache: refused") && last.contains("--yes"),
            "{}",
            out.dump()
        );
    }
    let after = s.status();
    assert_eq!(
        versions(&after),
        versions(&before),
        "a refused action changed versions"
    );
    assert_eq!(
        after["update_log"], before["update_log"],
        "a refused action loaded data"
    );

    // Refusals below the UI are in the audit log.
    let out = s.fc().args(["--json", "events"]).run();
    out.expect(0);
    let refused: Vec<String> = out
        .json_lines()
        .iter()
        .filter(|e| {
            e["type"] == "operator_action"
                && e["result"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("refused"))
        })
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for action in ["simulate-partial", "invalidate", "warm"] {
        assert!(
            refused.iter().any(|a| a == action),
            "no refused {action} event: {}",
            out.dump()
        );
    }
}

/// `etl run` and `traffic --with-etl` run the ETL *simulator*: it writes generated rows into the
/// warehouse and bumps versions. `--read-only` promises to "refuse every action that changes
/// anything" and production "refuses simulations".
#[test]
fn read_only_and_production_refuse_the_etl_simulator() {
    let mut problems = Vec::new();
    let simulators = [
        &["etl", "run"][..],
        &["traffic", "--users", "2", "--duration", "2s", "--with-etl"][..],
    ];
    for (flags, command) in [&["--read-only"][..], &["--env", "production"][..]]
        .into_iter()
        .flat_map(|f| simulators.iter().map(move |c| (f, *c)))
    {
        let s = Sandbox::with_data();
        let before = s.status();
        let out = s.fc().args(flags).args(command).run();
        out.no_panic();
        let after = s.status();
        if out.status.code() != Some(3) {
            problems.push(format!(
                "`{}` exited with {:?}, expected 3 (refused)",
                out.shown,
                out.status.code()
            ));
        }
        if after["update_log"] != before["update_log"] || versions(&after) != versions(&before) {
            problems.push(format!(
                "`{}` loaded a simulated batch: update_log {} -> {}, versions {} -> {}",
                out.shown,
                before["update_log"][0]["batch"],
                after["update_log"][0]["batch"],
                versions(&before),
                versions(&after)
            ));
        }
    }
    assert_none(&problems, "guards around the ETL simulator");
}

/// `warehouse init` writes the demo schema and data: not into a production warehouse, and not in
/// read-only mode; refused before anything is created.
#[test]
fn warehouse_init_is_refused_in_production_and_read_only() {
    for (flags, says) in [
        (&["--read-only"][..], "read-only"),
        (&["--env", "production"][..], "production"),
    ] {
        let s = Sandbox::empty();
        s.fc()
            .args(flags)
            .args(["warehouse", "init", "--sales", "10"])
            .run()
            .fails(3, &[says]);
        let created: Vec<_> = std::fs::read_dir(s.data())
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            created.is_empty(),
            "{flags:?}: the refused init created {created:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Unavailable backends (5)
// ---------------------------------------------------------------------------------------------

#[test]
fn unreachable_redis_exits_5() {
    let s = Sandbox::with_data();
    let port = closed_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    for args in [
        &["stats"][..],
        &["--json", "stats"][..],
        &["events"][..],
        &["warehouse", "status"][..],
        &["invalidate", "--all", "--yes"][..],
    ] {
        s.fc()
            .args(["--redis", &url])
            .args(args)
            .run()
            .fails(5, &["redis unavailable"]);
    }
    // FRESHCACHE_REDIS does the same.
    s.fc()
        .env("FRESHCACHE_REDIS", &url)
        .args(["stats"])
        .run()
        .fails(5, &["redis unavailable"]);
}

/// Issue 12: `get` with Redis unreachable answers from the warehouse and says the versions are
/// unknown, instead of printing this process's zeros as the versions (`inventory=0`).
#[test]
fn a_degraded_get_does_not_invent_versions() {
    let s = Sandbox::with_data();
    let url = format!("redis://127.0.0.1:{}/0", closed_port());
    let out = s.fc().args(["--redis", &url, "get", "stock_outs"]).run();
    out.expect(0);
    assert!(
        out.stdout
            .contains("versions unknown (the shared cache did not answer)"),
        "{}",
        out.dump()
    );
    assert!(!out.stdout.contains("inventory=0"), "{}", out.dump());
    assert!(out.stderr.contains("running degraded"), "{}", out.dump());
    let out = s
        .fc()
        .args(["--redis", &url, "--json", "get", "stock_outs"])
        .run();
    out.expect(0);
    let doc = out.json();
    assert_eq!(doc["versions"], Value::Null, "{doc}");
    assert!(doc["value"]["rows"].is_array(), "{doc}");
}

/// "Errors print one line that says what happened and what to do": an unreachable Redis should
/// be named (masked), or the operator cannot tell which setting to fix.
#[test]
fn unreachable_redis_message_names_the_server() {
    let s = Sandbox::with_data();
    let port = closed_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    s.fc()
        .args(["--redis", &url, "stats"])
        .run()
        .fails(5, &[&format!("127.0.0.1:{port}")]);
}

#[test]
fn postgres_on_a_closed_port_exits_5() {
    let s = Sandbox::empty();
    let port = closed_port();
    let url = format!("postgres://analyst@127.0.0.1:{port}/sales");
    for args in [
        &["warehouse", "status"][..],
        &["warehouse", "init", "--sales", "10"][..],
        &["etl", "run"][..],
        &["etl-complete", "--batch", "20261126-10:00"][..],
        &["simulate-partial", "--fail", "inventory", "--yes"][..],
    ] {
        s.fc().args(["--warehouse", &url]).args(args).run().fails(
            5,
            &[
                "warehouse unavailable",
                &format!("postgres://analyst@127.0.0.1:{port}/sales"),
            ],
        );
    }
}

/// Exit code 5 is "a backend is unavailable: warehouse ... unreachable"; `get` says 1.
#[test]
fn get_from_an_unreachable_warehouse_exits_5() {
    let s = Sandbox::empty();
    let port = closed_port();
    let url = format!("postgres://analyst@127.0.0.1:{port}/sales");
    s.fc()
        .args(["--warehouse", &url, "get", "sales_by_region"])
        .run()
        .fails(5, &["warehouse unavailable"]);
}

/// Every load failed because the warehouse is down, yet `warm` reports success (exit 0).
#[test]
fn warm_with_the_warehouse_down_does_not_report_success() {
    let s = Sandbox::empty();
    let port = closed_port();
    let url = format!("postgres://analyst@127.0.0.1:{port}/sales");
    let out = s
        .fc()
        .args(["--warehouse", &url, "--json", "warm", "--top", "3"])
        .run();
    out.no_panic();
    assert_eq!(
        out.status.code(),
        Some(5),
        "warm with an unreachable warehouse: {}",
        out.dump()
    );
}

#[test]
fn postgres_database_that_does_not_exist_exits_5() {
    let s = Sandbox::empty();
    let url = format!("postgres://postgres@127.0.0.1:5432/{ABSENT_DB}");
    let up = postgres_listens();
    if !up {
        eprintln!("note: nothing listens on 127.0.0.1:5432; checking the refused connection only");
    }
    for args in [&["warehouse", "status"][..], &["etl", "run"][..]] {
        let line = s
            .fc()
            .args(["--warehouse", &url])
            .args(args)
            .run()
            .fails(5, &["warehouse unavailable", ABSENT_DB]);
        if up {
            assert!(line.contains("does not exist"), "{line}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bad configuration (6)
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_configuration_exits_6_and_says_where() {
    let s = Sandbox::with_data();
    let file = s.input(
        "unknown-key.toml",
        "[redis]\nurl = \"redis://127.0.0.1:1/0\"\ntimout = \"1s\"\n",
    );
    s.fc()
        .arg_path("--config", &file)
        .args(["stats"])
        .run()
        .fails(
            6,
            &[
                &file.display().to_string(),
                "line 3",
                "unknown key `timout`",
                "`timeout`",
                "`lease`",
            ],
        );

    let file = s.input("strategy.toml", "# the strategy\nstrategy = \"fastest\"\n");
    s.fc()
        .arg_path("--config", &file)
        .args(["get", "sales_by_region"])
        .run()
        .fails(
            6,
            &[
                &file.display().to_string(),
                "line 2",
                "`strategy`",
                "fastest",
                "freshcache",
            ],
        );

    let file = s.input("read-only.toml", "read_only = \"yes\"\n");
    s.fc()
        .arg_path("--config", &file)
        .args(["stats"])
        .run()
        .fails(6, &["line 1"]);

    let file = s.input("keep.toml", "[log]\nkeep = 0\n");
    s.fc()
        .arg_path("--config", &file)
        .args(["stats"])
        .run()
        .fails(6, &["line 2", "1 to 365"]);

    let file = s.input("syntax.toml", "[redis\nurl = 1\n");
    s.fc()
        .arg_path("--config", &file)
        .args(["stats"])
        .run()
        .fails(6, &[&file.display().to_string(), "line 1"]);

    let missing = s.root.join("input").join("missing.toml");
    s.fc()
        .arg_path("--config", &missing)
        .args(["stats"])
        .run()
        .fails(6, &[&missing.display().to_string(), "cannot read"]);
    s.fc()
        .env("FRESHCACHE_CONFIG", &missing)
        .args(["stats"])
        .run()
        .fails(6, &[&missing.display().to_string(), "cannot read"]);

    s.fc()
        .env("FRESHCACHE_REDIS_TIMEOUT", "soon")
        .args(["stats"])
        .run()
        .fails(6, &["FRESHCACHE_REDIS_TIMEOUT", "`soon`", "e.g."]);
    s.fc()
        .env("FRESHCACHE_REDIS_TIMEOUT", "0s")
        .args(["stats"])
        .run()
        .fails(6, &["FRESHCACHE_REDIS_TIMEOUT", "more than zero"]);

    for addr in ["nope", "127.0.0.1:99999"] {
        s.fc()
            .args(["--metrics-addr", addr, "stats"])
            .run()
            .fails(6, &["--metrics-addr", &format!("`{addr}`"), "HOST:PORT"]);
    }
    s.fc_bare()
        .arg_path("--data-dir", &s.data())
        .args(["--latency", "soon", "stats"])
        .run()
        .fails(6, &["--latency", "`soon`"]);
    s.fc()
        .args(["--redis", "http://127.0.0.1:1/0", "stats"])
        .run()
        .fails(6, &["--redis", "redis://"]);
    s.fc()
        .args(["--warehouse", "mysql://h/db", "stats"])
        .run()
        .fails(6, &["--warehouse", "postgres://"]);

    // The default file in $XDG_CONFIG_HOME is read without --config.
    let default = s.xdg_config().join("freshcache").join("config.toml");
    std::fs::create_dir_all(default.parent().unwrap()).unwrap();
    std::fs::write(&default, "\n\nbogus = 1\n").unwrap();
    s.fc().args(["stats"]).run().fails(
        6,
        &[
            &default.display().to_string(),
            "line 3",
            "unknown key `bogus`",
        ],
    );
}

/// Exit code 6 is "the configuration is wrong: file, environment variable or value": a bad value in
/// a variable of a typed setting gets it too, with the variable named (not the flag, which the
/// operator did not give).
#[test]
fn bad_values_in_environment_variables_exit_6_and_name_the_variable() {
    let s = Sandbox::with_data();
    let mut problems = Vec::new();
    for (var, value) in [
        ("FRESHCACHE_ENV", "bogus"),
        ("FRESHCACHE_STRATEGY", "fastest"),
        ("FRESHCACHE_LOG_KEEP", "0"),
        ("FRESHCACHE_READ_ONLY", "maybe"),
    ] {
        let out = s.fc().env(var, value).args(["stats"]).run();
        out.no_panic();
        if out.status.code() != Some(6) || !out.stderr.contains(var) {
            problems.push(format!(
                "{var}={value}: exit {:?}, stderr {:?}",
                out.status.code(),
                out.stderr.lines().next().unwrap_or("")
            ));
        }
    }
    assert_none(&problems, "bad FRESHCACHE_* values");
}

/// Flags > environment: a flag overrides its variable even when the variable's value is bad; and
/// a boolean variable reads 1, yes, on and true alike.
#[test]
fn a_flag_overrides_a_bad_variable_and_booleans_read_like_booleans() {
    let s = Sandbox::with_data();
    let out = s
        .fc()
        .env("FRESHCACHE_STRATEGY", "fastest")
        .args(["--strategy", "ttl", "--json", "config", "check"])
        .run();
    out.expect(0);
    let settings = out.json()["settings"].clone();
    let strategy = settings
        .as_array()
        .and_then(|a| a.iter().find(|x| x["key"] == "strategy"))
        .unwrap_or_else(|| panic!("no strategy in {settings}"))
        .clone();
    assert_eq!(strategy["value"], "ttl", "{strategy}");
    assert_eq!(strategy["origin"]["kind"], "flag", "{strategy}");
    let mut problems = Vec::new();
    for value in ["1", "yes", "on", "TRUE"] {
        let before = s.status();
        let out = s
            .fc()
            .env("FRESHCACHE_READ_ONLY", value)
            .args(["invalidate", "--all", "--yes"])
            .run();
        out.no_panic();
        if out.status.code() != Some(3) || versions(&s.status()) != versions(&before) {
            problems.push(format!(
                "FRESHCACHE_READ_ONLY={value}: invalidate exited {:?} ({})",
                out.status.code(),
                out.stderr.trim()
            ));
        }
    }
    assert_none(&problems, "boolean variables");
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// Every place `secret` could show up: the outputs, and every file the binary wrote in the
/// sandbox (logs, data and state), the test's own files excepted.
fn leaks(secret: &str, sandbox: &Sandbox, outs: &[Out]) -> Vec<String> {
    let mut found = Vec::new();
    for out in outs {
        if out.stdout.contains(secret) {
            found.push(format!("stdout of `{}`", out.shown));
        }
        if out.stderr.contains(secret) {
            found.push(format!("stderr of `{}`: {}", out.shown, out.stderr.trim()));
        }
    }
    // The test's own files: its inputs and the default configuration file it may write.
    let own = [sandbox.root.join("input"), sandbox.xdg_config()];
    for path in files_under(&sandbox.root) {
        if own.iter().any(|d| path.starts_with(d)) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
            found.push(format!("file {}", path.display()));
        }
    }
    found
}

#[test]
fn secrets_never_appear_in_output_or_logs() {
    let redis_port = closed_port();
    let pg_port = closed_port();
    let redis_url = format!("redis://user:{SENTINEL}@127.0.0.1:{redis_port}/0");
    let pg_closed = format!("postgres://analyst:{SENTINEL}@127.0.0.1:{pg_port}/sales");
    let pg_absent = format!("postgres://postgres:{SENTINEL}@127.0.0.1:5432/{ABSENT_DB}");
    let redis_file = format!("[redis]\nurl = \"{redis_url}\"\n");
    let pg_file = format!("[warehouse]\nurl = \"{pg_closed}\"\n");

    enum Via<'a> {
        Flag(&'a str, &'a str),
        Env(&'a str, &'a str),
        File(&'a str),
        DefaultFile(&'a str),
    }
    let scenarios: Vec<(&str, Via, &str)> = vec![
        (
            "flag --redis",
            Via::Flag("--redis", &redis_url),
            "redis.url",
        ),
        (
            "FRESHCACHE_REDIS",
            Via::Env("FRESHCACHE_REDIS", &redis_url),
            "redis.url",
        ),
        ("--config redis.url", Via::File(&redis_file), "redis.url"),
        (
            "default file redis.url",
            Via::DefaultFile(&redis_file),
            "redis.url",
        ),
        (
            "flag --warehouse",
            Via::Flag("--warehouse", &pg_closed),
            "warehouse.url",
        ),
        (
            "FRESHCACHE_WAREHOUSE (absent database)",
            Via::Env("FRESHCACHE_WAREHOUSE", &pg_absent),
            "warehouse.url",
        ),
        (
            "--config warehouse.url",
            Via::File(&pg_file),
            "warehouse.url",
        ),
    ];
    let commands: &[&[&str]] = &[
        &["get", "sales_by_region"],
        &["--json", "get", "sales_by_region"],
        &["stats"],
        &["--json", "stats"],
        &["--json", "events"],
        &["invalidate", "--table", "nope", "--yes"],
        &["config", "check"],
        &["--json", "config", "check"],
    ];
    let mut problems = Vec::new();
    for (name, via, key) in &scenarios {
        let s = Sandbox::with_data();
        let make = || {
            let fc = s.fc().args(["--log-level", "debug"]);
            match via {
                Via::Flag(flag, value) => fc.args([*flag, *value]),
                Via::Env(var, value) => fc.env(var, value),
                Via::File(text) => {
                    let file = s.input("secret.toml", text);
                    fc.arg_path("--config", &file)
                }
                Via::DefaultFile(text) => {
                    let dir = s.xdg_config().join("freshcache");
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(dir.join("config.toml"), text).unwrap();
                    fc
                }
            }
        };
        let mut outs = Vec::new();
        for args in commands {
            let out = make().args(*args).run();
            out.no_panic();
            outs.push(out);
        }
        // The commands that need the backend failed with one line; the check passed, masked.
        let failing = outs.iter().filter(|o| o.status.code() != Some(0)).count();
        assert!(
            failing >= 1,
            "{name}: nothing failed, so the backend was not used"
        );
        for o in outs.iter().filter(|o| o.status.code() != Some(0)) {
            o.fails(o.status.code().unwrap(), &[]);
        }
        let check = &outs[6];
        check.expect(0);
        let row = check
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("{name}: no {key} row: {}", check.dump()));
        assert!(row.contains(":***@"), "{name}: not masked: {row}");
        let check = &outs[7];
        check.expect(0);
        let value = check.json()["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["key"] == *key)
            .map(|x| x["value"].as_str().unwrap_or("").to_string())
            .unwrap_or_default();
        assert!(
            value.contains(":***@"),
            "{name}: not masked in JSON: {value}"
        );
        // The failures were logged (so the log check below looked at something).
        assert!(
            s.log_text().contains("failed"),
            "{name}: no failure in the log"
        );
        for leak in leaks(SENTINEL, &s, &outs) {
            problems.push(format!("{name}: the password appears in {leak}"));
        }
    }
    assert_none(&problems, "password leaks");
}

/// Passwords with characters that are special in URLs (`/`, `@`, or given as `?password=`) are
/// still passwords. Each password is made of distinct tokens; no token may appear anywhere.
#[test]
fn passwords_with_url_special_characters_never_leak() {
    let port = closed_port();
    let cases = [
        (
            "--redis",
            format!("redis://u:Qx7Kp2/Zr9Wm4@127.0.0.1:{port}/0"),
            &["Qx7Kp2", "Zr9Wm4"][..],
        ),
        (
            "--redis",
            format!("redis://u:Hd3Lq8@Vb6Nc1@127.0.0.1:{port}/0"),
            &["Hd3Lq8", "Vb6Nc1"][..],
        ),
        (
            "--warehouse",
            format!("postgres://u:Qx7Kp2/Zr9Wm4@127.0.0.1:{port}/db"),
            &["Qx7Kp2", "Zr9Wm4"][..],
        ),
        (
            "--warehouse",
            format!("postgres://u:Hd3Lq8@Vb6Nc1@127.0.0.1:{port}/db"),
            &["Hd3Lq8", "Vb6Nc1"][..],
        ),
        (
            "--warehouse",
            format!("postgres://u@127.0.0.1:{port}/db?password=Ty5Gs2Jk9"),
            &["Ty5Gs2Jk9"][..],
        ),
    ];
    let mut problems = Vec::new();
    for (flag, url, tokens) in &cases {
        let s = Sandbox::with_data();
        // A command that uses the backend, and the configuration check in text and JSON.
        let uses: &[&str] = if *flag == "--redis" {
            &["stats"]
        } else {
            &["warehouse", "status"]
        };
        let mut outs = Vec::new();
        for args in [uses, &["config", "check"], &["--json", "config", "check"]] {
            let out = s.fc().args([*flag, url.as_str()]).args(args).run();
            out.no_panic();
            outs.push(out);
        }
        let mut seen = Vec::new();
        for token in *tokens {
            for leak in leaks(token, &s, &outs) {
                if !seen.contains(&leak) {
                    problems.push(format!("{flag} {url}: `{token}` appears in {leak}"));
                    seen.push(leak);
                }
            }
        }
    }
    assert_none(&problems, "password leaks");
}

// ---------------------------------------------------------------------------------------------
// A Redis that requires a password
// ---------------------------------------------------------------------------------------------

/// A `redis-server` of this test's own: loopback, a free port, a fresh directory, no
/// persistence, `--requirepass`; killed on drop.
struct RedisServer {
    port: u16,
    child: ChildGuard,
    _dir: TempDir,
}

use freshcache::bench::chaos::server::answers_ping;

impl RedisServer {
    /// Starts one, or reports the skip (a failure with FRESHCACHE_REQUIRE_REDIS=1) and returns
    /// `None` when redis-server is not installed.
    fn start(test: &str, password: &str) -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let message =
                format!("{test} SKIPPED: redis-server is not installed (package redis-server)");
            if std::env::var("FRESHCACHE_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!("{message}; FRESHCACHE_REQUIRE_REDIS=1 makes this a failure");
            }
            let bar = "!".repeat(90);
            eprintln!(
                "\n{bar}\n!!! {message}\n!!! Set FRESHCACHE_REQUIRE_REDIS=1 to make this a failure.\n{bar}\n"
            );
            return None;
        }
        let mut last = String::new();
        for _ in 0..5 {
            let dir = TempDir::new("redis");
            let port = closed_port();
            let log = std::fs::File::create(dir.path().join("redis.log")).expect("a log file");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "yes",
                ])
                .args(["--requirepass", password])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("the log file"))
                .stderr(log)
                .spawn()
                .expect("redis-server runs");
            let mut server = RedisServer {
                port,
                child: ChildGuard(Some(child)),
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if answers_ping(port) {
                    return Some(server);
                }
                let child = server.child.0.as_mut().expect("the server");
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("redis-server on port {port} exited with {status}");
                    break;
                }
                if Instant::now() > deadline {
                    last = format!("redis-server on port {port} did not answer PING in 10 s");
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("redis-server would not start: {last}");
    }
}

#[test]
fn redis_with_a_password() {
    let right = "Right-Pw-3c9d";
    let Some(server) = RedisServer::start("redis_with_a_password", right) else {
        return;
    };
    let port = server.port;
    let s = Sandbox::with_data();
    let mut outs = Vec::new();

    // Wrong password (the sentinel) and no password: refused, with what to check.
    for url in [
        format!("redis://default:{SENTINEL}@127.0.0.1:{port}/0"),
        format!("redis://:{SENTINEL}@127.0.0.1:{port}/0"),
        format!("redis://127.0.0.1:{port}/0"),
    ] {
        for cmd in [&["stats"][..], &["--json", "events"][..]] {
            let out = s.fc().args(["--redis", &url]).args(cmd).run();
            out.fails(5, &["check the user and password"]);
            outs.push(out);
        }
    }

    // The right one: stats, a shared answer, invalidation, events.
    let url = format!("redis://:{right}@127.0.0.1:{port}/0");
    let fc = || s.fc().args(["--redis", &url]);
    let out = fc().args(["--json", "stats"]).run();
    out.expect(0);
    assert_eq!(out.json()["versions"]["sales"], 0, "{}", out.dump());
    outs.push(out);
    let out = fc().args(["--json", "get", "sales_by_region"]).run();
    out.expect(0);
    assert_eq!(out.json()["source"], "warehouse", "{}", out.dump());
    outs.push(out);
    let out = fc().args(["--json", "get", "sales_by_region"]).run();
    out.expect(0);
    assert_eq!(
        out.json()["source"],
        "cache",
        "the second process did not get the answer through Redis: {}",
        out.dump()
    );
    outs.push(out);
    let out = fc().args(["invalidate", "--table", "sales", "--yes"]).run();
    out.expect(0);
    outs.push(out);
    let out = fc().args(["--json", "stats"]).run();
    out.expect(0);
    assert_eq!(out.json()["versions"]["sales"], 1, "{}", out.dump());
    outs.push(out);
    let out = fc().args(["--json", "events"]).run();
    out.expect(0);
    assert!(
        out.json_lines()
            .iter()
            .any(|e| e["type"] == "operator_action" && e["action"] == "invalidate"),
        "{}",
        out.dump()
    );
    outs.push(out);
    let out = fc().args(["config", "check"]).run();
    out.expect(0);
    assert!(
        out.stdout
            .contains(&format!("redis://:***@127.0.0.1:{port}/0")),
        "{}",
        out.dump()
    );
    outs.push(out);

    let mut problems = Vec::new();
    for secret in [SENTINEL, right] {
        for leak in leaks(secret, &s, &outs) {
            problems.push(format!("`{secret}` appears in {leak}"));
        }
    }
    assert_none(&problems, "password leaks");
    drop(server);
}
