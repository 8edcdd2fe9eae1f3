//! The configuration's resolution, checked against files written for each case.

use std::time::Duration;

use super::*;
use crate::model::environment::Environment;
use crate::model::policy::Strategy;
use crate::settings::GlobalArgs;
use clap::CommandFactory;

/// The shared options alone, parsed as the command line parses them.
#[derive(clap::Parser)]
struct Line {
    #[command(flatten)]
    global: GlobalArgs,
}

fn resolve_with(file: &str, args: &[&str]) -> Result<(Settings, Report), ConfigError> {
    let dir = std::env::temp_dir().join(format!(
        "freshcache-config-test-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, file).unwrap();
    let mut argv = vec!["freshcache", "--config", path.to_str().unwrap()];
    argv.extend_from_slice(args);
    let matches = Line::command().try_get_matches_from(argv).unwrap();
    let r = resolve(&matches);
    std::fs::remove_dir_all(&dir).unwrap();
    r
}

#[test]
fn the_documented_default_file_is_valid_and_changes_nothing() {
    let (g, report) = resolve_with(DEFAULT_FILE, &[]).unwrap();
    assert_eq!(g.environment, Environment::Development);
    assert!(!g.read_only);
    assert_eq!(g.strategy, Strategy::Freshcache);
    assert_eq!(g.redis.timeout, Duration::from_millis(300));
    assert_eq!(g.redis.lease, Duration::from_secs(10));
    assert_eq!(g.warehouse.load_timeout, Duration::from_secs(20));
    assert_eq!(g.redis.max_unverified, Duration::from_secs(2));
    assert!(g.redis.local_tier);
    assert_eq!(g.log.keep, 7);
    assert!(g.redis.url.is_none() && g.hour.is_none() && g.metrics_addr.is_none());
    // Every key of the table is in the documented file (commented out or set).
    for k in KEYS {
        let leaf = k.key.rsplit('.').next().unwrap();
        assert!(
            DEFAULT_FILE.contains(&format!("{leaf} = ")),
            "{} is not documented in assets/freshcache.toml",
            k.key
        );
    }
    assert_eq!(report.settings.len(), KEYS.len());
}

#[test]
fn flags_beat_the_file_and_the_file_beats_defaults() {
    let file = "strategy = \"ttl\"\n[redis]\ntimeout = \"50ms\"\nlease = \"3s\"\n";
    let (g, report) = resolve_with(file, &["--lease", "7s"]).unwrap();
    assert_eq!(g.strategy, Strategy::Ttl);
    assert_eq!(g.redis.timeout, Duration::from_millis(50));
    assert_eq!(g.redis.lease, Duration::from_secs(7));
    let origin = |key: &str| {
        report
            .settings
            .iter()
            .find(|s| s.key == key)
            .unwrap()
            .origin
            .clone()
    };
    assert!(matches!(
        origin("redis.timeout"),
        Origin::File { line: 3, .. }
    ));
    assert_eq!(
        origin("redis.lease"),
        Origin::Flag {
            flag: "--lease".into()
        }
    );
    assert_eq!(origin("environment"), Origin::Default);
}

#[test]
fn unknown_keys_and_bad_values_name_the_line_and_what_is_accepted() {
    let e = resolve_with("[redis]\nurl = \"redis://h\"\ntimout = \"1s\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("unknown key `timout`"), "{e}");
    assert!(e.contains("timeout"), "{e}");

    let e = resolve_with("\n\n[redis]\ntimeout = \"soon\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 4") && e.contains("redis.timeout"), "{e}");

    let e = resolve_with("strategy = \"fastest\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1") && e.contains("freshcache"), "{e}");

    let e = resolve_with("read_only = \"yes\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1"), "{e}");

    let e = resolve_with("[log]\nkeep = 0\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("1 to 365"), "{e}");
}

#[test]
fn secrets_are_masked_in_errors_and_reports() {
    let (_, report) = resolve_with(
        "[redis]\nurl = \"redis://ann:S3NT1NEL@127.0.0.1:1/0\"\n",
        &[],
    )
    .unwrap();
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains("S3NT1NEL"), "{text}");
    assert!(text.contains("redis://ann:***@127.0.0.1:1/0"), "{text}");
    let e = resolve_with("[redis]\nurl = \"http://ann:S3NT1NEL@h/0\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(!e.contains("S3NT1NEL") && e.contains("line 2"), "{e}");
    let e = resolve_with("[warehouse]\nurl = \"mysql://ann:S3NT1NEL@h/db\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(!e.contains("S3NT1NEL"), "{e}");
}

#[test]
fn the_load_timeout_comes_from_the_file_or_the_flag_and_is_never_zero() {
    let file = "[warehouse]\nload_timeout = \"750ms\"\n";
    let (g, _) = resolve_with(file, &[]).unwrap();
    assert_eq!(g.warehouse.load_timeout, Duration::from_millis(750));
    let (g, _) = resolve_with(file, &["--load-timeout", "2s"]).unwrap();
    assert_eq!(g.warehouse.load_timeout, Duration::from_secs(2));
    let e = resolve_with("[warehouse]\nload_timeout = \"0s\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 2") && e.contains("warehouse.load_timeout"),
        "{e}"
    );
    let e = resolve_with("", &["--load-timeout", "soon"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--load-timeout"), "{e}");
}

#[test]
fn a_missing_explicit_file_is_an_error() {
    let matches = Line::command()
        .try_get_matches_from(["freshcache", "--config", "/nonexistent/fc.toml"])
        .unwrap();
    let e = resolve(&matches).unwrap_err().to_string();
    assert!(
        e.contains("/nonexistent/fc.toml") && e.contains("cannot read"),
        "{e}"
    );
}

/// Every bad value and unknown key of a file is reported at once, each with its line and what is
/// accepted, flags and variables first, then the file from top to bottom.
#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let file = "strategy = \"fastest\"\nread_only = \"yes\"\n[redis]\ntimeout = \"soon\"\nlease = \"0s\"\ntimout = \"1s\"\n[log]\nkeep = 0\n";
    let e = resolve_with(file, &["--max-unverified", "later"]).unwrap_err();
    let p = &e.problems;
    assert_eq!(p.len(), 7, "{e}");
    assert!(p[0].starts_with("flag --max-unverified: `later`"), "{e}");
    let expect = [
        ("line 1: key `strategy`", "freshcache"),
        ("line 2: key `read_only`", "expected true or false"),
        ("line 4: key `redis.timeout`", "`soon`"),
        ("line 5: key `redis.lease`", "more than zero"),
        ("line 6: unknown key `timout`", "`timeout`"),
        ("line 8: key `log.keep`", "1 to 365"),
    ];
    for (problem, (place, says)) in p[1..].iter().zip(expect) {
        assert!(
            problem.contains(place) && problem.contains(says),
            "{problem} lacks {place} / {says}"
        );
    }
}

/// The typed settings show no password, whichever way they are printed.
#[test]
fn settings_never_show_a_password() {
    let (s, _) = resolve_with(
        "[redis]\nurl = \"redis://ann:S3NT1NEL@127.0.0.1:1/0\"\n[warehouse]\nurl = \"postgres://bob:S3NT1NEL@db/sales\"\n",
        &[],
    )
    .unwrap();
    let shown = format!(
        "{s:?} {} {}",
        s.warehouse_url(),
        s.redis.url.as_ref().unwrap()
    );
    assert!(!shown.contains("S3NT1NEL"), "{shown}");
    assert!(shown.contains("redis://ann:***@127.0.0.1:1/0"), "{shown}");
    assert_eq!(s.latency(), crate::warehouse::Latency::NONE);
}

/// Each row of KEYS names a shared option, by the variable clap reads for it where clap reads
/// one; and each shared option is a row, except those that are not settings of the file.
#[test]
fn the_table_and_the_flags_agree() {
    let line = Line::command();
    let args: Vec<&clap::Arg> = line.get_arguments().collect();
    for k in KEYS {
        let arg = args
            .iter()
            .find(|a| a.get_id() == k.id)
            .unwrap_or_else(|| panic!("{} has no flag `{}`", k.key, k.id));
        assert_eq!(arg.get_long(), Some(&k.flag()[2..]), "{}", k.key);
        if let Some(env) = arg.get_env() {
            assert_eq!(env, k.env, "{}", k.key);
        }
    }
    for a in args {
        let id = a.get_id().as_str();
        assert!(
            KEYS.iter().any(|k| k.id == id) || ["json", "config", "help"].contains(&id),
            "--{id} is in no row of KEYS"
        );
    }
}
