//! Which logged events this process has already put on its feed, so a catch-up delivers each
//! event once.

/// Which logged events a process has already put on its feed: every seq at or below `watermark`,
/// and the ones in `above`.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    pub(crate) watermark: u64,
    pub(crate) above: std::collections::BTreeSet<u64>,
}

impl Delivered {
    /// Marks `seq` delivered; false if it already was.
    pub(crate) fn mark(&mut self, seq: u64) -> bool {
        if seq <= self.watermark || !self.above.insert(seq) {
            return false;
        }
        while self.above.remove(&(self.watermark + 1)) {
            self.watermark += 1;
        }
        // A gap that never fills (events trimmed from the log) must not hold memory forever.
        if self.above.len() > 10_000
            && let Some(&first) = self.above.iter().next()
        {
            self.watermark = first - 1;
            while self.above.remove(&(self.watermark + 1)) {
                self.watermark += 1;
            }
        }
        true
    }

    /// Counts everything up to `seq` as delivered, keeping what was delivered above it.
    pub(crate) fn raise_to(&mut self, seq: u64) {
        if seq <= self.watermark {
            return;
        }
        self.watermark = seq;
        self.above = self.above.split_off(&(seq + 1));
        while self.above.remove(&(self.watermark + 1)) {
            self.watermark += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_marks_each_sequence_once_and_raising_keeps_what_is_above() {
        let mut d = Delivered::default();
        assert!(d.mark(1) && d.mark(3) && !d.mark(3) && !d.mark(1));
        assert_eq!(d.watermark, 1);
        assert!(d.mark(2));
        assert_eq!((d.watermark, d.above.len()), (3, 0), "the gap closed");
        assert!(d.mark(7) && d.mark(9));
        d.raise_to(6);
        assert_eq!(d.watermark, 7, "6 raised, 7 was already there");
        assert!(!d.mark(5) && !d.mark(9) && d.mark(8));
        assert_eq!(d.watermark, 9);
        d.raise_to(4);
        assert_eq!(d.watermark, 9, "never lowered");
    }
}
