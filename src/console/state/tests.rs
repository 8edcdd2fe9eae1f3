//! `update()` for every action and every guard, without a terminal.

use ratatui::crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};

use super::*;
use crate::console::source::sample_snapshot;
use crate::model::environment::Environment;
use crate::model::events::{Behind, Event, EventKind};
use crate::model::policy::Strategy;

fn state(env: Environment, read_only: bool) -> State {
    let mut s = State::new(sample_snapshot(env, read_only), &[], false);
    s.size = (160, 48);
    s
}

fn key(s: &mut State, code: KeyCode) -> Option<Effect> {
    update(
        s,
        Msg::Terminal(TermEvent::Key(KeyEvent::new(code, KeyModifiers::NONE))),
    )
}

fn typed(s: &mut State, text: &str) {
    for c in text.chars() {
        assert_eq!(key(s, KeyCode::Char(c)), None);
    }
}

/// Enter on a dialog that asks for a typed confirmation: checks the phrase it asks for, types it,
/// and returns what Enter then does.
fn confirm_typed(s: &mut State, expected: &str) -> Option<Effect> {
    key(s, KeyCode::Enter);
    let Some(Dialog::Confirm { phrase, .. }) = &s.dialog else {
        panic!("no confirmation asked for")
    };
    assert_eq!(phrase, expected);
    typed(s, expected);
    key(s, KeyCode::Enter)
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        at_ms: 1_795_687_230_000 + seq * 1000,
        origin: "h:1".into(),
        kind,
    }
}

#[test]
fn invalidate_needs_the_typed_phrase() {
    let mut s = state(Environment::Staging, false);
    assert_eq!(key(&mut s, KeyCode::Char('i')), None);
    let Some(Dialog::Pick { checked, .. }) = &s.dialog else {
        panic!("a table picker opens")
    };
    assert_eq!(
        checked,
        &vec![true, false, false, false],
        "the selected table is ticked"
    );
    assert_eq!(key(&mut s, KeyCode::Enter), None);
    let Some(Dialog::Confirm { phrase, blast, .. }) = &s.dialog else {
        panic!("a confirmation follows")
    };
    assert_eq!(phrase, "invalidate sales in staging");
    assert!(blast.contains("38 cached answers"), "{blast}");
    typed(&mut s, "invalidate sales in prod");
    assert_eq!(
        key(&mut s, KeyCode::Enter),
        None,
        "a wrong phrase does nothing"
    );
    assert!(s.notice.as_deref().unwrap_or("").contains("does not match"));
    for _ in 0.."prod".len() {
        key(&mut s, KeyCode::Backspace);
    }
    typed(&mut s, "staging");
    assert_eq!(
        key(&mut s, KeyCode::Enter),
        Some(Effect::Execute(
            ActionId::Invalidate,
            Command::Invalidate(vec!["sales".into()])
        ))
    );
    assert!(matches!(s.dialog, Some(Dialog::Running { .. })));
    update(
        &mut s,
        Msg::Done(ActionId::Invalidate, Ok("invalidated sales".into())),
    );
    assert!(matches!(s.dialog, Some(Dialog::Outcome { ok: true, .. })));
    key(&mut s, KeyCode::Enter);
    assert!(s.dialog.is_none());
}

#[test]
fn invalidate_all_and_escape() {
    let mut s = state(Environment::Development, false);
    key(&mut s, KeyCode::Char('i'));
    key(&mut s, KeyCode::Char(' ')); // untick sales
    for _ in 0..3 {
        key(&mut s, KeyCode::Down);
    }
    key(&mut s, KeyCode::Char(' ')); // tick "all tables"
    assert_eq!(
        confirm_typed(&mut s, "invalidate all in development"),
        Some(Effect::Execute(
            ActionId::Invalidate,
            Command::Invalidate(vec![])
        ))
    );
    let mut s = state(Environment::Development, false);
    key(&mut s, KeyCode::Char('i'));
    key(&mut s, KeyCode::Char(' '));
    assert_eq!(key(&mut s, KeyCode::Enter), None, "nothing ticked");
    assert!(s.notice.is_some());
    key(&mut s, KeyCode::Esc);
    assert!(s.dialog.is_none());
}

#[test]
fn production_refuses_the_partial_update_and_says_why() {
    let mut s = state(Environment::Production, false);
    assert!(
        !s.offered()
            .iter()
            .any(|a| a.id == ActionId::SimulatePartial)
    );
    assert_eq!(key(&mut s, KeyCode::Char('p')), None);
    assert!(s.dialog.is_none());
    let notice = s.notice.clone().unwrap_or_default();
    assert!(notice.contains("not in production"), "{notice}");
    assert_eq!(
        key(&mut s, KeyCode::Char('s')),
        None,
        "nor a strategy switch"
    );
    assert!(s.dialog.is_none());
    // Invalidation stays available in production, behind its phrase.
    key(&mut s, KeyCode::Char('i'));
    key(&mut s, KeyCode::Enter);
    let Some(Dialog::Confirm { phrase, .. }) = &s.dialog else {
        panic!()
    };
    assert_eq!(phrase, "invalidate sales in production");
}

