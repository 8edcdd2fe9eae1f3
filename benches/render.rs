//! Rendering cost of one full dashboard frame at 200×60, with five minutes of chart history and a
//! full event feed, on ratatui's TestBackend (no terminal I/O: the drawing work alone).
//!
//! Run with `cargo bench --bench render`; prints
//! `{"bench":"render","width":200,"height":60,"median_us":..}`.

use std::hint::black_box;
use std::time::Instant;

use freshcache::console::source::{Sample, sample_snapshot};
use freshcache::console::state::{HISTORY, Msg, State, update};
use freshcache::console::view::view;
use freshcache::model::environment::Environment;
use freshcache::model::events::{Event, EventKind};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn main() {
    let mut state = State::new(sample_snapshot(Environment::Staging, false), &[], false);
    state.size = (200, 60);
    for i in 0..HISTORY {
        let mut snap = sample_snapshot(Environment::Staging, false);
        let x = i as f64;
        snap.sample = Sample {
            hit_ratio: Some(0.9 + 0.09 * (x / 40.0).sin().abs()),
            warehouse_qps: 3.0 * (x / 25.0).cos().abs(),
            p50_ms: 0.002,
            p99_ms: 150.0 * (x / 60.0).sin().abs(),
            stale_per_s: (x / 90.0).sin().abs(),
            requests_per_s: 2_000.0,
        };
        update(&mut state, Msg::Snapshot(Box::new(snap)));
    }
    for seq in 0..2_000u64 {
        let e = Event {
            seq,
            at_ms: 1_795_687_230_000 + seq * 1000,
            origin: "h:1".into(),
            kind: EventKind::RefreshAhead {
                tables: vec!["sales".into()],
                keys: 40,
                done: 40,
                failed: 0,
            },
        };
        update(&mut state, Msg::Event(Box::new(e)));
    }
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
    for _ in 0..50 {
        terminal.draw(|f| view(&state, f)).expect("draw");
    }
    let mut times = Vec::with_capacity(500);
    for _ in 0..500 {
        let t = Instant::now();
        terminal.draw(|f| view(black_box(&state), f)).expect("draw");
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"bench\":\"render\",\"width\":200,\"height\":60,\"median_us\":{:.0},\"p99_us\":{:.0}}}",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
}
