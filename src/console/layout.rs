//! Where each part of the console goes on a terminal of a given size: the one layout that the
//! drawing and the mouse handling share, so a click lands where things were drawn.

use ratatui::layout::{Constraint, Layout, Rect};

/// Smallest size drawn in full.
pub const MIN_WIDTH: u16 = 80;
/// Smallest size drawn in full.
pub const MIN_HEIGHT: u16 = 24;

/// Where each part of the screen goes, for a terminal of `area`. Both [`view`](super::view::view)
/// and the mouse handling in [`update`](super::state::update) use it, so a click lands where
/// things were drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regions {
    /// The header line.
    pub header: Rect,
    /// The tables panel.
    pub tables: Rect,
    /// The tables panel's data rows (inside the border, below the column names).
    pub table_rows: Rect,
    /// The money panel.
    pub money: Rect,
    /// The "without freshcache" panel, when there is one and room for it.
    pub compare: Option<Rect>,
    /// The charts.
    pub charts: Rect,
    /// The event feed.
    pub feed: Rect,
    /// The event feed's lines (inside its border).
    pub feed_lines: Rect,
    /// The instances panel: beside the feed on a wide terminal, in its place when asked for.
    pub instances: Option<Rect>,
    /// The story's caption, in story mode (below the feed).
    pub story: Option<Rect>,
    /// The footer line.
    pub footer: Rect,
}

/// The optional panels there is something to show in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    /// "Without freshcache" figures (a shadow runs).
    pub compare: bool,
    /// The instances view was asked for (it takes the feed's place when it does not fit beside
    /// it).
    pub instances: bool,
    /// A story is being told: its caption's width in columns (on one line).
    pub story: Option<usize>,
}

/// Fewest rows of the story's caption panel (borders included).
const STORY_HEIGHT: u16 = 5;

/// Width of the "without freshcache" panel.
const COMPARE_WIDTH: u16 = 46;
/// The terminal width from which the "without freshcache" panel fits beside the tables.
const COMPARE_FROM_WIDTH: u16 = 120;

/// Width of the instances panel beside the feed.
const INSTANCES_WIDTH: u16 = 92;
/// The terminal width from which the instances panel fits beside the feed.
const INSTANCES_FROM_WIDTH: u16 = 190;

/// Lays the screen out; `None` when the terminal is smaller than 80×24.
pub fn regions(area: Rect, tables: usize, wanted: Wanted) -> Option<Regions> {
    let Wanted {
        compare,
        instances,
        story,
    } = wanted;
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        return None;
    }
    let upper = crate::model::num::to_u16(tables).saturating_add(4).max(6);
    // Charts take two fifths of what the header, tables and footer leave (the feed the rest),
    // between 6 and 24 rows.
    let below = area.height.saturating_sub(upper + 2);
    let charts = (below * 2 / 5).clamp(6, 24);
    let [header, top, charts, feed, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(upper),
        Constraint::Length(charts),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let compare = compare && area.width >= COMPARE_FROM_WIDTH;
    // Below 160 columns the comparison takes the money panel's place (it has the money too),
    // so the tables keep room for their state column.
    let money_width = if compare && area.width < 160 { 0 } else { 30 };
    let [tables_area, compare_area, money] = Layout::horizontal([
        Constraint::Fill(1),
        Constraint::Length(if compare { COMPARE_WIDTH } else { 0 }),
        Constraint::Length(money_width),
    ])
    .areas(top);
    let inner = |r: Rect| Rect {
        x: r.x + 1,
        y: r.y + 1,
        width: r.width.saturating_sub(2),
        height: r.height.saturating_sub(2),
    };
    let t = inner(tables_area);
    let (feed, story) = if let Some(caption) = story {
        // As many rows as the caption needs wrapped at the panel's width (one more for the words
        // wrapping leaves short), up to half the feed.
        let width = usize::from(feed.width.saturating_sub(3)).max(1);
        let rows = crate::model::num::to_u16(caption.div_ceil(width) + 1)
            .saturating_add(2)
            .clamp(STORY_HEIGHT, (feed.height / 2).max(STORY_HEIGHT));
        let [feed, caption] =
            Layout::vertical([Constraint::Fill(1), Constraint::Length(rows)]).areas(feed);
        (feed, Some(caption))
    } else {
        (feed, None)
    };
    let (feed, instances) = if area.width >= INSTANCES_FROM_WIDTH {
        let [feed, side] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(INSTANCES_WIDTH)])
                .areas(feed);
        (feed, Some(side))
    } else if instances {
        (Rect { height: 0, ..feed }, Some(feed))
    } else {
        (feed, None)
    };
    Some(Regions {
        header,
        tables: tables_area,
        table_rows: Rect {
            y: t.y + 1,
            height: t.height.saturating_sub(1),
            ..t
        },
        money,
        compare: compare.then_some(compare_area),
        charts,
        feed,
        feed_lines: inner(feed),
        instances,
        story,
        footer,
    })
}
