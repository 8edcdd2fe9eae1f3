//! Benchmark and checking scenarios that run whole fleets of processes: [`chaos`], the checker of
//! the freshness promise under faults (`freshcache bench chaos`).
//!
//! The single-process scenarios (`bench stampede`, `lag`, `day`, the Redis ones) live with the
//! command line in `cli::bench`; what lives here spawns processes, servers and proxies of its own.

pub mod chaos;
