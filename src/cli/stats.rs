//! `freshcache stats`: counters summed over every live instance, the versions, and --watch.

use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::Backends;
use super::interrupt::watch_interrupt;
use super::output::print_json;
use crate::exit::{CliError, EXIT_BAD_INPUT};
use crate::model::clock::parse_duration;
use crate::settings::Settings;

/// Options of `stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Instances heard from within this long count as live.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub live: String,
    /// Keep printing, once per --interval, until interrupted (with --json: JSON Lines).
    #[arg(long)]
    pub watch: bool,
    /// How often --watch prints.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub interval: String,
}

/// `freshcache stats`: counters summed over live instances, versions, instances.
pub async fn stats(settings: &Settings, args: StatsArgs) -> Result<(), CliError> {
    let live = parse_duration(&args.live)
        .map_err(|e| CliError::new(EXIT_BAD_INPUT, format!("--live: {e}")))?;
    let every = parse_duration(&args.interval)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            CliError::new(
                EXIT_BAD_INPUT,
                format!(
                    "--interval: `{}` is not a positive duration; e.g. 1s, 500ms",
                    crate::sanitize::clean_short(&args.interval, 40)
                ),
            )
        })?;
    let mut interrupt = args.watch.then(watch_interrupt).transpose()?;
    let backends = Backends::open(settings).await?;
    let Some(interrupt) = interrupt.as_mut() else {
        let doc = stats_doc(&backends, live).await?;
        return print_stats(settings, &backends, &doc, false);
    };
    // One document (a JSON line, or a block of text) per interval until interrupted; a Redis
    // that stops answering is reported on stderr and retried, not fatal.
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = tick.tick() => match stats_doc(&backends, live).await {
                Ok(doc) => print_stats(settings, &backends, &doc, true)?,
                Err(e) => eprintln!("freshcache: {}", crate::sanitize::clean_line(&e.message)),
            },
        }
    }
}

async fn stats_doc(backends: &Backends, live: Duration) -> Result<serde_json::Value, CliError> {
    let unavailable =
        |e: crate::bus::BusError| CliError::new(crate::exit::EXIT_UNAVAILABLE, e.to_string());
    let versions = backends.bus.versions().await.map_err(unavailable)?;
    // Every instance heard from in the last minute is listed: one that went silent (partitioned,
    // frozen, dead) is shown as unverified or lost, never silently dropped.
    let known = backends.bus.reports(60_000).await.map_err(unavailable)?;
    let now = backends.bus.clock().now_ms();
    let live_ms = crate::model::num::ms(live);
    let mut total = crate::engine::stats::StatsSnapshot::default();
    let mut bad = 0;
    let mut degraded = 0;
    let mut unverified = 0;
    let mut live_count = 0;
    let mut list = Vec::with_capacity(known.len());
    for r in &known {
        let silent_ms = now.saturating_sub(r.at_ms);
        let state = if silent_ms > crate::model::num::ms(crate::bus::LOST_AFTER) {
            "lost"
        } else if silent_ms > crate::model::num::ms(crate::bus::SILENT_UNVERIFIED) || r.unverified {
            "unverified"
        } else if r.degraded {
            "degraded"
        } else {
            "ok"
        };
        if silent_ms <= live_ms {
            live_count += 1;
            total = total.plus(&r.stats);
            bad += r.bad_events;
            degraded += r.degraded as usize;
        }
        unverified += (state == "unverified") as usize;
        list.push(json!({"id": r.id, "state": state, "silent_ms": silent_ms}));
    }
    let by_name = crate::bus::versions_by_name(&versions, backends.catalog.tables());
    // The same per-instance rows as the console's instances view (rates need two reports, so a
    // single read shows none).
    let fleet = crate::console::fleet::FleetTracker::default().rows(&known, now, live_ms);
    Ok(json!({
        "at": crate::model::clock::format_rfc3339(backends.clock.now_ms()),
        "versions": by_name,
        "batch": versions.batch.as_ref(),
        "instances": live_count,
        "degraded_instances": degraded,
        "unverified_instances": unverified,
        "instance_states": list,
        "fleet": fleet,
        "requests": total.requests,
        "hits": total.fresh_hits,
        "stale": total.stale_served,
        "misses": total.misses,
        "coalesced": total.coalesced,
        "warehouse_queries": total.loads,
        "load_errors": total.load_errors,
        "shared_hits": total.shared_hits,
        "lease_waits": total.lease_waits,
        "bad_events": bad,
    }))
}

fn print_stats(
    settings: &Settings,
    backends: &Backends,
    doc: &serde_json::Value,
    watching: bool,
) -> Result<(), CliError> {
    if settings.json {
        return print_json(doc);
    }
    let n = |k: &str| doc[k].as_u64().unwrap_or(0);
    if watching {
        println!("-- {}", doc["at"].as_str().unwrap_or(""));
    }
    println!(
        "{} live instance(s) on {}",
        n("instances"),
        backends.bus.describe()
    );
    for i in doc["instance_states"].as_array().into_iter().flatten() {
        let state = i["state"].as_str().unwrap_or("");
        if state != "ok" {
            println!(
                "  {} {} (last heard {:.1} s ago)",
                crate::sanitize::clean_line(i["id"].as_str().unwrap_or("")),
                state.to_uppercase(),
                i["silent_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
            );
        }
    }
    let versions = doc["versions"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(t, v)| format!("{t}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let batch = doc["batch"].as_str().unwrap_or("");
    println!(
        "versions   {versions}  ({})",
        if batch.is_empty() {
            "no batch recorded".to_string()
        } else {
            format!("batch {}", crate::sanitize::clean_line(batch))
        }
    );
    println!(
        "requests   {}  hits {}  stale {}  misses {}  coalesced {}",
        n("requests"),
        n("hits"),
        n("stale"),
        n("misses"),
        n("coalesced")
    );
    println!(
        "warehouse  {} queries, {} errors; shared hits {}, lease waits {}",
        n("warehouse_queries"),
        n("load_errors"),
        n("shared_hits"),
        n("lease_waits")
    );
    println!(
        "bad events {}; degraded instances {}",
        n("bad_events"),
        n("degraded_instances")
    );
    Ok(())
}
