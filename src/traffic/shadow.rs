//! "Without freshcache": the recipe the original problem starts from — cache each answer until
//! the next hour, no versions, no coalescing — run as a shadow beside the real cache, over the
//! same questions at the same (simulated) instants, counting what it would have done.
//!
//! The shadow holds no answers and sends no query. Per question it keeps the versions of the
//! tables its answer would have been computed from, until when that answer would be cached, and
//! until when its load would still be running. That is enough to count, for the same traffic:
//! old answers it would have served as fresh (computed before the latest update of a table they
//! read), questions that would have gone to the warehouse while the same question was already
//! loading (a stampede), and warehouse queries with their cost. Beside them it keeps what
//! freshcache actually did for those questions, so both columns of the console's panel count
//! exactly the same questions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::engine::{Answer, Source};
use crate::model::catalog::Request;
use crate::model::clock::Millis;
use crate::model::entry::Stamp;
use crate::model::num::ms;
use crate::model::policy::Strategy;
use crate::model::versions::VersionVector;

/// What the baseline recipe would have done, and what freshcache did, for the same questions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShadowFigures {
    /// Questions asked (both columns answer every one).
    pub questions: u64,
    /// Baseline: warehouse queries it would have sent.
    pub baseline_queries: u64,
    /// Baseline: answers it would have served as fresh though a table they read had been
    /// updated since they were computed.
    pub baseline_old_as_fresh: u64,
    /// Baseline: questions sent to the warehouse while the same question was already loading
    /// (each one a user waiting on a duplicate query).
    pub baseline_stampede_queries: u64,
    /// freshcache: answers served as fresh that were computed before the latest update of a
    /// table they read.
    pub freshcache_old_as_fresh: u64,
    /// freshcache: questions that found their answer already loading and waited for that one
    /// load instead of sending another.
    pub freshcache_joined_a_load: u64,
    /// freshcache: questions that sent a warehouse query while a query for the same question
    /// at the same versions, sent by another user, was still running.
    pub freshcache_stampede_queries: u64,
}

/// One question's state in the baseline's cache.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The versions of its tables when its load started (what its answer would show).
    computed_at: Stamp,
    /// Until when its load runs.
    loading_until: Millis,
    /// Until when the answer stays cached after the load (`loading_until` when it is not).
    cached_until: Millis,
}

/// The shadow. Cheap to share (`Arc`); every method takes a short lock.
#[derive(Debug)]
pub struct Shadow {
    load_ms: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<u128, Slot>,
    /// freshcache's latest query per question: the versions it loaded and when it ran.
    loads: HashMap<u128, (Stamp, Instant, Instant)>,
    figures: ShadowFigures,
}

