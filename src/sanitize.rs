//! Text from data — warehouse rows, table names, payloads, event fields — is untrusted: before it
//! reaches a terminal it is put on one line and stripped of control and escape sequences, so a
//! crafted value can neither move the cursor nor recolour the screen.

/// `s` on one line, with control characters (escape sequences included) removed.
pub fn clean_line(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect()
}

/// [`clean_line`], cut to at most `max` characters with an ellipsis when cut.
pub fn clean_short(s: &str, max: usize) -> String {
    let clean = clean_line(s);
    if clean.chars().count() <= max {
        return clean;
    }
    let mut out: String = clean.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_removed() {
        assert_eq!(clean_line("a\x1b[2Jb\x07c\nd"), "a[2Jbc d");
        assert_eq!(clean_short("abcdef", 4), "abc…");
        assert_eq!(clean_short("ab", 4), "ab");
    }
}
