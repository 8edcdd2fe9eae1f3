//! The embedded demo: the seed's story told by the engine itself.
//!
//! 1000 users ask "sales by region" at 09:05 on a cold cache, and again right after the 10:00 update;
//! the demo runs it once with the seed's TTL recipe and once with freshcache, and prints what each
//! cost the warehouse and the users.

use clap::Args;

use super::bench;
use crate::engine::policy::Strategy;

/// Options of `freshcache demo`.
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Simulated chatbot users.
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// Warehouse latency per query, in milliseconds (the seed's is 2000-5000).
    #[arg(long, default_value_t = 300)]
    pub load_ms: u64,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            users: 1000,
            load_ms: 300,
        }
    }
}

/// Runs the demo and prints the story.
pub async fn run(_g: &super::GlobalArgs, args: DemoArgs) -> Result<(), super::CliError> {
    println!("freshcache demo (embedded: in-process store, in-memory warehouse)");
    println!(
        "{} users ask \"Q1 sales by region\" at 09:05 (cold cache) and at 10:00:30, right after the \
         10:00 update of `sales`; each warehouse query takes {} ms.\n",
        args.users, args.load_ms
    );
    let report = bench::stampede(
        args.users,
        args.load_ms,
        &[Strategy::Ttl, Strategy::Lock, Strategy::Freshcache],
    )
    .await?;
    for r in &report.results {
        println!(
            "{:<10} {:<10}  warehouse queries {:>5}   user p50 {:>7.1} ms  p99 {:>7.1} ms   old data served as fresh {:>5}",
            r.strategy.name(),
            r.phase,
            r.warehouse_queries,
            r.p50_ms,
            r.p99_ms,
            r.old_data_served
        );
    }
    println!(
        "\nttl: every user of a cold or expired key queries the warehouse.\n\
         lock: one query, but waiters poll every 100 ms, and after the update it keeps serving \
         the 09:05 data until its 1 h TTL ends.\n\
         freshcache: one query per key and version; the update changes the key, so nobody is \
         served the old data as fresh.\n\
         More: `freshcache bench stampede --help`."
    );
    Ok(())
}
