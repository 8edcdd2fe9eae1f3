//! The real binary in a real terminal: tmux runs `freshcache demo`, keys are sent with
//! `send-keys`, the screen is read with `capture-pane`, and every step waits for what the screen
//! must show (no fixed sleeps).
//!
//! * staging: the dashboard comes up, `sales` is invalidated through its typed confirmation, its
//!   version goes up and the action appears in the feed; `q` quits and the terminal is restored;
//! * production: the partial-update action is absent and pressing its key says why;
//! * on Redis: the instances view with two traffic instances, one behind a partitioned
//!   connection; then Redis killed, and the figures kept with their age;
//! * an event opened in full; the blast radius; a wrong phrase; the story's captions.
//!
//! tmux runs on a private socket, so no user session is touched. Without tmux the tests say so
//! and pass, unless `FRESHCACHE_REQUIRE_TMUX=1` (set by CI), where that is a failure.

// Tests may unwrap, panic and cast freely: a failure is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, RedisServer, TempDir, init_warehouse, read_log, spawn_logged};
use freshcache::bench::chaos::proxy::{FaultProxy, Mode};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn available() -> bool {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn start(name: &str, command: &str) -> Tmux {
        Self::start_sized(name, command, (160, 48))
    }

    fn start_sized(name: &str, command: &str, (width, height): (u16, u16)) -> Tmux {
        let t = Tmux {
            socket: format!("freshcache-test-{}-{name}", std::process::id()),
        };
        let ok = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "t",
            ])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(command)
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux runs");
        assert!(ok.success(), "tmux new-session failed");
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn literal(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", text]);
    }

    /// Waits until the screen satisfies `check`, up to `limit`; returns that screen.
    fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            if started.elapsed() > limit {
                panic!("waited {limit:?} for {what}; the screen shows:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alternate_screen(&self) -> bool {
        self.tmux(&["display-message", "-p", "-t", "t", "#{alternate_on}"])
            .trim()
            == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn skip_without_tmux() -> bool {
    if Tmux::available() {
        return false;
    }
    let msg = "tmux not found: the console end-to-end tests are SKIPPED";
    if std::env::var("FRESHCACHE_REQUIRE_TMUX").is_ok_and(|v| v == "1") {
        panic!("{msg} (FRESHCACHE_REQUIRE_TMUX=1)");
    }
    eprintln!("\n==== {msg} ====\n");
    true
}

fn demo_command(env: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_freshcache");
    // A shell around the demo: after `q` the shell prints the exit code and keeps the pane, so the
    // test can see the terminal as the demo left it.
    format!(
        "sh -c '{bin} --env {env} --hour 20s --latency 20ms demo --users 20 --sales 5000; \
         echo EXIT=$?; exec sh'"
    )
}

/// The version in the `sales` row of the tables panel.
fn sales_version(screen: &str) -> Option<u64> {
    screen.lines().find_map(|l| {
        let cells: Vec<&str> = l.trim_start_matches('│').split_whitespace().collect();
        (cells.first() == Some(&"sales")).then(|| cells.get(1)?.parse().ok())?
    })
}

const BOOT: Duration = Duration::from_secs(90);
const STEP: Duration = Duration::from_secs(30);

#[test]
fn staging_invalidate_sales_then_quit_restores_the_terminal() {
    if skip_without_tmux() {
        return;
    }
    let t = Tmux::start("staging", &demo_command("staging"));
    let screen = t.wait_for("the dashboard", BOOT, |s| {
        s.contains("STAGING") && sales_version(s).is_some() && s.contains("invalidate")
    });
    assert!(
        t.alternate_screen(),
        "the console uses the alternate screen"
    );
    let before = sales_version(&screen).expect("a sales row");

    t.keys(&["i"]);
    t.wait_for("the table picker", STEP, |s| s.contains("[x] sales"));
    t.keys(&["Enter"]);
    t.wait_for("the confirmation", STEP, |s| {
        s.contains("type invalidate sales in staging to confirm")
    });
    t.literal("invalidate sales in staging");
    t.wait_for("the phrase to be accepted", STEP, |s| {
        s.contains("Enter runs it")
    });
    t.keys(&["Enter"]);
    t.wait_for("the outcome", STEP, |s| s.contains("invalidate: done"));
    t.keys(&["Enter"]);
    let screen = t.wait_for("the new sales version and the audit event", STEP, |s| {
        sales_version(s).is_some_and(|v| v > before) && s.contains("invalidate sales by")
    });
    assert!(screen.contains("operator_action"), "{screen}");

    // Enter opens the newest event in full: its sentence and every field of its JSON.
    t.keys(&["Enter"]);
    let detail = t.wait_for("the event in full", STEP, |s| {
        s.contains("Enter or Esc closes") && s.contains("event #")
    });
    for field in ["seq:", "at_ms:", "origin:"] {
        assert!(
            detail.contains(field),
            "no `{field}` in the detail:\n{detail}"
        );
    }
    t.keys(&["Escape"]);
    t.wait_for("the detail to close", STEP, |s| {
        !s.contains("Enter or Esc closes")
    });

    t.keys(&["q"]);
    t.wait_for("the demo to exit", STEP, |s| s.contains("EXIT=0"));
    assert!(!t.alternate_screen(), "the alternate screen is left");
    // Echo and line editing are back: a typed command shows and runs.
    t.literal("echo restored-$((20+22))");
    t.keys(&["Enter"]);
    t.wait_for("the shell to answer", STEP, |s| {
        s.lines().any(|l| l.trim() == "restored-42")
    });
}

#[test]
fn production_refuses_the_partial_update() {
    if skip_without_tmux() {
        return;
    }
    let t = Tmux::start("production", &demo_command("production"));
    let screen = t.wait_for("the dashboard", BOOT, |s| {
        s.contains("PRODUCTION") && sales_version(s).is_some()
    });
    let footer = screen.lines().last().unwrap_or("");
    assert!(
        !footer.contains("partial"),
        "absent from the footer: {footer}"
    );
    t.keys(&["p"]);
    t.wait_for("the refusal", STEP, |s| {
        s.contains("partial updates are simulated in staging and development, not in production")
    });
    assert!(!t.screen().contains("tables that fail"), "no dialog opened");
    t.keys(&["C-c"]);
    t.wait_for("the demo to exit", STEP, |s| s.contains("EXIT=0"));
    assert!(!t.alternate_screen());
}

#[test]
fn sigterm_restores_the_terminal() {
    if skip_without_tmux() {
        return;
    }
    let t = Tmux::start("sigterm", &demo_command("development"));
    t.wait_for("the dashboard", BOOT, |s| sales_version(s).is_some());
    let pids = Command::new("pgrep")
        .args([
            "-f",
            &format!("^{} --env development", env!("CARGO_BIN_EXE_freshcache")),
        ])
        .output()
        .expect("pgrep");
    let pids = String::from_utf8_lossy(&pids.stdout).to_string();
    let pid = pids.lines().next().expect("the demo's pid");
    assert!(
        Command::new("kill")
            .args(["-TERM", pid])
            .status()
            .expect("kill")
            .success()
    );
    t.wait_for("the demo to exit", STEP, |s| s.contains("EXIT=0"));
    assert!(!t.alternate_screen());
}

/// The headless twin of a dangerous console action asks for the same typed phrase on a terminal:
/// a wrong phrase changes nothing (exit 3), the right one runs it.
#[test]
fn simulate_partial_on_a_terminal_asks_for_the_consoles_phrase() {
    if skip_without_tmux() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("freshcache-e2e-confirm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("empty.toml");
    std::fs::write(&config, "").expect("config");
    let bin = env!("CARGO_BIN_EXE_freshcache");
    let run = format!(
        "{bin} --config {} --data-dir {} --log-dir {} --latency 0s simulate-partial --fail inventory",
        config.display(),
        dir.join("data").display(),
        dir.join("logs").display()
    );
    let t = Tmux::start(
        "confirm",
        &format!("sh -c '{run}; echo FIRST=$?; {run}; echo SECOND=$?; exec sh'"),
    );
    let phrase = "simulate-partial inventory in development";
    t.wait_for("the first prompt", BOOT, |s| {
        s.contains(&format!("Type `{phrase}` to confirm"))
    });
    t.literal("simulate-partial inventory in staging");
    t.keys(&["Enter"]);
    let screen = t.wait_for("the refusal", STEP, |s| s.contains("FIRST="));
    assert!(screen.contains("FIRST=3"), "{screen}");
    assert!(screen.contains("did not match"), "{screen}");
    t.wait_for("the second prompt", STEP, |s| {
        s.matches(&format!("Type `{phrase}` to confirm")).count() == 2
    });
    t.literal(phrase);
    t.keys(&["Enter"]);
    let screen = t.wait_for("the second run", BOOT, |s| s.contains("SECOND="));
    assert!(screen.contains("SECOND=0"), "{screen}");
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The headless `invalidate`'s blast radius for sales + inventory, as it says before refusing
/// (no terminal, no `--yes`): `every answer of N of M queries`.
fn headless_blast_radius(dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_freshcache"))
        .args(["--data-dir"])
        .arg(dir)
        .args([
            "--latency",
            "0s",
            "invalidate",
            "--table",
            "sales",
            "--table",
            "inventory",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("freshcache runs");
    assert_eq!(out.status.code(), Some(3), "refused without a terminal");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let at = text
        .find("every answer of")
        .expect("the blast radius is said");
    let end = text[at..].find(" queries").expect("… queries") + at;
    text[at..end].to_string()
}

/// Issue 12: the console's blast radius for sales + inventory is the headless count (each query
/// once), and a wrong phrase says so in the dialog.
#[test]
fn the_confirmation_counts_like_the_cli_and_a_wrong_phrase_says_so() {
    if skip_without_tmux() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("freshcache-e2e-blast-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let headless = headless_blast_radius(&dir);
    let _ = std::fs::remove_dir_all(&dir);

    let t = Tmux::start("blast", &demo_command("staging"));
    t.wait_for("the dashboard", BOOT, |s| sales_version(s).is_some());
    t.keys(&["i"]);
    t.wait_for("the table picker", STEP, |s| s.contains("[x] sales"));
    t.keys(&["Down", "Space", "Enter"]);
    let screen = t.wait_for("the confirmation", STEP, |s| s.contains("to confirm"));
    let flat: String = screen.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(&headless),
        "the console says other than `{headless}`:\n{screen}"
    );
    t.literal("invalidate nothing");
    t.keys(&["Enter"]);
    t.wait_for("the dialog to say the phrase does not match", STEP, |s| {
        s.contains("does not match")
    });
    t.keys(&["Escape", "q"]);
}

/// Issue 12: `demo --story` steps through its captions, each measured by its step.
#[test]
fn the_story_steps_through_its_captions() {
    if skip_without_tmux() {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_freshcache");
    let t = Tmux::start(
        "story",
        &format!("sh -c '{bin} demo --story --sales 5000; echo EXIT=$?; exec sh'"),
    );
    t.wait_for("the story's opening", BOOT, |s| s.contains("Press space"));
    for step in 1..=6 {
        t.keys(&["Space"]);
        let mark = format!("{step}/6 ");
        let screen = t.wait_for(&format!("caption {step}"), STEP, |s| {
            s.contains(&mark) && !s.contains("playing…")
        });
        if step == 5 {
            // 10:30: the baseline served the 9 o'clock figures as current; freshcache did not.
            let flat: String = screen.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains("0 old answers"), "{screen}");
            assert!(flat.contains("Hour-TTL: 1000 answers"), "{screen}");
        }
    }
    t.keys(&["Space"]);
    t.wait_for("the end", STEP, |s| s.contains("The end."));
    t.keys(&["q"]);
    t.wait_for("the story to exit", STEP, |s| s.contains("EXIT=0"));
}

/// The rows of the instances panel (the right-most panel of its lines) that name `role`.
fn instance_rows<'a>(screen: &'a str, role: &str) -> Vec<&'a str> {
    screen
        .lines()
        .filter(|l| l.contains("││"))
        .filter_map(|l| l.rsplit("││").next())
        .filter(|l| l.split_whitespace().nth(1) == Some(role))
        .collect()
}

/// Issue 12: two traffic instances on one Redis, one of them behind a partitioned connection:
/// the instances view names it (unverified, then lost) while the other stays ok; then Redis is
/// killed and the console keeps the last figures it read, with their age.
#[test]
fn the_instances_view_names_the_partitioned_instance_and_an_outage_keeps_the_figures() {
    if skip_without_tmux() {
        return;
    }
    let _serial = common::serial();
    let Some(server) = RedisServer::start("instances_view_e2e") else {
        return;
    };
    let data = TempDir::new("console-fleet");
    init_warehouse(data.path());
    let dir = data.path().to_str().expect("a UTF-8 path").to_string();
    let url = server.url();
    let runtime = common::runtime();
    let upstream = url
        .trim_start_matches("redis://")
        .trim_end_matches("/0")
        .parse()
        .expect("the server's address");
    let proxy = runtime
        .block_on(FaultProxy::start(upstream))
        .expect("the proxy");
    let proxied = format!("redis://{}/0", proxy.addr());
    let traffic = |redis: &str, name: &str| -> Proc {
        spawn_logged(
            data.path(),
            name,
            &[
                "--redis",
                redis,
                "--data-dir",
                &dir,
                "--latency",
                "10ms",
                "traffic",
                "--users",
                "5",
                "--duration",
                "300s",
                "--think",
                "200ms",
            ],
        )
    };
    let mut direct = traffic(&url, "direct");
    let mut cut = traffic(&proxied, "cut");
    let cut_pid = cut.child.id();

    let bin = env!("CARGO_BIN_EXE_freshcache");
    let t = Tmux::start_sized(
        "fleet",
        &format!(
            "sh -c '{bin} --redis {url} --data-dir {dir} --log-dir {dir}/logs console; \
             echo EXIT=$?; exec sh'"
        ),
        (200, 60),
    );
    let logs = || {
        format!(
            "{:?} {:?}",
            read_log(data.path(), "direct"),
            read_log(data.path(), "cut")
        )
    };
    let screen = t.wait_for("two traffic instances, both ok", BOOT, |s| {
        let rows = instance_rows(s, "traffic");
        rows.len() == 2 && rows.iter().all(|r| r.split_whitespace().any(|w| w == "ok"))
    });
    assert!(
        screen.contains("instances ·"),
        "the panel is shown at 200 columns:\n{screen}"
    );
    assert!(
        direct.exited().is_none() && cut.exited().is_none(),
        "{}",
        logs()
    );

    // The partition: the cut instance's reports stop reaching Redis; an update goes on without it.
    proxy.set(Mode::Blackhole);
    let out = common::freshcache(&[
        "--redis",
        &url,
        "--data-dir",
        &dir,
        "invalidate",
        "--table",
        "sales",
        "--yes",
    ])
    .output()
    .expect("freshcache runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = t.wait_for("the cut instance named, the other ok", STEP, |s| {
        let rows = instance_rows(s, "traffic");
        let named = |r: &&str| {
            r.split_whitespace()
                .any(|w| matches!(w, "UNVERIFIED" | "LOST" | "BEHIND"))
        };
        rows.len() == 2
            && rows.iter().filter(|r| named(r)).count() == 1
            && rows.iter().any(|r| r.split_whitespace().any(|w| w == "ok"))
    });
    let flagged = instance_rows(&screen, "traffic")
        .into_iter()
        .find(|r| !r.split_whitespace().any(|w| w == "ok"))
        .expect("a flagged row");
    if let Some(host_end) = flagged.find(':') {
        // Ids are `host:pid#n`; with a short host name the pid is shown whole.
        if host_end < 12 {
            assert!(
                flagged.contains(&format!(":{cut_pid}#")),
                "the flagged row is not the cut instance ({cut_pid}): {flagged}\n{screen}"
            );
        }
    }

    // The outage: Redis killed; the console keeps the last figures, marked with their age.
    let questions_before = questions(&screen).expect("a question count");
    assert!(questions_before > 0, "{screen}");
    proxy.set(Mode::Pass);
    server.kill9();
    let screen = t.wait_for("the figures kept with their age", STEP, |s| {
        s.contains("AS OF")
    });
    assert!(
        questions(&screen).is_some_and(|q| q >= questions_before),
        "the figures are gone in the outage:\n{screen}"
    );
    t.keys(&["q"]);
    t.wait_for("the console to exit", STEP, |s| s.contains("EXIT="));
    drop(direct);
    drop(cut);
}

/// The number of questions in the money panel (`questions  182 340`).
fn questions(screen: &str) -> Option<u64> {
    screen.lines().find_map(|l| {
        l.match_indices("questions").find_map(|(at, word)| {
            let digits: String = l[at + word.len()..]
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ' ')
                .filter(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
    })
}
