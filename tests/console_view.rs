//! Snapshots of the console screen (ratatui's TestBackend, text only) at 80×24, 120×40 and 200×60:
//! the dashboard, help, every view and dialog (instances, plain words, an event in full, the
//! outage view, a story caption), the read-only and production variants, and a too-small terminal.
//! The state is built from fixed data, so the screens do not depend on the clock or the machine.
//! Every screen is also scanned for text cut at a border without an ellipsis.

// Tests may unwrap, panic and cast freely: a failure is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use freshcache::console::source::{Sample, sample_snapshot};
use freshcache::console::state::{Msg, State, StoryBar, update};
use freshcache::console::view::view;
use freshcache::model::environment::Environment;
use freshcache::model::events::{Behind, Event, EventKind};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};

const SIZES: [(u16, u16); 3] = [(80, 24), (120, 40), (200, 60)];

fn event(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        at_ms: 1_795_687_200_000 + seq * 7_000,
        origin: "api-1:4242".into(),
        kind,
    }
}

fn story() -> Vec<Event> {
    vec![
        event(
            1,
            EventKind::EtlRun {
                batch: "20261126-10:00".into(),
                loaded: vec!["sales".into(), "customers".into()],
                failed: vec![Behind {
                    table: "inventory".into(),
                    reason: "simulated failure".into(),
                }],
                late: vec![],
            },
        ),
        event(
            2,
            EventKind::RefreshAhead {
                tables: vec!["sales".into(), "customers".into()],
                keys: 35,
                done: 35,
                failed: 0,
            },
        ),
        event(
            3,
            EventKind::WarehouseUpdated {
                timestamp: "2026-11-26T10:00:21.000Z".into(),
                tables: vec!["sales".into(), "customers".into()],
                versions: [
                    ("sales".to_string(), 12),
                    ("inventory".to_string(), 11),
                    ("customers".to_string(), 12),
                ]
                .into(),
                batch: "20261126-10:00".into(),
                test: false,
            },
        ),
        event(
            4,
            EventKind::PartialUpdate {
                batch: "20261126-10:00".into(),
                verified: vec!["sales".into(), "customers".into()],
                behind: vec![Behind {
                    table: "inventory".into(),
                    reason: "update_log is at 20261126-09:00, batch 20261126-10:00 expected".into(),
                }],
            },
        ),
        event(
            5,
            EventKind::BadInput {
                source: "warehouse_updated".into(),
                reason: "unknown table `salez`; known tables: sales, inventory, customers".into(),
                excerpt: "{\"tables\": [\"salez\"]}".into(),
            },
        ),
        event(
            6,
            EventKind::OperatorAction {
                action: "invalidate".into(),
                operator: "ana".into(),
                host: "ops-1".into(),
                env: "staging".into(),
                targets: vec!["sales".into()],
                result: "ok".into(),
            },
        ),
    ]
}

fn state(env: Environment, read_only: bool, size: (u16, u16)) -> State {
    let mut s = State::new(sample_snapshot(env, read_only), &story(), false);
    s.size = size;
    for i in 0..240 {
        let mut snap = sample_snapshot(env, read_only);
        let x = i as f64;
        snap.sample = Sample {
            hit_ratio: Some(if (100..110).contains(&i) { 0.6 } else { 0.99 }),
            warehouse_qps: if (100..110).contains(&i) { 12.0 } else { 0.2 },
            p50_ms: 0.001,
            p99_ms: if (100..110).contains(&i) {
                310.0
            } else {
                0.2 + (x / 30.0).sin().abs()
            },
            stale_per_s: 0.0,
            requests_per_s: 2_400.0,
        };
        update(&mut s, Msg::Snapshot(Box::new(snap)));
    }
    s
}

fn keys(s: &mut State, codes: &[KeyCode]) {
    for c in codes {
        update(
            s,
            Msg::Terminal(TermEvent::Key(KeyEvent::new(*c, KeyModifiers::NONE))),
        );
    }
}

fn chars(s: &mut State, text: &str) {
    let codes: Vec<KeyCode> = text.chars().map(KeyCode::Char).collect();
    keys(s, &codes);
}

fn screen(s: &State) -> String {
    let (w, h) = s.size;
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(|f| view(s, f)).unwrap();
    terminal.backend().to_string()
}

/// Places where a word runs into a panel's right border or the screen's edge: a word character
/// right before it, with no ellipsis. Text that fits leaves at least one blank column before the
/// border (every panel pads), so a word touching it was cut.
fn cut_words(screen: &str) -> Vec<String> {
    const RIGHT_EDGES: &[char] = &['│', '┤', '┐', '┘', '║'];
    const BOX: &[char] = &['│', '┌', '└', '├', '┤', '┐', '┘', '─', '║'];
    let word = |c: char| c.is_alphanumeric();
    let mut cuts = Vec::new();
    for (n, line) in screen.lines().enumerate() {
        // TestBackend's text quotes each row: `"...",`.
        let line = line.trim_end_matches(',').trim_matches('"');
        let chars: Vec<char> = line.chars().collect();
        for x in 1..=chars.len() {
            // A panel's right border is followed by the next panel's border or ends the row
            // (a `│` followed by text separates the header's fields).
            let border = RIGHT_EDGES.contains(&chars[x.min(chars.len() - 1)])
                && chars.get(x + 1).is_none_or(|c| BOX.contains(c));
            let at_edge = x == chars.len() || border;
            if at_edge && word(chars[x - 1]) {
                let from = x.saturating_sub(24);
                cuts.push(format!(
                    "row {n}: …{}",
                    chars[from..x].iter().collect::<String>()
                ));
            }
        }
    }
    cuts
}

