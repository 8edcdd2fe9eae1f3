//! `freshcache demo --story`: the original problem's own timeline, played step by step on the
//! console for an audience — 9:05 the first question, 10:00:01 a crowd right after the hour,
//! 10:05 the update lands, 10:30 the question again, 11:05 a partial update — each step run for
//! real against the engine, the warehouse and the hour-TTL shadow, with a caption whose figures
//! are what that step measured.
//!
//! The story owns a manual clock: a step sets it to its time and acts (users ask, the ETL runs),
//! then the presenter reads the caption and the panels, and steps on (space or →).

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::instance::Instance;
use crate::model::catalog::Request;
use crate::model::clock::{Clock, ManualClock, Millis, format_batch_label};
use crate::traffic::Shadow;
use crate::warehouse::etl::EtlPlan;

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;

/// The steps, in order; the caption before the first says how to step.
pub const STEPS: usize = 6;

/// What the presenter reads before the first step.
pub const INTRO: &str = "A chatbot answers sales questions from a warehouse that takes seconds and money per \
     query and reloads every hour. Press space (or →) to play the day, one step at a time.";

/// The story's state: where it is, and what it runs against.
pub struct Story {
    clock: Arc<ManualClock>,
    shadow: Arc<Shadow>,
    /// Midnight of the simulated day (UTC).
    day_ms: Millis,
    /// The question everyone asks.
    question: Request,
    /// A question that reads the inventory (which the partial update leaves behind).
    inventory_question: Request,
    step: usize,
}

/// What one burst of questions did, on both sides.
struct Asked {
    users: usize,
    freshcache_queries: u64,
    baseline_queries: u64,
    baseline_old: u64,
    freshcache_old: u64,
}

impl Story {
    /// A story on `clock` (set to `day_ms` + 9:00 by the caller's warehouse), asking `question`
    /// and `inventory_question`, with `shadow` counting what the hour-TTL baseline would do.
    pub fn new(
        clock: Arc<ManualClock>,
        shadow: Arc<Shadow>,
        day_ms: Millis,
        question: Request,
        inventory_question: Request,
    ) -> Self {
        Self {
            clock,
            shadow,
            day_ms,
            question,
            inventory_question,
            step: 0,
        }
    }