#[test]
fn a_partial_update_in_staging() {
    let mut s = state(Environment::Staging, false);
    key(&mut s, KeyCode::Char('p'));
    key(&mut s, KeyCode::Down);
    key(&mut s, KeyCode::Char(' ')); // inventory
    assert_eq!(
        confirm_typed(&mut s, "simulate-partial inventory in staging"),
        Some(Effect::Execute(
            ActionId::SimulatePartial,
            Command::SimulatePartial(vec!["inventory".into()])
        ))
    );
    // Failing every table is not a partial update.
    let mut s = state(Environment::Staging, false);
    key(&mut s, KeyCode::Char('p'));
    for _ in 0..3 {
        key(&mut s, KeyCode::Char(' '));
        key(&mut s, KeyCode::Down);
    }
    assert_eq!(key(&mut s, KeyCode::Enter), None);
    assert!(
        s.notice
            .as_deref()
            .unwrap_or("")
            .contains("at least one table to load")
    );
}

#[test]
fn read_only_removes_every_change() {
    let mut s = state(Environment::Staging, true);
    let offered: Vec<_> = s.offered().iter().map(|a| a.id).collect();
    for id in [
        ActionId::Invalidate,
        ActionId::Warm,
        ActionId::SimulatePartial,
        ActionId::Strategy,
    ] {
        assert!(!offered.contains(&id), "{id:?}");
    }
    for c in ['i', 'w', 'p', 's'] {
        assert_eq!(key(&mut s, KeyCode::Char(c)), None);
        assert!(s.dialog.is_none(), "{c}");
        assert!(s.notice.is_some(), "{c}");
    }
    assert!(offered.contains(&ActionId::Freeze) && offered.contains(&ActionId::Quit));
}

#[test]
fn warm_runs_without_a_phrase() {
    let mut s = state(Environment::Staging, false);
    key(&mut s, KeyCode::Char('w'));
    key(&mut s, KeyCode::Char('+'));
    assert_eq!(
        key(&mut s, KeyCode::Enter),
        Some(Effect::Execute(ActionId::Warm, Command::Warm(60)))
    );
}

#[test]
fn strategy_switch_is_confirmed() {
    let mut s = state(Environment::Development, false);
    key(&mut s, KeyCode::Char('s'));
    let Some(Dialog::Strategy { cursor }) = &s.dialog else {
        panic!()
    };
    assert_eq!(
        Strategy::ALL[*cursor],
        Strategy::Freshcache,
        "starts at the current one"
    );
    key(&mut s, KeyCode::Up);
    assert_eq!(
        confirm_typed(&mut s, "switch-strategy versioned in development"),
        Some(Effect::Execute(
            ActionId::Strategy,
            Command::SetStrategy(Strategy::Versioned)
        ))
    );
    update(
        &mut s,
        Msg::Done(ActionId::Strategy, Err("refused: read-only".into())),
    );
    assert!(matches!(s.dialog, Some(Dialog::Outcome { ok: false, .. })));
}

#[test]
fn freeze_keeps_the_screen_while_collection_goes_on() {
    let mut s = state(Environment::Staging, false);
    key(&mut s, KeyCode::Char('f'));
    assert!(s.is_frozen());
    let mut next = sample_snapshot(Environment::Staging, false);
    next.tables[0].version = 99;
    update(&mut s, Msg::Snapshot(Box::new(next)));
    update(
        &mut s,
        Msg::Event(Box::new(event(
            1,
            EventKind::Incident {
                message: "x".into(),
            },
        ))),
    );
    assert_eq!(s.shown().tables[0].version, 12, "the screen stays");
    assert_eq!(s.live.tables[0].version, 99, "collection goes on");
    assert_eq!(s.shown_feed().count(), 0);
    key(&mut s, KeyCode::Char('f'));
    assert_eq!(s.shown().tables[0].version, 99);
    assert_eq!(s.shown_feed().count(), 1);
}

