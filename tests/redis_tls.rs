//! `rediss://` with a private certificate authority, end to end: the real binary against a real
//! `redis-server` that speaks only TLS.
//!
//! The test makes, in a fresh directory and with the `openssl` command, a private CA
//! ("freshcache test CA") and a server certificate for `127.0.0.1` (subjectAltName
//! `IP:127.0.0.1`) that it signed, then starts `redis-server` with a TLS port only (`--port 0`,
//! clients need no certificate of their own). Against that server:
//!
//! * `--redis rediss://127.0.0.1:PORT/0 --redis-ca ca.pem --json stats` works (exit 0, a JSON
//!   object with `versions`);
//! * `invalidate --table sales --yes` through the same link works, and a new `stats` reads
//!   `versions.sales == 1` from Redis;
//! * without `--redis-ca` the system's trust store does not know the private CA: exit 5 (a backend
//!   is unavailable) and one stderr line `freshcache: …` that names `--redis-ca`;
//! * `FRESHCACHE_REDIS_CA=ca.pem` in the environment does what the flag does;
//! * a plain `redis://` URL against the TLS port fails cleanly: exit 5, no panic.
//!
//! Every run of the binary has a clean environment (no `FRESHCACHE_*` of the caller, its XDG
//! directories, data and logs in the test's directory) and a time limit, so that a hang fails the
//! test instead of stalling CI. The server is killed and the directory removed when the test
//! ends, also when it fails.
//!
//! Skips (a loud note on stderr and a pass, or a failure with `FRESHCACHE_REQUIRE_REDIS=1`, see
//! `common::skip`): when `redis-server` or `redis-cli` is missing, when `openssl` is missing, and
//! when `redis-server` was built without TLS support.

// Tests may unwrap, panic and cast freely: a failure is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

const TEST: &str = "redis_tls";
/// Longest wait for `redis-server` to accept TCP connections on its TLS port.
const SERVER_UP: Duration = Duration::from_secs(5);
/// Longest run of one `freshcache` command.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// The private CA and the server's certificate and key, as files in the test's directory.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// The `openssl` configuration of [`make_pki`]: our own, so that the system's `openssl.cnf` does
/// not decide which extensions the certificates get.
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Why `openssl` cannot be used, if it cannot.
fn openssl_missing() -> Option<String> {
    match Command::new("openssl")
        .arg("version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("`openssl version` exited with {}", o.status)),
        Err(e) => Some(format!("`openssl` cannot be run: {e}")),
    }
}

/// `openssl WORDS... extra...` in `dir` (`words` split at whitespace, then `extra` as they are);
/// fails the test with openssl's output when it fails.
fn openssl(dir: &Path, words: &str, extra: &[&str]) {
    let args: Vec<&str> = words
        .split_whitespace()
        .chain(extra.iter().copied())
        .collect();
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .env_remove("OPENSSL_CONF")
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a server certificate for `127.0.0.1` that it signed, in `dir`.
fn make_pki(dir: &Path) -> Pki {
    std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).expect("the openssl configuration");
    openssl(
        dir,
        "req -x509 -config openssl.cnf -extensions ca_ext -newkey rsa:2048 -nodes \
         -keyout ca.key -out ca.pem -days 2 -subj",
        &["/CN=freshcache test CA"],
    );
    openssl(
        dir,
        "req -new -config openssl.cnf -newkey rsa:2048 -nodes \
         -keyout server.key -out server.csr -subj /CN=127.0.0.1",
        &[],
    );
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 \
         -extfile openssl.cnf -extensions server_ext -out server.pem",
        &[],
    );
    Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// A `redis-server` with a TLS port only, started by this test; killed and reaped on drop.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why a server could not be started.
enum NotStarted {
    /// This `redis-server` has no TLS: a reason to skip.
    NoTls(String),
    /// Anything else (the port was taken in between, a bad certificate, ...).
    Failed(String),
}

/// The last lines of a server log, on one line.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Whether a server log says that `redis-server` was built without TLS: Redis 7 logs "Missing
/// implement of connection type tls", Redis 6 rejects the `tls-*` options as unknown.
fn says_no_tls(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    log.contains("connection type tls")
        || (log.contains("tls") && log.contains("bad directive"))
        || (log.contains("tls") && log.contains("not supported"))
        || (log.contains("tls") && log.contains("not compiled"))
}