    /// Runs the next step and returns its caption (`step/total — text`).
    pub async fn next(&mut self, instance: &Instance) -> Result<String, String> {
        let at = |h: Millis, m: Millis, s: Millis| self.day_ms + h * HOUR + m * MINUTE + s * 1000;
        let text = match self.step {
            0 => {
                self.clock.set(at(9, 5, 0));
                let a = self.ask(instance, &self.question.clone(), 1).await?;
                // Someone also looks at the stock-outs (read again at 11:05).
                self.ask(instance, &self.inventory_question.clone(), 1)
                    .await?;
                format!(
                    "09:05 — The day's first question. Nothing is cached yet: freshcache sent {} \
                     warehouse query, the hour-TTL cache {}. Both now keep the answer.",
                    a.freshcache_queries, a.baseline_queries
                )
            }
            1 => {
                self.clock.set(at(9, 30, 0));
                let a = self.ask(instance, &self.question.clone(), 1000).await?;
                format!(
                    "09:30 — {} people ask the same question: both answer from memory \
                     (freshcache {} warehouse queries, hour-TTL {}).",
                    a.users, a.freshcache_queries, a.baseline_queries
                )
            }
            2 => {
                self.clock.set(at(10, 0, 1));
                let a = self.ask(instance, &self.question.clone(), 1000).await?;
                format!(
                    "10:00:01 — {} people ask just after the hour. The hour-TTL cache expired \
                     on the hour: {} warehouse queries at once (a stampede), and it caches the \
                     OLD figures until 11:00, because the hourly load has not finished. \
                     freshcache: {} — no update has been announced, its answer stays.",
                    a.users, a.baseline_queries, a.freshcache_queries
                )
            }
            3 => {
                self.clock.set(at(10, 5, 0));
                let batch = format_batch_label(at(10, 0, 0));
                let (_, report) = instance
                    .run_etl(&batch, &EtlPlan::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let prepared = wait_for_refresh(instance).await;
                format!(
                    "10:05 — The hourly load finishes ({}). freshcache checks the warehouse's \
                     update log, computes {} popular answers on the new data before anyone \
                     asks, then switches. The hour-TTL cache hears nothing.",
                    report.bumped.join(", "),
                    prepared
                )
            }
            4 => {
                self.clock.set(at(10, 30, 0));
                let a = self.ask(instance, &self.question.clone(), 1000).await?;
                format!(
                    "10:30 — {} people ask again. freshcache: the new figures, {} warehouse \
                     queries, {} old answers. Hour-TTL: {} answers with the 9 o'clock figures \
                     shown as current — and nothing tells anyone.",
                    a.users, a.freshcache_queries, a.freshcache_old, a.baseline_old
                )
            }
            5 => {
                self.clock.set(at(11, 5, 0));
                let batch = format_batch_label(at(11, 0, 0));
                let plan = EtlPlan::failing(["inventory"]);
                let (_, report) = instance
                    .run_etl(&batch, &plan)
                    .await
                    .map_err(|e| e.to_string())?;
                wait_for_refresh(instance).await;
                let a = self
                    .ask(instance, &self.inventory_question.clone(), 100)
                    .await?;
                format!(
                    "11:05 — A partial load: {} updated, {} failed. freshcache switches only \
                     what the update log confirms; the inventory answers keep their data (still \
                     correct for what the warehouse has). 100 people ask for the stock-outs: {}.",
                    report.bumped.join(", "),
                    report
                        .behind
                        .iter()
                        .map(|b| b.table.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    queries(a.freshcache_queries)
                )
            }
            _ => {
                let f = self.shadow.figures();
                return Ok(format!(
                    "The end. Over {} questions: warehouse queries {} with freshcache, {} with \
                     the hour-TTL cache; old answers shown as current: {} against {}. \
                     q quits.",
                    f.questions,
                    instance.engine().stats().loads,
                    f.baseline_queries,
                    f.freshcache_old_as_fresh,
                    f.baseline_old_as_fresh
                ));
            }
        };
        self.step += 1;
        Ok(format!("{}/{STEPS} {text}", self.step))
    }

    /// `users` ask `question` at the same instant, of freshcache and of the shadow.
    async fn ask(
        &self,
        instance: &Instance,
        question: &Request,
        users: usize,
    ) -> Result<Asked, String> {
        let engine = instance.engine().clone();
        let before = (engine.stats().loads, self.shadow.figures());
        let versions = engine.versions();
        let now = self.clock.now_ms();
        let mut all = JoinSet::new();
        for _ in 0..users {
            self.shadow.ask(question, now, &versions);
            let (engine, question) = (engine.clone(), question.clone());
            all.spawn(async move {
                let asked = std::time::Instant::now();
                let answer = engine.get(&question).await;
                (answer, asked, std::time::Instant::now())
            });
        }
        while let Some(joined) = all.join_next().await {
            let (answer, asked, answered) = joined.map_err(|e| e.to_string())?;
            let answer = answer.map_err(|e| e.to_string())?;
            self.shadow
                .freshcache_answered(question, &versions, &answer, asked, answered);
        }
        let after = (engine.stats().loads, self.shadow.figures());
        Ok(Asked {
            users,
            freshcache_queries: after.0 - before.0,
            baseline_queries: after.1.baseline_queries - before.1.baseline_queries,
            baseline_old: after.1.baseline_old_as_fresh - before.1.baseline_old_as_fresh,
            freshcache_old: after.1.freshcache_old_as_fresh - before.1.freshcache_old_as_fresh,
        })
    }
}

/// `1 warehouse query`, `0 warehouse queries`.
fn queries(n: u64) -> String {
    format!("{n} warehouse quer{}", if n == 1 { "y" } else { "ies" })
}

/// Waits (at most 10 s) for the refresh-ahead after an update; how many answers it loaded.
async fn wait_for_refresh(instance: &Instance) -> u32 {
    let mut progress = instance.refresh_progress();
    let done = progress.wait_for(|p| p.total > 0 && p.finished());
    match tokio::time::timeout(std::time::Duration::from_secs(10), done).await {
        Ok(Ok(p)) => p.done,
        _ => instance.refresh_progress().borrow().done,
    }
}