#[test]
fn the_feed_filters_scrolls_counts_drops_and_cleans() {
    let mut s = state(Environment::Staging, false);
    update(
        &mut s,
        Msg::Event(Box::new(event(
            1,
            EventKind::PartialUpdate {
                batch: "b".into(),
                verified: vec!["sales".into()],
                behind: vec![Behind {
                    table: "inventory".into(),
                    reason: "late".into(),
                }],
            },
        ))),
    );
    for i in 2..40 {
        update(
            &mut s,
            Msg::Event(Box::new(event(
                i,
                EventKind::BadInput {
                    source: "warehouse_updated".into(),
                    reason: "not JSON".into(),
                    excerpt: "\x1b[2J\x1b[31mred".into(),
                },
            ))),
        );
    }
    assert!(
        s.feed.iter().all(|l| !l.text.contains('\x1b')),
        "escapes never reach the screen"
    );
    key(&mut s, KeyCode::Char('/'));
    typed(&mut s, "behind");
    assert_eq!(s.shown_feed().count(), 1);
    key(&mut s, KeyCode::Enter);
    assert_eq!(s.filter.as_deref(), Some("behind"));
    key(&mut s, KeyCode::Esc);
    assert_eq!(s.filter, None);
    assert_eq!(s.shown_feed().count(), 39);
    key(&mut s, KeyCode::Down);
    key(&mut s, KeyCode::Down);
    assert_eq!(s.scroll, 2);
    key(&mut s, KeyCode::PageDown);
    key(&mut s, KeyCode::PageDown);
    key(&mut s, KeyCode::PageDown);
    key(&mut s, KeyCode::PageDown);
    assert_eq!(s.scroll, 38, "bounded by the feed");
    key(&mut s, KeyCode::Home);
    assert_eq!(s.scroll, 0);
    update(&mut s, Msg::Lagged(7));
    update(&mut s, Msg::Lagged(3));
    assert_eq!(s.dropped, 10);
}

#[test]
fn mouse_scrolls_the_feed_and_selects_tables() {
    let mut s = state(Environment::Staging, false);
    for i in 0..20 {
        update(
            &mut s,
            Msg::Event(Box::new(event(
                i,
                EventKind::Incident {
                    message: format!("{i}"),
                },
            ))),
        );
    }
    let r = crate::console::layout::regions(
        ratatui::layout::Rect::new(0, 0, 160, 48),
        3,
        crate::console::layout::Wanted {
            compare: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mouse = |kind, column, row| {
        Msg::Terminal(TermEvent::Mouse(MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        }))
    };
    update(
        &mut s,
        mouse(MouseEventKind::ScrollDown, r.feed.x + 5, r.feed.y + 2),
    );
    assert_eq!(s.scroll, 3);
    update(
        &mut s,
        mouse(MouseEventKind::ScrollDown, r.header.x, r.header.y),
    );
    assert_eq!(s.scroll, 3, "the wheel outside the feed does nothing");
    update(
        &mut s,
        mouse(
            MouseEventKind::Down(MouseButton::Left),
            r.table_rows.x + 2,
            r.table_rows.y + 2,
        ),
    );
    assert_eq!(s.selected_table, 2);
    key(&mut s, KeyCode::Tab);
    assert_eq!(s.selected_table, 0);
}

#[test]
fn help_quit_and_ctrl_c() {
    let mut s = state(Environment::Staging, false);
    key(&mut s, KeyCode::Char('?'));
    assert!(s.help);
    key(&mut s, KeyCode::Char('i'));
    assert!(
        s.dialog.is_none(),
        "keys go to the help overlay while it is open"
    );
    key(&mut s, KeyCode::Esc);
    assert!(!s.help);
    key(&mut s, KeyCode::Char('q'));
    assert!(s.quit);
    let mut s = state(Environment::Staging, false);
    key(&mut s, KeyCode::Char('i'));
    update(
        &mut s,
        Msg::Terminal(TermEvent::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL,
        ))),
    );
    assert!(s.quit, "Ctrl-C quits even from a dialog");
}

#[test]
fn a_paste_goes_into_the_phrase_cleaned() {
    let mut s = state(Environment::Staging, false);
    key(&mut s, KeyCode::Char('i'));
    key(&mut s, KeyCode::Enter);
    update(
        &mut s,
        Msg::Terminal(TermEvent::Paste(
            "invalidate sales\x1b[2J in staging".into(),
        )),
    );
    let Some(Dialog::Confirm { input, .. }) = &s.dialog else {
        panic!()
    };
    assert_eq!(input.value(), "invalidate sales[2J in staging");
}

