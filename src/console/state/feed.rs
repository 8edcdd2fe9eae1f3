//! An event as a line of the feed: one clean line of what happened, and whether it is bad news.

use super::FeedLine;
use crate::model::clock::format_rfc3339;
use crate::model::events::{Event, Summary};
use crate::sanitize::clean_short;

/// One event as a feed line.
pub fn feed_line(e: &Event) -> FeedLine {
    let Summary { text, alarming } = e.summary();
    let ts = format_rfc3339(e.at_ms);
    FeedLine {
        seq: e.seq,
        time: ts.get(11..19).unwrap_or("").to_string(),
        kind: e.kind.name(),
        text: clean_short(&text, 400),
        alarming,
        plain: clean_short(&e.kind.plain(), 400),
        event: Box::new(e.clone()),
    }
}
