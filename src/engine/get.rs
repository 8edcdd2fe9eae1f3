//! A `get`: the hit path (one version read, one store probe, one clock read, one counter) and,
//! for everything else, the slow path — early refresh, stale-while-revalidate, the miss that
//! joins or leads one load, and the stale fallbacks when that load fails.

use super::*;

pub(super) type SlowGet<'a> = Pin<Box<dyn Future<Output = Result<Answer, GetError>> + Send + 'a>>;

/// The future [`Engine::get`] returns.
#[must_use = "futures do nothing unless polled"]
pub struct Get<'a> {
    engine: &'a Engine,
    request: &'a Request,
    slow: Option<SlowGet<'a>>,
}

impl Future for Get<'_> {
    type Output = Result<Answer, GetError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.slow.is_none() {
            match self.engine.start(self.request) {
                Ok(answer) => return Poll::Ready(Ok(answer)),
                Err(slow) => self.slow = Some(slow),
            }
        }
        match self.slow.as_mut() {
            Some(slow) => slow.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// What the synchronous part of a `get` found.
pub(super) enum Lookup {
    Answered(Answer),
    Miss {
        fallback: Option<Arc<Entry>>,
        started: Instant,
    },
}

/// XFetch (Vattani, Chierichetti, Lowenstein: "Optimal Probabilistic Cache Stampede Prevention",
/// VLDB 2015): refresh when `now - delta * beta * ln(rand) >= expiry`, with `rand` uniform in
/// (0, 1]. Since `-ln(rand) < 40` for any double, most hits are decided without drawing a number.
///
/// One refinement: never before the scheduled update that the TTL's grace period waits for. Until
/// then the ETL is expected to change the key anyway, so a refresh would be thrown away (this
/// matters when a load is long against the TTL, as in an accelerated demo).
#[inline]
pub(super) fn xfetch_due(now: Millis, entry: &Entry, policy: &Policy) -> bool {
    // Decided with two integer additions on almost every hit: an entry further from its expiry
    // than the grace period, or than any reach XFetch can draw (bounded per policy, see
    // `Policy::xfetch_reach_per_ms`), is never picked. Whatever these do not decide, the exact
    // rule below does, so the outcome is the same as without them.
    if now.saturating_add(policy.after_update_ms) < entry.fresh_until
        || xfetch_out_of_reach(now, entry, policy)
    {
        return false;
    }
    xfetch_near_expiry(now, entry, policy)
}

/// Whether `entry` is further from its expiry than any reach XFetch can draw, by the policy's
/// integer bound: whenever this holds, so does the exact rule's own bound (tested).
#[inline]
pub(super) fn xfetch_out_of_reach(now: Millis, entry: &Entry, policy: &Policy) -> bool {
    now.saturating_add(entry.load_ms.saturating_mul(policy.xfetch_reach_per_ms)) < entry.fresh_until
}

/// [`xfetch_due`] for an entry within reach of its expiry: the rule itself.
#[inline(never)]
pub(super) fn xfetch_near_expiry(now: Millis, entry: &Entry, policy: &Policy) -> bool {
    let beta = policy.beta;
    // `-ln(rand) < 40` for any double in (0, 1], so an entry further than 40 * delta * beta from
    // expiry can never be picked: decided with integers, without drawing a number.
    let reach = entry.load_ms.saturating_mul(40);
    if beta <= 0.0
        || now.saturating_add(crate::model::num::f64_to_u64(reach as f64 * beta))
            < entry.fresh_until
        || now.saturating_add(policy.after_update_ms) < entry.fresh_until
    {
        return false;
    }
    let r = 1.0 - fastrand::f64(); // (0, 1]
    now as f64 - entry.load_ms as f64 * beta * r.ln() >= entry.fresh_until as f64
}

/// The longest a request whose load failed or passed the maximum wait spends looking for a stale
/// fallback in the shared tier (a healthy Redis answers in well under a millisecond).
pub(super) const SHARED_FALLBACK_LOOKUP: Duration = Duration::from_millis(100);

/// Whether `entry`, past its freshness, may still be served stale while one refresh runs: within
/// the policy's stale-while-revalidate window and its stale limit.
pub(super) fn servable_while_revalidating(entry: &Entry, now: Millis, policy: &Policy) -> bool {
    now < entry.fresh_until + crate::model::num::ms(policy.swr_window)
        && now.saturating_sub(entry.created_ms) <= crate::model::num::ms(policy.max_stale)
}

/// A flight whose leader is looking in the shared tier inline: if that caller is cancelled
/// mid-look, the load is spawned anyway, so the followers are never left with an aborted flight.
pub(super) struct PendingLoad<'a> {
    engine: &'a Engine,
    request: &'a Request,
    key: EntryKey,
    lead: Option<Lead>,
}

