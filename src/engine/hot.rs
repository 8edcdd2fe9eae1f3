//! Which requests are hot: the ones refresh-ahead reloads after an update and `warm` preloads.
//!
//! Each request gets a score that decays by half every [`HALF_LIFE`] of clock time and goes up by
//! one per counted use. Hits are counted one in [`stats::HIT_SAMPLE`](super::stats::HIT_SAMPLE)
//! (with that weight) so the hot path seldom takes this mutex; misses are always counted. At most
//! [`CAPACITY`] requests are tracked; the coldest are dropped when it is exceeded.

use parking_lot::Mutex;
use std::collections::HashMap;

use crate::model::catalog::Request;
use crate::model::clock::Millis;
use crate::model::versions::TableId;

/// Time for a score to halve, in ms of clock time.
pub const HALF_LIFE: Millis = 10 * 60_000;
/// Most requests tracked.
pub const CAPACITY: usize = 10_000;

struct Hot {
    request: Request,
    score: f64,
    at: Millis,
}

fn decayed(score: f64, from: Millis, to: Millis) -> f64 {
    let elapsed = to.saturating_sub(from) as f64;
    score * 0.5f64.powf(elapsed / HALF_LIFE as f64)
}

/// The tracker. One mutex: it is touched on misses and on one hit in sixteen.
#[derive(Default)]
pub struct HotKeys {
    map: Mutex<HashMap<u128, Hot>>,
}

impl HotKeys {
    /// Counts `weight` uses of `request` at `now`.
    pub fn touch(&self, request: &Request, weight: f64, now: Millis) {
        let mut map = self.map.lock();
        match map.get_mut(&request.fingerprint()) {
            Some(h) => {
                h.score = decayed(h.score, h.at, now) + weight;
                h.at = now;
            }
            None => {
                map.insert(
                    request.fingerprint(),
                    Hot {
                        request: request.clone(),
                        score: weight,
                        at: now,
                    },
                );
                if map.len() > CAPACITY + CAPACITY / 10 {
                    let mut scores: Vec<(u128, f64)> = map
                        .iter()
                        .map(|(k, h)| (*k, decayed(h.score, h.at, now)))
                        .collect();
                    scores.sort_by(|a, b| b.1.total_cmp(&a.1));
                    for (k, _) in scores.into_iter().skip(CAPACITY) {
                        map.remove(&k);
                    }
                }
            }
        }
    }

    /// The `n` hottest requests reading any of `tables` (any table when `tables` is empty),
    /// hottest first.
    pub fn top(&self, tables: &[TableId], n: usize, now: Millis) -> Vec<Request> {
        let map = self.map.lock();
        let mut hot: Vec<(&Hot, f64)> = map
            .values()
            .filter(|h| {
                tables.is_empty() || h.request.query().tables.iter().any(|t| tables.contains(t))
            })
            .map(|h| (h, decayed(h.score, h.at, now)))
            .collect();
        hot.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| a.0.request.fingerprint().cmp(&b.0.request.fingerprint()))
        });
        hot.into_iter()
            .take(n)
            .map(|(h, _)| h.request.clone())
            .collect()
    }

    /// Requests tracked.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether none are tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::catalog::Catalog;

    #[test]
    fn the_most_used_come_first_and_old_use_fades() {
        let c = Catalog::bundled().unwrap();
        let hot = HotKeys::default();
        let a = c.request::<&str, &str>("stock_outs", &[]).unwrap();
        let b = c.request::<&str, &str>("top_customers", &[]).unwrap();
        for _ in 0..10 {
            hot.touch(&a, 1.0, 0);
        }
        hot.touch(&b, 1.0, 0);
        let inventory = c.tables().id("inventory").unwrap();
        let sales = c.tables().id("sales").unwrap();
        assert_eq!(hot.top(&[], 2, 0)[0].fingerprint(), a.fingerprint());
        assert_eq!(
            hot.top(&[sales], 5, 0).len(),
            1,
            "only queries reading sales"
        );
        assert_eq!(
            hot.top(&[inventory], 5, 0)[0].fingerprint(),
            a.fingerprint()
        );
        // An hour later, five fresh uses of `b` beat ten old uses of `a`.
        for _ in 0..5 {
            hot.touch(&b, 1.0, 3_600_000);
        }
        assert_eq!(hot.top(&[], 1, 3_600_000)[0].fingerprint(), b.fingerprint());
    }
}