impl TlsRedis {
    /// Starts `redis-server` on a free TLS port with the server certificate of `pki`, its files
    /// and log (`redis.log`) in `dir`, and waits until it accepts TCP connections.
    fn start(dir: &Path, pki: &Pki) -> Result<TlsRedis, NotStarted> {
        let port = free_port();
        let log_path = dir.join("redis.log");
        let log = File::create(&log_path).expect("the server's log file");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--tls-cert-file")
            .arg(&pki.cert)
            .arg("--tls-key-file")
            .arg(&pki.key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .args(["--tls-auth-clients", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the server's log file"))
            .stderr(log)
            .spawn()
            .map_err(|e| NotStarted::Failed(format!("cannot run redis-server: {e}")))?;
        // From here on the server is killed on every way out.
        let mut server = TlsRedis { port, child };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let why = format!("redis-server exited with {status}: {}", log_tail(&log_path));
                return Err(if says_no_tls(&log) {
                    NotStarted::NoTls(why)
                } else {
                    NotStarted::Failed(why)
                });
            }
            if started.elapsed() > SERVER_UP {
                return Err(NotStarted::Failed(format!(
                    "redis-server did not accept connections on TLS port {port} within \
                     {SERVER_UP:?}: {}",
                    log_tail(&log_path)
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

/// The test's server, certificates and directory, and how to run the binary against them.
/// Fields drop in order: the server is killed before its directory is removed.
struct Env {
    server: TlsRedis,
    pki: Pki,
    dir: TempDir,
}

/// What one run of the binary did.
struct Run {
    what: String,
    status: ExitStatus,
    out: String,
    err: String,
}

impl Run {
    /// Stdout as JSON (fails the test when it is not).
    fn json(&self) -> Value {
        serde_json::from_str(self.out.trim()).unwrap_or_else(|e| {
            panic!(
                "{} printed no JSON ({e}): stdout {:?}, stderr {:?}",
                self.what, self.out, self.err
            )
        })
    }

    fn assert_success(&self) {
        assert!(
            self.status.success(),
            "{} failed ({}): stdout {:?}, stderr {:?}",
            self.what,
            self.status,
            self.out,
            self.err
        );
    }

    /// Exit code `code`, stderr one non-empty line `freshcache: …`, and no panic.
    fn assert_clean_failure(&self, code: i32) {
        assert_eq!(
            self.status.code(),
            Some(code),
            "{}: expected exit {code}, got {}: stdout {:?}, stderr {:?}",
            self.what,
            self.status,
            self.out,
            self.err
        );
        assert!(
            !self.err.contains("panicked"),
            "{} panicked: {:?}",
            self.what,
            self.err
        );
        let lines = self.err_lines();
        assert_eq!(
            lines.len(),
            1,
            "{}: expected exactly one stderr line, got {lines:?}",
            self.what
        );
        // With --json the line is one object with the error, its code and a hint.
        let json = serde_json::from_str::<serde_json::Value>(lines[0]).ok();
        assert!(
            lines[0].starts_with("freshcache: ")
                || json.is_some_and(|e| e["code"] == code && e["error"].is_string()),
            "{}: the stderr line is neither `freshcache: …` nor a JSON error: {:?}",
            self.what,
            lines[0]
        );
    }

    /// The non-empty lines of stderr.
    fn err_lines(&self) -> Vec<&str> {
        self.err.lines().filter(|l| !l.trim().is_empty()).collect()
    }
}

impl Env {
    fn rediss_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.server.port)
    }

    fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.server.port)
    }

    fn ca(&self) -> &str {
        self.pki.ca.to_str().expect("a UTF-8 path")
    }

    /// `freshcache --data-dir DIR/data --log-dir DIR/logs args...` with `env` added to a clean
    /// environment ([`freshcache`] drops the caller's `FRESHCACHE_*` and `RUST_LOG`; XDG
    /// directories under `DIR`), stdin null and the output in `DIR/NAME.out` and `DIR/NAME.err`; killed when it
    /// runs longer than [`RUN_LIMIT`].
    fn run(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let dir = self.dir.path();
        let data = dir.join("data");
        let logs = dir.join("logs");
        let mut all = vec![
            "--data-dir",
            data.to_str().expect("a UTF-8 path"),
            "--log-dir",
            logs.to_str().expect("a UTF-8 path"),
        ];
        all.extend_from_slice(args);
        let mut cmd = freshcache_in(dir, &all);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let out_path = dir.join(format!("{name}.out"));
        let err_path = dir.join(format!("{name}.err"));
        let child = cmd
            .stdout(File::create(&out_path).expect("a file for stdout"))
            .stderr(File::create(&err_path).expect("a file for stderr"))
            .spawn()
            .expect("freshcache runs");
        // Killed and reaped on drop, also when this test fails.
        let mut proc = Proc { child };
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        let what = format!("`freshcache {}` ({name})", args.join(" "));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = proc.exited() {
                break status;
            }
            if started.elapsed() > RUN_LIMIT {
                drop(proc);
                panic!(
                    "{what} did not end within {RUN_LIMIT:?}: stdout {:?}, stderr {:?}",
                    read(&out_path),
                    read(&err_path)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Run {
            what,
            status,
            out: read(&out_path),
            err: read(&err_path),
        }
    }
}

/// Reports the skip and returns `None` when a tool is missing or `redis-server` has no TLS;
/// otherwise makes the certificates and starts the server.
fn setup() -> Option<Env> {
    if let Some(why) = redis_tools_missing() {
        skip(TEST, &why);
        return None;
    }
    if let Some(why) = openssl_missing() {
        skip(
            TEST,
            &format!("{why}; the TLS test needs the openssl command (package openssl)"),
        );
        return None;
    }
    let dir = TempDir::new("tls");
    let pki = make_pki(dir.path());
    let mut last = String::new();
    for _ in 0..3 {
        match TlsRedis::start(dir.path(), &pki) {
            Ok(server) => return Some(Env { server, pki, dir }),
            Err(NotStarted::NoTls(why)) => {
                skip(
                    TEST,
                    &format!("this redis-server has no TLS support ({why})"),
                );
                return None;
            }
            // Someone may have taken the port in between: try another.
            Err(NotStarted::Failed(why)) => last = why,
        }
    }
    panic!("redis-server with TLS would not start: {last}");
}

fn sales_version(run: &Run) -> u64 {
    let stats = run.json();
    stats["versions"]["sales"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: no versions.sales number in {stats}", run.what))
}

#[test]
fn rediss_with_a_private_ca() {
    let _serial = serial();
    let Some(env) = setup() else { return };
    let url = env.rediss_url();
    let ca = env.ca();

    // A small embedded warehouse first, so that no run below creates the demo warehouse (and says
    // so on stderr).
    env.run("init", &["warehouse", "init", "--sales", "5000"], &[])
        .assert_success();

    // (a) The flag: the private CA is trusted.
    let stats = env.run(
        "stats-flag",
        &["--redis", &url, "--redis-ca", ca, "--json", "stats"],
        &[],
    );
    stats.assert_success();
    let json = stats.json();
    assert!(
        json.is_object() && json.get("versions").is_some_and(Value::is_object),
        "{}: expected a JSON object with `versions`, got {json}",
        stats.what
    );
    assert_eq!(
        sales_version(&stats),
        0,
        "a fresh Redis starts at version 0"
    );

    // (b) A write through TLS, read back through TLS.
    env.run(
        "invalidate",
        &[
            "--redis",
            &url,
            "--redis-ca",
            ca,
            "--json",
            "invalidate",
            "--table",
            "sales",
            "--yes",
        ],
        &[],
    )
    .assert_success();
    let stats = env.run(
        "stats-after-invalidate",
        &["--redis", &url, "--redis-ca", ca, "stats", "--json"],
        &[],
    );
    stats.assert_success();
    assert_eq!(
        sales_version(&stats),
        1,
        "{}: invalidate --table sales did not reach Redis",
        stats.what
    );

    // (c) Without the CA: the system's trust store does not know it.
    let refused = env.run("stats-no-ca", &["--redis", &url, "--json", "stats"], &[]);
    refused.assert_clean_failure(5);
    assert!(
        refused.err.contains("--redis-ca"),
        "{}: the message does not point to --redis-ca: {:?}",
        refused.what,
        refused.err
    );

    // (d) The environment variable instead of the flag.
    let stats = env.run(
        "stats-env",
        &["--redis", &url, "--json", "stats"],
        &[("FRESHCACHE_REDIS_CA", ca)],
    );
    stats.assert_success();
    assert_eq!(
        sales_version(&stats),
        1,
        "{}: FRESHCACHE_REDIS_CA did not give the same Redis",
        stats.what
    );

    // (e) Plain redis:// against the TLS port: a clean failure, not a panic or a hang.
    let plain = env.run(
        "stats-plain",
        &["--redis", &env.redis_url(), "--json", "stats"],
        &[],
    );
    plain.assert_clean_failure(5);
    assert!(
        plain.err.contains("rediss://"),
        "{}: the message does not suggest rediss://: {:?}",
        plain.what,
        plain.err
    );

    // (f) A CA file that holds no certificate is refused up front, saying so.
    let not_a_cert = env.dir.path().join("not-a-cert.pem");
    std::fs::write(&not_a_cert, "hello\n").expect("a file");
    let bad_ca = env.run(
        "stats-bad-ca",
        &[
            "--redis",
            &url,
            "--redis-ca",
            not_a_cert.to_str().expect("a UTF-8 path"),
            "stats",
        ],
        &[],
    );
    assert_eq!(
        bad_ca.status.code(),
        Some(6),
        "{}: a bad CA file is a configuration error: {:?}",
        bad_ca.what,
        bad_ca.err
    );
    assert!(
        bad_ca.err.contains("no PEM certificate") && !bad_ca.err.contains("panicked"),
        "{}: {:?}",
        bad_ca.what,
        bad_ca.err
    );
}