impl Drop for PendingLoad<'_> {
    fn drop(&mut self) {
        if let Some(lead) = self.lead.take() {
            self.engine.spawn_load(self.request.clone(), self.key, lead);
        }
    }
}
impl Engine {
    /// Answers a request from the cache, or from one warehouse load shared with every concurrent
    /// caller of the same key.
    ///
    /// The returned [`Get`] future is three words: a fresh hit completes on its first poll without
    /// allocating or copying a large state machine; everything slower (waiting for a load, the
    /// baseline recipes) continues in a boxed future.
    pub fn get<'a>(&'a self, request: &'a Request) -> Get<'a> {
        Get {
            engine: self,
            request,
            slow: None,
        }
    }

    /// The first step of a `get`: the answer, or the future that will produce it (an error only
    /// ever comes from that future: what is answered at once is an answer).
    ///
    /// This is the hit path, kept to the bare minimum: one seqlock read of the versions, one probe
    /// of the store, one clock read, one counter. Anything unusual goes to [`Engine::lookup_slow`].
    #[inline]
    pub(super) fn start<'a>(&'a self, request: &'a Request) -> Result<Answer, SlowGet<'a>> {
        let inner = &*self.inner;
        let strategy = self.strategy();
        if strategy != Strategy::Freshcache {
            return Err(Box::pin(recipes::get(self, request, strategy)));
        }
        let query = request.query();
        let key = EntryKey::new(
            request.fingerprint(),
            inner.versions.key_versions(&query.tables),
        );
        let (stripe, sampled) = inner.stats.thread_slot();
        let timer = sampled.then(Instant::now);
        let found = if inner.local_tier {
            inner.store.get(&key)
        } else {
            None
        };
        if let Some(entry) = found {
            let now = inner.now_ms();
            if now < entry.fresh_until
                && inner.versions_verified(now)
                && !xfetch_due(now, &entry, &query.policy)
            {
                // Hits are the only outcome not also counted in `Requests` (one atomic add less
                // on the hot path); the snapshot adds them back.
                inner.stats.add_at(stripe, Counter::FreshHits, 1);
                if let Some(t) = timer {
                    inner.stats.record_user(t.elapsed(), HIT_SAMPLE);
                    inner.hot.touch(request, HIT_SAMPLE as f64, now);
                    inner.audit.offer(&entry, audit::HIT_ODDS);
                }
                return Ok(Answer::new(entry, Freshness::Fresh, Source::Cache));
            }
            return self.continue_slow(request, key, Some(entry), timer);
        }
        self.continue_slow(request, key, None, timer)
    }

