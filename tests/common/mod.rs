//! The harness shared by the Redis integration tests (`redis_faults`, `redis_backend`): a
//! `redis-server` of the test's own on a free loopback port in a fresh directory (killed and
//! removed on drop), the skip logic (loud on stderr, a failure with `FRESHCACHE_REQUIRE_REDIS=1`),
//! the real binary with a clean environment, and in-process API servers ([`Node`]).
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use freshcache::bus::CHANNEL;
use freshcache::engine::{Answer, Engine};
use freshcache::instance::{Instance, InstanceConfig};
use freshcache::model::catalog::{Catalog, Request};
use freshcache::model::clock::{SharedClock, SystemClock};
use freshcache::model::versions::TableId;
use freshcache::redis::Redis;
use freshcache::redis::RedisBus;
use freshcache::redis::RedisLink;
use freshcache::redis::RedisStore;
use freshcache::warehouse::MemoryWarehouse;

/// Connect timeout of every in-process link.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Response timeout of every in-process link.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);
/// Pause between two looks at a condition being waited for.
pub const POLL: Duration = Duration::from_millis(2);
/// Longest wait for a server to answer PING after its start.
pub const SERVER_START: Duration = Duration::from_secs(10);

pub static SERIAL: Mutex<()> = Mutex::new(());
pub static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// One test at a time: the timing margins are about the product, not about neighbours.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs blocking work (a child process, a wait for PING) from async code without stalling the
/// runtime's other tasks.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Runs `body` against a `redis-server` of the running test's own (see [`RedisServer::start`]),
/// one test at a time (see [`serial`]); when Redis is not installed it reports the skip instead
/// (see [`skip`]). The server is killed, and its directory removed, when `body` ends or fails.
pub fn with_redis_sync(body: impl FnOnce(&RedisServer)) {
    let _serial = serial();
    if let Some(server) = RedisServer::start(&test_name()) {
        body(&server);
    }
}

/// [`with_redis_sync`] with `body` run on a fresh [`runtime`].
pub fn with_redis(body: impl AsyncFnOnce(&RedisServer)) {
    with_redis_sync(|server| runtime().block_on(body(server)));
}

/// The name of the running test (the test harness runs each test on a thread named after it).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string()
}

/// A fresh directory under the system's temporary directory.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "freshcache-redis-tests-{what}-{}-{}-{nanos}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Why the Redis tools cannot be used, if they cannot.
pub fn redis_tools_missing() -> Option<String> {
    for tool in ["redis-server", "redis-cli"] {
        match Command::new(tool).arg("--version").output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Some(format!("`{tool} --version` exited with {}", o.status)),
            Err(e) => return Some(format!("`{tool}` cannot be run: {e}")),
        }
    }
    None
}

/// Reports that a test cannot run: a loud note on stderr, or a failure when
/// `FRESHCACHE_REQUIRE_REDIS=1`.
pub fn skip(test: &str, why: &str) {
    let message = format!(
        "Redis tests SKIPPED ({test}): {why}. Install what is missing (redis-server and redis-cli: packages redis-server, redis-tools) to run them."
    );
    if std::env::var("FRESHCACHE_REQUIRE_REDIS").as_deref() == Ok("1") {
        panic!("{message} FRESHCACHE_REQUIRE_REDIS=1 makes this a failure.");
    }
    let bar = "!".repeat(100);
    eprintln!(
        "\n{bar}\n!!! {message}\n!!! Set FRESHCACHE_REQUIRE_REDIS=1 to make this a failure.\n{bar}\n"
    );
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("its address").port()
}

pub use freshcache::bench::chaos::server::answers_ping;

/// A `redis-server` this test started, on its own port and directory; killed on drop.
pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    child: Mutex<Option<Child>>,
    /// The `requirepass` it was started with, if any.
    password: Option<String>,
}

impl RedisServer {
    /// Starts a server, or reports the skip and returns `None` when Redis is not installed.
    pub fn start(test: &str) -> Option<RedisServer> {
        Self::start_with(test, None)
    }

    /// [`RedisServer::start`] with `--requirepass password`.
    pub fn start_with_password(test: &str, password: &str) -> Option<RedisServer> {
        Self::start_with(test, Some(password))
    }

