//! The configuration's resolution, checked against files written for each case.

use super::*;
use crate::model::environment::Environment;
use clap::{CommandFactory, FromArgMatches};

/// The shared options alone, parsed as the command line parses them.
#[derive(clap::Parser)]
struct Line {
    #[command(flatten)]
    global: GlobalArgs,
}

fn resolve_with(file: &str, args: &[&str]) -> Result<(GlobalArgs, Report), ConfigError> {
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
    let mut cli = Line::from_arg_matches(&matches).unwrap();
    let r = resolve(&mut cli.global, &matches);
    // A temp dir left behind is untidy, not wrong.
    let _ = std::fs::remove_dir_all(&dir);
    r.map(|r| (cli.global, r))
}

#[test]
fn the_documented_default_file_is_valid_and_changes_nothing() {
    let (global, report) = resolve_with(DEFAULT_FILE, &[]).unwrap();
    assert_eq!(global.env, Environment::Development);
    assert!(!global.read_only);
    assert_eq!(global.strategy, Some(Strategy::Freshcache));
    assert_eq!(global.redis_timeout, "300ms");
    assert_eq!(global.lease, "10s");
    assert_eq!(global.load_timeout, "20s");
    assert!(!global.no_local_tier);
    assert_eq!(global.log_keep, 7);
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
    let (global, report) = resolve_with(file, &["--lease", "7s"]).unwrap();
    assert_eq!(global.strategy, Some(Strategy::Ttl));
    assert_eq!(global.redis_timeout, "50ms");
    assert_eq!(global.lease, "7s");
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
    let e = resolve_with("[redis]\nurl = \"redis://h\"\ntimout = \"1s\"\n", &[]).unwrap_err();
    assert!(e.0.contains("line 3"), "{e}");
    assert!(e.0.contains("unknown key `timout`"), "{e}");
    assert!(e.0.contains("timeout"), "{e}");

    let e = resolve_with("\n\n[redis]\ntimeout = \"soon\"\n", &[]).unwrap_err();
    assert!(
        e.0.contains("line 4") && e.0.contains("redis.timeout"),
        "{e}"
    );

    let e = resolve_with("strategy = \"fastest\"\n", &[]).unwrap_err();
    assert!(e.0.contains("line 1") && e.0.contains("freshcache"), "{e}");

    let e = resolve_with("read_only = \"yes\"\n", &[]).unwrap_err();
    assert!(e.0.contains("line 1"), "{e}");

    let e = resolve_with("[log]\nkeep = 0\n", &[]).unwrap_err();
    assert!(e.0.contains("line 2") && e.0.contains("1 to 365"), "{e}");
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
    let e = resolve_with("[redis]\nurl = \"http://ann:S3NT1NEL@h/0\"\n", &[]).unwrap_err();
    assert!(!e.0.contains("S3NT1NEL") && e.0.contains("line 2"), "{e}");
    let e = resolve_with("[warehouse]\nurl = \"mysql://ann:S3NT1NEL@h/db\"\n", &[]).unwrap_err();
    assert!(!e.0.contains("S3NT1NEL"), "{e}");
}

#[test]
fn the_load_timeout_comes_from_the_file_or_the_flag_and_is_never_zero() {
    let file = "[warehouse]\nload_timeout = \"750ms\"\n";
    let (global, _) = resolve_with(file, &[]).unwrap();
    assert_eq!(global.load_timeout, "750ms");
    let (global, _) = resolve_with(file, &["--load-timeout", "2s"]).unwrap();
    assert_eq!(global.load_timeout, "2s");
    let e = resolve_with("[warehouse]\nload_timeout = \"0s\"\n", &[]).unwrap_err();
    assert!(
        e.0.contains("line 2") && e.0.contains("warehouse.load_timeout"),
        "{e}"
    );
    let e = resolve_with("", &["--load-timeout", "soon"]).unwrap_err();
    assert!(e.0.contains("--load-timeout"), "{e}");
}

#[test]
fn a_missing_explicit_file_is_an_error() {
    let matches = Line::command()
        .try_get_matches_from(["freshcache", "--config", "/nonexistent/fc.toml"])
        .unwrap();
    let mut cli = Line::from_arg_matches(&matches).unwrap();
    let e = resolve(&mut cli.global, &matches).unwrap_err();
    assert!(
        e.0.contains("/nonexistent/fc.toml") && e.0.contains("cannot read"),
        "{e}"
    );
}

/// Regression (issue 11): resolution stopped at the first bad value, so a file with three
/// mistakes took three runs to fix. Every problem is reported at once, each with its line.
#[test]
fn every_bad_value_in_a_file_is_reported_at_once() {
    let file = "strategy = \"fastest\"\n[redis]\ntimeout = \"soon\"\nlease = \"-3s\"\n";
    let e = resolve_with(file, &[]).unwrap_err().0;
    for wanted in ["line 1", "line 3", "line 4"] {
        assert!(e.contains(wanted), "{wanted} missing from: {e}");
    }
    assert_eq!(e.lines().count(), 3, "{e}");
}