    pub(super) fn continue_slow<'a>(
        &'a self,
        request: &'a Request,
        key: EntryKey,
        found: Option<Arc<Entry>>,
        timer: Option<Instant>,
    ) -> Result<Answer, SlowGet<'a>> {
        match self.lookup_slow(request, key, found, timer) {
            Lookup::Answered(answer) => Ok(answer),
            Lookup::Miss { fallback, started } => Err(Box::pin(
                self.wait_for_load(request, key, fallback, started),
            )),
        }
    }

    /// Everything but a plain fresh hit: an early refresh, a stale answer while revalidating or
    /// updating, or a miss with what may be served if the load fails.
    #[cold]
    #[inline(never)]
    pub(super) fn lookup_slow(
        &self,
        request: &Request,
        key: EntryKey,
        found: Option<Arc<Entry>>,
        timer: Option<Instant>,
    ) -> Lookup {
        let inner = &*self.inner;
        let policy = &request.query().policy;
        let started = timer.unwrap_or_else(Instant::now);
        inner.hot.touch(request, 1.0, inner.now_ms());
        let mut fallback = None;
        // A bump of a table this query reads is being prepared: a refresh now would load the new
        // data under the old key, and be thrown away when the bump lands a moment later.
        let updating = self.is_updating(&request.query().tables);
        if let Some(entry) = found {
            let now = inner.now_ms();
            if now < entry.fresh_until && !self.versions_verified(now) {
                // The truth has not been confirmed for too long: a newer version may exist that
                // this process has not heard of. Say so instead of presenting it as fresh.
                inner.stats.incr(Counter::Requests);
                return Lookup::Answered(self.stale(
                    entry,
                    now,
                    StaleReason::VersionsUnverified,
                    started,
                ));
            }
            if now < entry.fresh_until {
                // Fresh, and XFetch says refresh early: one refresh per key, answer at once.
                if !updating {
                    self.refresh_in_background(request, key, Counter::EarlyRefreshes);
                }
                inner.stats.incr(Counter::FreshHits);
                inner.stats.record_user(started.elapsed(), 1);
                return Lookup::Answered(Answer::new(entry, Freshness::Fresh, Source::Cache));
            }
            inner.stats.incr(Counter::Requests);
            if servable_while_revalidating(&entry, now, policy) {
                let reason = if updating {
                    StaleReason::Updating
                } else {
                    self.refresh_in_background(request, key, Counter::SwrRefreshes);
                    StaleReason::Revalidating
                };
                return Lookup::Answered(self.stale(entry, now, reason, started));
            }
            fallback = Some(entry);
        } else {
            inner.stats.incr(Counter::Requests);
        }
        // The answer at the previous versions, if still held: served when the policy says so, or
        // when the warehouse cannot answer.
        let previous = inner.store.previous(&key);
        if policy.on_update == OnUpdate::ServeStale
            && let Some(prev) = &previous
        {
            let now = inner.now_ms();
            if now.saturating_sub(prev.created_ms) <= crate::model::num::ms(policy.max_stale) {
                self.refresh_in_background(request, key, Counter::RefreshAhead);
                return Lookup::Answered(self.stale(
                    prev.clone(),
                    now,
                    StaleReason::Updating,
                    started,
                ));
            }
        }
        Lookup::Miss {
            fallback: fallback.or(previous),
            started,
        }
    }

    /// Joins (or leads) the load of `key` and waits for it, at most the policy's maximum wait.
    ///
    /// With a shared tier, the stale rules do not depend on this process's tier: the leader's
    /// look in the shared tier serves an expired entry found there as the hit path serves one of
    /// its own (stale-while-revalidate), and a load that fails or is too slow falls back on the
    /// shared tier's entry for this key or its previous version when this process holds none (no
    /// in-process tier, or a process that just started).
    pub(super) async fn wait_for_load(
        &self,
        request: &Request,
        key: EntryKey,
        mut fallback: Option<Arc<Entry>>,
        started: Instant,
    ) -> Result<Answer, GetError> {
        let inner = &*self.inner;
        let policy = &request.query().policy;
        let deadline = tokio::time::Instant::now() + policy.max_wait;
        inner.stats.incr(Counter::Misses);
        let (flight, source) = match inner.flights.join(key, || {
            let now = inner.now_ms();
            inner.store.get(&key).filter(|e| now < e.fresh_until)
        }) {
            Joined::Ready(entry) => {
                let now = inner.now_ms();
                if !self.versions_verified(now) {
                    return Ok(self.stale(entry, now, StaleReason::VersionsUnverified, started));
                }
                inner.stats.record_user(started.elapsed(), 1);
                return Ok(Answer::new(entry, Freshness::Fresh, Source::Cache));
            }
            Joined::Leader(lead) => {
                let flight = lead.flight();
                if let Some(shared) = &inner.shared {
                    // Most misses of this process's tier are hits of the shared one: look there
                    // first, inline, and spawn a load only when it has nothing fresh.
                    let mut pending = PendingLoad {
                        engine: self,
                        request,
                        key,
                        lead: Some(lead),
                    };
                    let probe = shared.get(request, &key);
                    if let Ok(Ok(Some(entry))) = tokio::time::timeout_at(deadline, probe).await {
                        let now = inner.now_ms();
                        if now < entry.fresh_until
                            && let Some(lead) = pending.lead.take()
                        {
                            inner.stats.incr(Counter::SharedHits);
                            lead.mark_found_shared();
                            Engine::complete(inner, policy, key, lead, Ok(entry.clone()));
                            if !self.versions_verified(now) {
                                // Keyed by versions this instance cannot confirm.
                                return Ok(self.stale(
                                    entry,
                                    now,
                                    StaleReason::VersionsUnverified,
                                    started,
                                ));
                            }
                            inner.stats.record_user(started.elapsed(), 1);
                            inner.audit.offer(&entry, audit::SLOW_ODDS);
                            return Ok(Answer::new(entry, Freshness::Fresh, Source::Cache));
                        }
                        // Expired there too: stale-while-revalidate as on the hit path, this
                        // flight's load being the one refresh.
                        if servable_while_revalidating(&entry, now, policy)
                            && let Some(lead) = pending.lead.take()
                        {
                            let reason = if self.is_updating(&request.query().tables) {
                                StaleReason::Updating
                            } else {
                                StaleReason::Revalidating
                            };
                            inner.stats.incr(Counter::SwrRefreshes);
                            self.spawn_load_after_probe(request.clone(), key, lead);
                            self.count_waited_stale(Source::Warehouse);
                            return Ok(self.stale(entry, now, reason, started));
                        }
                        fallback = fallback.or(Some(entry));
                    }
                    // Serve the previous version during an update, from the shared tier when
                    // this process holds none.
                    if fallback.is_none() && policy.on_update == OnUpdate::ServeStale {
                        let previous = shared.previous(request, &key);
                        fallback = match tokio::time::timeout_at(deadline, previous).await {
                            Ok(Ok(found)) => found,
                            _ => None,
                        };
                        let now = inner.now_ms();
                        if let Some(prev) = &fallback
                            && now.saturating_sub(prev.created_ms)
                                <= crate::model::num::ms(policy.max_stale)
                            && let Some(lead) = pending.lead.take()
                        {
                            inner.stats.incr(Counter::RefreshAhead);
                            self.spawn_load_after_probe(request.clone(), key, lead);
                            self.count_waited_stale(Source::Warehouse);
                            return Ok(self.stale(
                                prev.clone(),
                                now,
                                StaleReason::Updating,
                                started,
                            ));
                        }
                    }
                    if let Some(lead) = pending.lead.take() {
                        self.spawn_load_after_probe(request.clone(), key, lead);
                    }
                } else {
                    self.spawn_load(request.clone(), key, lead);
                }
                (flight, Source::Warehouse)
            }
            Joined::Follower(flight) => {
                inner.stats.incr(Counter::Coalesced);
                (flight, Source::Coalesced)
            }
        };
        let outcome = tokio::time::timeout_at(deadline, flight.wait()).await;
        if fallback.is_none() && !matches!(outcome, Ok(Ok(_))) {
            // A leader looked at this key in the shared tier already; a follower did not.
            fallback = self
                .shared_fallback(request, &key, source == Source::Coalesced)
                .await;
        }
        let now = inner.now_ms();
        let within_limit = |e: &Arc<Entry>| {
            now.saturating_sub(e.created_ms) <= crate::model::num::ms(policy.max_stale)
        };
        match outcome {
            Ok(Ok(entry)) => {
                inner.stats.record_user(started.elapsed(), 1);
                inner.audit.offer(&entry, audit::SLOW_ODDS);
                // Another process loaded it (or had): this request cost the warehouse nothing.
                let source = if flight.found_shared() {
                    Source::Cache
                } else {
                    source
                };
                Ok(Answer::new(entry, Freshness::Fresh, source))
            }
            Ok(Err(error)) => match fallback.filter(within_limit) {
                Some(e) => {
                    self.count_waited_stale(source);
                    Ok(self.stale(
                        e,
                        now,
                        StaleReason::WarehouseError(error.to_string().into()),
                        started,
                    ))
                }
                None => {
                    inner.stats.incr(Counter::Errors);
                    Err(GetError::Warehouse {
                        query: request.to_string(),
                        error,
                    })
                }
            },
            Err(_elapsed) => {
                inner.stats.incr(Counter::WaitTimeouts);
                match fallback.filter(within_limit) {
                    Some(e) => {
                        self.count_waited_stale(source);
                        Ok(self.stale(e, now, StaleReason::WarehouseSlow, started))
                    }
                    None => {
                        inner.stats.incr(Counter::Errors);
                        Err(GetError::Timeout {
                            query: request.to_string(),
                            waited: policy.max_wait,
                        })
                    }
                }
            }
        }
    }

    /// What the shared tier holds for `request` that may be served stale when its load failed or
    /// was too slow: the (expired) entry for `key` itself when `at_key`, else the previous
    /// version's. Looked up only then, so a load that succeeds costs the shared tier nothing more;
    /// bounded by [`SHARED_FALLBACK_LOOKUP`].
    pub(super) async fn shared_fallback(
        &self,
        request: &Request,
        key: &EntryKey,
        at_key: bool,
    ) -> Option<Arc<Entry>> {
        let shared = self.inner.shared.as_ref()?;
        let look = async {
            if at_key && let Ok(Some(entry)) = shared.get(request, key).await {
                return Some(entry);
            }
            shared.previous(request, key).await.ok().flatten()
        };
        tokio::time::timeout(SHARED_FALLBACK_LOOKUP, look)
            .await
            .ok()
            .flatten()
    }

    /// Counts a request that waited (as a miss, or coalesced) and is answered stale, so that its
    /// outcome is `stale` (see [`stats::RequestOutcomes`]).
    pub(super) fn count_waited_stale(&self, source: Source) {
        let stats = &self.inner.stats;
        stats.incr(Counter::WaitedStale);
        if source == Source::Coalesced {
            stats.incr(Counter::CoalescedStale);
        }
    }

    pub(super) fn stale(
        &self,
        entry: Arc<Entry>,
        now: Millis,
        reason: StaleReason,
        started: Instant,
    ) -> Answer {
        let stats = &self.inner.stats;
        stats.incr(Counter::StaleServed);
        stats.record_user(started.elapsed(), 1);
        let age = Duration::from_millis(now.saturating_sub(entry.created_ms));
        Answer::new(entry, Freshness::Stale { age, reason }, Source::Cache)
    }
}