fn check(name: &str, build: impl Fn((u16, u16)) -> State) {
    for size in SIZES {
        let s = build(size);
        let text = screen(&s);
        let cuts = cut_words(&text);
        assert!(
            cuts.is_empty(),
            "{name} at {}x{}: text cut at a border without an ellipsis: {cuts:?}\n{text}",
            size.0,
            size.1
        );
        insta::assert_snapshot!(format!("{name}_{}x{}", size.0, size.1), text);
    }
}

#[test]
fn dashboard() {
    check("dashboard_staging", |size| {
        state(Environment::Staging, false, size)
    });
}

#[test]
fn dashboard_read_only() {
    check("dashboard_read_only", |size| {
        state(Environment::Staging, true, size)
    });
}

#[test]
fn dashboard_production() {
    check("dashboard_production", |size| {
        state(Environment::Production, false, size)
    });
}

#[test]
fn help() {
    check("help_staging", |size| {
        let mut s = state(Environment::Staging, false, size);
        keys(&mut s, &[KeyCode::Char('?')]);
        s
    });
    check("help_production_read_only", |size| {
        let mut s = state(Environment::Production, true, size);
        keys(&mut s, &[KeyCode::Char('?')]);
        s
    });
}

#[test]
fn dialogs() {
    check("invalidate_pick", |size| {
        let mut s = state(Environment::Staging, false, size);
        keys(&mut s, &[KeyCode::Char('i'), KeyCode::Down]);
        s
    });
    check("invalidate_confirm", |size| {
        let mut s = state(Environment::Staging, false, size);
        keys(&mut s, &[KeyCode::Char('i'), KeyCode::Enter]);
        chars(&mut s, "invalidate sal");
        s
    });
    check("partial_pick", |size| {
        let mut s = state(Environment::Staging, false, size);
        keys(
            &mut s,
            &[KeyCode::Char('p'), KeyCode::Down, KeyCode::Char(' ')],
        );
        s
    });
    check("partial_refused_in_production", |size| {
        let mut s = state(Environment::Production, false, size);
        keys(&mut s, &[KeyCode::Char('p')]);
        s
    });
    check("strategy_pick", |size| {
        let mut s = state(Environment::Development, false, size);
        keys(&mut s, &[KeyCode::Char('s'), KeyCode::Up]);
        s
    });
    check("warm", |size| {
        let mut s = state(Environment::Staging, false, size);
        keys(&mut s, &[KeyCode::Char('w')]);
        s
    });
    check("outcome", |size| {
        let mut s = state(Environment::Staging, false, size);
        keys(&mut s, &[KeyCode::Char('w'), KeyCode::Enter]);
        update(
            &mut s,
            Msg::Done(
                freshcache::console::action::ActionId::Warm,
                Ok("warming 35 hot keys".into()),
            ),
        );
        s
    });
    check("filter", |size| {
        let mut s = state(Environment::Staging, false, size);
        keys(&mut s, &[KeyCode::Char('/')]);
        chars(&mut s, "behind");
        s
    });
    check("frozen", |size| {
        let mut s = state(Environment::Staging, false, size);
        keys(&mut s, &[KeyCode::Char('f')]);
        s
    });
}

/// Issue 12: the views an SRE, a tester and a presenter open.
#[test]
fn views() {
    check("instances", |size| {
        let mut s = state(Environment::Staging, false, size);
        keys(&mut s, &[KeyCode::Char('n')]);
        s
    });
    check("plain_words", |size| {
        let mut s = state(Environment::Staging, false, size);
        keys(&mut s, &[KeyCode::Char('e')]);
        s
    });
    check("event_detail", |size| {
        let mut s = state(Environment::Staging, false, size);
        keys(&mut s, &[KeyCode::Enter]);
        s
    });
    check("outage", |size| {
        let mut s = state(Environment::Staging, false, size);
        let mut snap = sample_snapshot(Environment::Staging, false);
        snap.backend = "redis://127.0.0.1:6379/0".into();
        snap.degraded = Some("redis unreachable: connection refused".into());
        snap.figures_as_of = Some((
            snap.shared_now_ms - 12_000,
            "the other instances' reports cannot be read".into(),
        ));
        update(&mut s, Msg::Snapshot(Box::new(snap)));
        s
    });
    check("story_caption", |size| {
        let mut s = state(Environment::Staging, false, size);
        s.story = Some(StoryBar {
            caption: "3/6 10:00:01 — a thousand users ask the same question at once. \
                      freshcache sent 1 query to the warehouse; the others waited for it."
                .into(),
            busy: false,
        });
        s
    });
}

#[test]
fn a_small_terminal_gets_a_notice() {
    for size in [(60u16, 20u16), (10, 3), (1, 1)] {
        let s = state(Environment::Staging, false, size);
        let text = screen(&s);
        if size.0 >= 10 {
            assert!(text.contains("too small"), "{text}");
        }
    }
    let s = state(Environment::Staging, false, (79, 24));
    insta::assert_snapshot!("too_small_79x24", screen(&s));
}

#[test]
fn monochrome_keeps_the_selection_visible() {
    let mut s = state(Environment::Staging, false, (80, 24));
    s.monochrome = true;
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    terminal.draw(|f| view(&s, f)).unwrap();
    let buf = terminal.backend().buffer();
    let mut colored = 0;
    let mut reversed = 0;
    for cell in buf.content() {
        if cell.fg != ratatui::style::Color::Reset || cell.bg != ratatui::style::Color::Reset {
            colored += 1;
        }
        if cell.modifier.contains(ratatui::style::Modifier::REVERSED) {
            reversed += 1;
        }
    }
    assert_eq!(colored, 0, "no colour at all with NO_COLOR");
    assert!(
        reversed > 20,
        "the selected table row and the key hints are reversed"
    );
}