/// Regression (issue 12): the blast radius added per-table counts, so a query reading two of the
/// tables counted twice ("up to 12 of 12" for sales + inventory, where the headless twin says 11).
#[test]
fn the_blast_radius_counts_each_query_once() {
    let mut s = state(Environment::Staging, false);
    key(&mut s, KeyCode::Char('i'));
    key(&mut s, KeyCode::Down);
    key(&mut s, KeyCode::Char(' ')); // tick inventory beside sales
    key(&mut s, KeyCode::Enter);
    let Some(Dialog::Confirm { blast, .. }) = &s.dialog else {
        panic!("a confirmation follows")
    };
    let catalog = crate::model::catalog::Catalog::bundled().unwrap();
    let reading = |q: &crate::model::catalog::Query, name: &str| {
        q.tables.iter().any(|&t| catalog.tables().name(t) == name)
    };
    let expected = catalog
        .queries()
        .iter()
        .filter(|q| reading(q, "sales") || reading(q, "inventory"))
        .count();
    assert!(
        blast.contains(&format!(
            " {expected} of {} queries",
            catalog.queries().len()
        )),
        "{blast}"
    );
}

#[test]
fn enter_opens_the_top_event_in_full_and_plain_words_switch_the_feed() {
    let mut s = state(Environment::Staging, false);
    for seq in 1..=3 {
        update(
            &mut s,
            Msg::Event(Box::new(event(
                seq,
                EventKind::RefreshAhead {
                    tables: vec![],
                    keys: u32::try_from(seq).unwrap() * 10,
                    done: u32::try_from(seq).unwrap() * 10,
                    failed: 0,
                },
            ))),
        );
    }
    key(&mut s, KeyCode::Down);
    key(&mut s, KeyCode::Enter);
    let Some(Dialog::Detail { event }) = &s.dialog else {
        panic!("Enter opens the event at the top of the feed")
    };
    assert_eq!(event.seq, 2, "scrolled one down from the newest");
    key(&mut s, KeyCode::Esc);
    assert!(s.dialog.is_none());

    assert!(!s.plain_words);
    key(&mut s, KeyCode::Char('e'));
    assert!(s.plain_words);
    let top = s.shown_feed().next().unwrap();
    assert_eq!(
        top.plain,
        "30 popular answers were computed again before anyone asked."
    );
}

#[test]
fn figures_kept_through_an_outage_say_how_old_they_are() {
    let mut snap = sample_snapshot(Environment::Production, false);
    snap.figures_as_of = Some((
        snap.shared_now_ms - 12_000,
        "other instances cannot be read: connection refused".into(),
    ));
    let mut s = State::new(snap, &[], true);
    s.size = (160, 48);
    let backend = ratatui::backend::TestBackend::new(160, 48);
    let mut terminal = ratatui::Terminal::new(backend).unwrap();
    terminal
        .draw(|f| crate::console::view::view(&s, f))
        .unwrap();
    let header: String = (0..160)
        .map(|x| terminal.backend().buffer()[(x, 0)].symbol().to_string())
        .collect();
    assert!(header.contains("AS OF 10:00:20, 12s ago"), "{header}");
    let screen: String = terminal
        .backend()
        .buffer()
        .content()
        .iter()
        .map(|c| c.symbol())
        .collect();
    assert!(screen.contains("last known: other instances"), "{screen}");
}

#[test]
fn a_strategy_switch_starts_its_own_money_row() {
    let mut s = state(Environment::Development, false);
    let first = s.live.stats.clone();
    let mut snap = sample_snapshot(Environment::Development, false);
    snap.strategy = Strategy::Ttl;
    snap.stats.requests = first.requests + 1_000;
    snap.stats.loads = first.loads + 400;
    update(&mut s, Msg::Snapshot(Box::new(snap)));
    let rows: Vec<_> = s
        .by_strategy
        .iter()
        .map(|m| (m.strategy, m.questions(), m.queries()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (Strategy::Freshcache, first.requests, first.loads),
            (Strategy::Ttl, 1_000, 400),
        ]
    );
}

/// The screen as text, one line a row.
fn screen_text(s: &State, w: u16, h: u16) -> Vec<String> {
    let backend = ratatui::backend::TestBackend::new(w, h);
    let mut terminal = ratatui::Terminal::new(backend).unwrap();
    terminal.draw(|f| crate::console::view::view(s, f)).unwrap();
    let buf = terminal.backend().buffer().clone();
    (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect())
        .collect()
}

#[test]
fn the_instances_view_names_the_instance_behind() {
    let mut s = state(Environment::Staging, false);
    key(&mut s, KeyCode::Char('n'));
    assert!(s.show_instances);
    s.size = (80, 24);
    let narrow = screen_text(&s, 80, 24).join("\n");
    assert!(narrow.contains("api-2:4187#1"), "{narrow}");
    assert!(narrow.contains("BEHIND"), "{narrow}");
    key(&mut s, KeyCode::Char('n'));
    let wide = screen_text(&s, 200, 60).join("\n");
    assert!(
        wide.contains("instances · 3"),
        "beside the feed at 200 columns: {wide}"
    );
    assert!(wide.contains("events"), "{wide}");
}