impl Shadow {
    /// A shadow whose warehouse takes `load` (clock time) to answer a query.
    pub fn new(load: Duration) -> Self {
        Self {
            load_ms: ms(load).max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// `request` is asked at `now_ms`, when the tables stand at `versions`: counts what the
    /// baseline would have done.
    pub fn ask(&self, request: &Request, now_ms: Millis, versions: &VersionVector) {
        let truth = Stamp::of(&request.query().tables, versions);
        let mut state = self.state.lock();
        let State { slots, figures, .. } = &mut *state;
        figures.questions += 1;
        let slot = slots.get(&request.fingerprint()).copied();
        match slot {
            Some(s) if now_ms >= s.loading_until && now_ms < s.cached_until => {
                if s.computed_at.is_behind(versions) {
                    figures.baseline_old_as_fresh += 1;
                }
            }
            Some(s) if now_ms < s.loading_until => {
                // No coalescing: this user queries too, and waits as long.
                figures.baseline_queries += 1;
                figures.baseline_stampede_queries += 1;
            }
            _ => {
                figures.baseline_queries += 1;
                let loading_until = now_ms + self.load_ms;
                let cached_until = Strategy::Ttl
                    .baseline_ttl_ms(loading_until)
                    .map_or(loading_until, |ttl| loading_until + ttl);
                slots.insert(
                    request.fingerprint(),
                    Slot {
                        computed_at: truth,
                        loading_until,
                        cached_until,
                    },
                );
            }
        }
    }

    /// What freshcache did with `request`, asked at `asked` when the tables stood at `versions`
    /// and answered with `answer` at `answered`: whether it served old data as fresh, joined a
    /// load already running, or sent a query while another user's query for the same question
    /// and versions was still running.
    pub fn freshcache_answered(
        &self,
        request: &Request,
        versions: &VersionVector,
        answer: &Answer,
        asked: Instant,
        answered: Instant,
    ) {
        let mut state = self.state.lock();
        let State { loads, figures, .. } = &mut *state;
        if answer.freshness.is_fresh() && answer.versions().is_behind(versions) {
            figures.freshcache_old_as_fresh += 1;
        }
        match answer.source {
            Source::Coalesced => figures.freshcache_joined_a_load += 1,
            Source::Warehouse => {
                let stamp = *answer.versions();
                let overlaps =
                    loads
                        .get(&request.fingerprint())
                        .is_some_and(|&(other, began, ended)| {
                            other == stamp && asked < ended && began < answered
                        });
                figures.freshcache_stampede_queries += u64::from(overlaps);
                loads.insert(request.fingerprint(), (stamp, asked, answered));
            }
            Source::Cache => {}
        }
    }

    /// The figures so far.
    pub fn figures(&self) -> ShadowFigures {
        self.state.lock().figures
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::catalog::Catalog;

    /// 2026-11-26T09:05:00Z
    const T0905: Millis = 1_795_683_900_000;
    const MIN: u64 = 60_000;

    fn world() -> (Arc<Catalog>, Request, VersionVector) {
        let catalog = Arc::new(Catalog::bundled().unwrap());
        let request = catalog
            .request("stock_outs", &[] as &[(&str, &str)])
            .unwrap();
        let versions = VersionVector::initial(catalog.tables().len());
        (catalog, request, versions)
    }

    /// The original problem's timeline: 9:05 first question, 10:00 update, 10:00:01 a crowd,
    /// 10:30 the question again.
    #[test]
    fn the_baseline_serves_old_data_as_fresh_and_stampedes_at_the_hour() {
        let (catalog, q, mut v) = world();
        let shadow = Shadow::new(Duration::from_secs(3));
        shadow.ask(&q, T0905, &v);
        shadow.ask(&q, T0905 + 10 * MIN, &v);
        let f = shadow.figures();
        assert_eq!((f.baseline_queries, f.baseline_old_as_fresh), (1, 0));

        // 10:00:00.500: the cached answer expired on the hour; a load starts on the old data,
        // and the update lands a second later.
        let ten = T0905 + 55 * MIN;
        shadow.ask(&q, ten + 500, &v);
        for i in 0..999 {
            shadow.ask(&q, ten + 1_000 + i, &v);
        }
        let f = shadow.figures();
        assert_eq!(f.baseline_stampede_queries, 999, "{f:?}");
        assert_eq!(f.baseline_queries, 1001);

        let inventory = catalog.tables().id("inventory").unwrap();
        v = v.bumped(&[inventory], "20261126-10:00", ten + 1_500);
        // 10:30: the answer loaded at 10:00 is cached until 11:00, computed before the update.
        shadow.ask(&q, ten + 30 * MIN, &v);
        let f = shadow.figures();
        assert_eq!(f.baseline_old_as_fresh, 1, "{f:?}");
        assert_eq!(f.baseline_queries, 1001);
        assert_eq!(f.questions, 1003);
    }

    #[test]
    fn an_answer_is_not_cached_in_the_last_second_of_the_hour() {
        let (_, q, v) = world();
        let shadow = Shadow::new(Duration::from_millis(100));
        let last_second = T0905 + 55 * MIN - 900;
        shadow.ask(&q, last_second - 100, &v);
        shadow.ask(&q, last_second + 200, &v);
        assert_eq!(shadow.figures().baseline_queries, 2);
    }
}