    fn start_with(test: &str, password: Option<&str>) -> Option<RedisServer> {
        if let Some(why) = redis_tools_missing() {
            skip(test, &why);
            return None;
        }
        let mut last = String::new();
        for _ in 0..5 {
            let server = RedisServer {
                port: free_port(),
                dir: TempDir::new("server"),
                child: Mutex::new(None),
                password: password.map(str::to_string),
            };
            match server.spawn() {
                Ok(_) => return Some(server),
                // Someone else took the port in between: try another.
                Err(e) => last = e,
            }
        }
        panic!("redis-server would not start: {last}");
    }

    /// The server's URL (without its password).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The directory the server runs in (its log is `redis.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `redis-server` on this server's port and directory and waits until it answers PING;
    /// returns when it did.
    pub fn spawn(&self) -> Result<Instant, String> {
        let log_path = self.dir.path().join("redis.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--enable-debug-command", "local"])
            .args(
                self.password
                    .as_deref()
                    .map(|p| vec!["--requirepass", p])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        *self.child() = Some(child);
        let started = Instant::now();
        loop {
            if answers_ping(self.port) {
                return Ok(Instant::now());
            }
            let exited = self
                .child()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                *self.child() = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "redis-server on port {} exited with {status}: {}",
                    self.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ));
            }
            if started.elapsed() > SERVER_START {
                return Err(format!(
                    "redis-server on port {} did not answer PING within {SERVER_START:?}",
                    self.port
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        let guard = self.child();
        let child = guard.as_ref().expect("the server is running");
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) takes no pointers; `pid` is our own child, not reaped yet (it is reaped
        // only through `self.child`, which this guard holds), so the pid cannot name another
        // process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// `redis-cli -h 127.0.0.1 -p PORT` (and the password, when the server has one).
    pub fn cli_command(&self) -> Command {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(p) = &self.password {
            cmd.args(["--no-auth-warning", "-a", p]);
        }
        cmd
    }

    /// `SHUTDOWN NOSAVE`, then waits (at most 10 s) until the process is gone and reaps it.
    pub fn shutdown_nosave(&self) {
        // redis-cli reports the closed connection as an error: the exit below is the proof.
        let _ = self
            .cli_command()
            .args(["SHUTDOWN", "NOSAVE"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let started = Instant::now();
        loop {
            let exited = self
                .child()
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.child().take();
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not exit within 10 s of SHUTDOWN NOSAVE",
                self.port
            );
            std::thread::sleep(POLL);
        }
        assert!(
            !answers_ping(self.port),
            "port {} still answers after SHUTDOWN NOSAVE",
            self.port
        );
    }

    /// `INFO commandstats` as command name → calls (`cmdstat_get:calls=3,...` → `get` → 3).
    pub fn command_calls(&self) -> std::collections::BTreeMap<String, u64> {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.trim().strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .collect()
    }

    /// `kill -9` the server and reap it.
    pub fn kill9(&self) {
        self.signal(libc::SIGKILL);
        if let Some(mut child) = self.child().take() {
            let _ = child.wait();
        }
    }

    /// Starts a new server on the same port and directory (it comes back empty); returns when it
    /// answered PING.
    pub fn restart(&self) -> Instant {
        self.spawn()
            .unwrap_or_else(|e| panic!("restart failed: {e}"))
    }

    /// `redis-cli -p PORT args...`, returning its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_with_stdin(args, None)
    }

    /// `redis-cli -p PORT -x args...` with `stdin` as the last argument (when given).
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let mut cmd = self.cli_command();
        if stdin.is_some() {
            cmd.arg("-x");
        }
        let mut child = cmd
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-cli runs");
        if let Some(bytes) = stdin {
            let mut pipe = child.stdin.take().expect("redis-cli's stdin");
            pipe.write_all(bytes).expect("redis-cli reads its stdin");
        }
        let out = child.wait_with_output().expect("redis-cli ends");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed ({}): {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// A command whose reply is an integer (the last line of redis-cli's output).
    pub fn cli_int(&self, args: &[&str]) -> i64 {
        int_reply(&self.cli(args), args)
    }

    /// `PUBLISH channel payload` with redis-cli; returns how many subscribers received it.
    pub fn publish(&self, channel: &str, payload: &[u8]) -> i64 {
        let args = ["PUBLISH", channel];
        match std::str::from_utf8(payload) {
            // What a user types.
            Ok(text) if payload.len() < 4096 && !payload.contains(&0) => {
                int_reply(&self.cli(&["PUBLISH", channel, text]), &args)
            }
            // Large or binary: from stdin, as `redis-cli -x PUBLISH channel < file`.
            _ => int_reply(&self.cli_with_stdin(&args, Some(payload)), &args),
        }
    }

    /// Waits until `n` connections subscribe to `channel` (every bus subscribes to it).
    pub fn wait_for_subscribers(&self, channel: &str, n: i64) {
        let started = Instant::now();
        loop {
            let count = self.cli_int(&["PUBSUB", "NUMSUB", channel]);
            if count >= n {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "waited 10 s for {n} subscribers to {channel}; {count} are"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Keys matching `pattern`, by `SCAN`.
    pub fn scan(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child().take() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: as in `signal`: our own child, not yet reaped. A stopped server is woken
            // first so that it can die and be reaped.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn int_reply(out: &str, args: &[&str]) -> i64 {
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("redis-cli {args:?} did not answer an integer: {out:?}"))
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .try_wait()
            .expect("the process can be waited for")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The real binary, with none of its environment defaults leaking in from the caller.
pub fn freshcache(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_freshcache"));
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("FRESHCACHE_") {
            cmd.env_remove(var);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// [`freshcache`] with the XDG configuration, state (logs), data and cache directories inside
/// `dir`, so that no configuration file of the user is read and nothing is written to their home.
pub fn freshcache_in(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = freshcache(args);
    for (var, sub) in [
        ("XDG_CONFIG_HOME", "xdg-config"),
        ("XDG_STATE_HOME", "xdg-state"),
        ("XDG_DATA_HOME", "xdg-data"),
        ("XDG_CACHE_HOME", "xdg-cache"),
    ] {
        cmd.env(var, dir.join(sub));
    }
    cmd
}

/// `freshcache --data-dir DIR warehouse init --sales 5000`: the embedded demo warehouse.
pub fn init_warehouse(data_dir: &Path) {
    let dir = data_dir.to_str().expect("a UTF-8 path");
    let out = freshcache(&["--data-dir", dir, "warehouse", "init", "--sales", "5000"])
        .output()
        .expect("freshcache runs");
    assert!(
        out.status.success(),
        "warehouse init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Spawns the binary with stdout and stderr going to files in `dir` named after `name`.
pub fn spawn_logged(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let stdout = File::create(dir.join(format!("{name}.out"))).expect("a log file");
    let stderr = File::create(dir.join(format!("{name}.err"))).expect("a log file");
    let child = freshcache(args)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("freshcache runs");
    Proc { child }
}

pub fn read_log(dir: &Path, name: &str) -> (String, String) {
    let read =
        |ext: &str| std::fs::read_to_string(dir.join(format!("{name}.{ext}"))).unwrap_or_default();
    (read("out"), read("err"))
}

pub fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

pub fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog::bundled().expect("the bundled catalog"))
}

pub fn warehouse(latency: Duration) -> Arc<MemoryWarehouse> {
    Arc::new(MemoryWarehouse::for_tables(catalog().tables(), latency))
}

pub fn link(server: &RedisServer) -> Arc<RedisLink> {
    Arc::new(RedisLink::open(&server.url(), CONNECT_TIMEOUT, RESPONSE_TIMEOUT).expect("a link"))
}

/// One API server: its own link, store, bus, engine and instance, on the test's Redis.
pub struct Node {
    pub bus: Arc<RedisBus>,
    pub store: Arc<RedisStore>,
    pub instance: Instance,
}

impl Node {
    pub async fn start(
        server: &RedisServer,
        warehouse: &Arc<MemoryWarehouse>,
        local_tier: bool,
        config: InstanceConfig,
    ) -> Node {
        let link = link(server);
        Self::start_on(link.clone(), link, warehouse, local_tier, config).await
    }

    /// A node that reaches Redis at `url` (through a fault proxy, say) for everything.
    pub async fn start_at(
        url: &str,
        warehouse: &Arc<MemoryWarehouse>,
        config: InstanceConfig,
    ) -> Node {
        let link =
            Arc::new(RedisLink::open(url, CONNECT_TIMEOUT, RESPONSE_TIMEOUT).expect("a link"));
        Self::start_on(link.clone(), link, warehouse, true, config).await
    }

    /// A node whose cache entries live on `store_server` and whose versions, events and reports
    /// go through `bus_server`.
    pub async fn start_split(
        store_server: &RedisServer,
        bus_server: &RedisServer,
        warehouse: &Arc<MemoryWarehouse>,
        local_tier: bool,
        config: InstanceConfig,
    ) -> Node {
        Self::start_on(
            link(store_server),
            link(bus_server),
            warehouse,
            local_tier,
            config,
        )
        .await
    }

    async fn start_on(
        store_link: Arc<RedisLink>,
        bus_link: Arc<RedisLink>,
        warehouse: &Arc<MemoryWarehouse>,
        local_tier: bool,
        config: InstanceConfig,
    ) -> Node {
        let catalog = catalog();
        let tables = catalog.tables().clone();
        let redis = Redis::open_split(store_link, bus_link, tables, clock());
        let store = Arc::new(redis.store);
        let bus = Arc::new(redis.bus);
        let engine = Engine::builder(catalog, warehouse.clone())
            .clock(clock())
            .shared(store.clone())
            .local_tier(local_tier)
            .build()
            .expect("an engine");
        let instance = Instance::new(engine, bus.clone(), warehouse.clone(), None, config);
        instance.start().await.expect("the instance starts");
        Node {
            bus,
            store,
            instance,
        }
    }

    pub fn engine(&self) -> &Engine {
        self.instance.engine()
    }

    /// `n` nodes on `server`, each with an in-process tier, returned once all of them listen on
    /// the update channel.
    pub async fn start_n(
        server: &RedisServer,
        warehouse: &Arc<MemoryWarehouse>,
        n: usize,
        config: &InstanceConfig,
    ) -> Vec<Node> {
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(Node::start(server, warehouse, true, config.clone()).await);
        }
        blocking(|| server.wait_for_subscribers(CHANNEL, n as i64));
        nodes
    }
}

/// The version of `table` in each of `nodes`' engines.
pub fn versions_of(nodes: &[Node], table: TableId) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| n.engine().versions().version(table))
        .collect()
}

pub fn sales() -> TableId {
    catalog().tables().id("sales").expect("sales")
}

pub fn sales_version(answer: &Answer) -> u64 {
    answer
        .versions()
        .iter()
        .find(|(t, _)| *t == sales())
        .map(|(_, v)| v)
        .expect("the answer reads sales")
}

/// The `i`-th request of a sequence of distinct requests (5 500 of them, all on sales), none ever
/// cached.
pub fn distinct_request(engine: &Engine, i: usize) -> Request {
    const REGIONS: [&str; 5] = [
        "North America",
        "Europe",
        "Asia Pacific",
        "Latin America",
        "Middle East & Africa",
    ];
    let region = REGIONS[i % 5];
    let year = (2020 + (i / 5) % 11).to_string();
    let limit = (1 + (i / 55) % 100).to_string();
    engine
        .request(
            "top_products_in_region",
            &[
                ("region", region),
                ("year", year.as_str()),
                ("limit", limit.as_str()),
            ],
        )
        .expect("a request")
}

/// Waits for `condition`, checking every few milliseconds, for at most `limit`; panics with
/// `what` (and the last state `describe` gives) otherwise.
pub async fn wait_until(
    limit: Duration,
    what: &str,
    mut condition: impl AsyncFnMut() -> bool,
    describe: impl Fn() -> String,
) -> Duration {
    let started = Instant::now();
    loop {
        if condition().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "waited {limit:?} for {what}; {}",
            describe()
        );
        tokio::time::sleep(POLL).await;
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A `redis-cli SUBSCRIBE channel` whose output lines are collected; killed on drop.
pub struct Subscriber {
    _proc: Proc,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    /// Subscribes and waits until the server confirmed it.
    pub fn start(server: &RedisServer, channel: &str) -> Subscriber {
        let mut proc = Proc {
            child: server
                .cli_command()
                .args(["SUBSCRIBE", channel])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-cli runs"),
        };
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        {
            let stdout = proc.child.stdout.take().expect("its stdout");
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let subscriber = Subscriber { _proc: proc, lines };
        let started = Instant::now();
        while !subscriber.lines().iter().any(|l| l == "subscribe") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-cli did not subscribe to {channel}"
            );
            std::thread::sleep(POLL);
        }
        subscriber
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The payloads received on `channel`, in order.
    pub fn messages(&self, channel: &str) -> Vec<String> {
        self.lines()
            .windows(3)
            .filter(|w| w[0] == "message" && w[1] == channel)
            .map(|w| w[2].clone())
            .collect()
    }
}
