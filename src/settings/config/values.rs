//! What each setting accepts: one effective value checked, whatever its origin.

use crate::model::clock::parse_duration;
use crate::secret::mask_url;
use crate::warehouse::Latency;

/// Checks one effective value; says what is accepted.
pub(super) fn validate(key: &str, v: &str) -> Result<(), String> {
    let quoted = || format!("`{}`", crate::sanitize::clean_short(v, 80));
    match key {
        "hour"
        | "redis.timeout"
        | "redis.lease"
        | "redis.max_unverified"
        | "warehouse.load_timeout" => {
            let d = parse_duration(v).map_err(|e| format!("{}: {e}", quoted()))?;
            if d.is_zero() {
                return Err(format!(
                    "{} must be more than zero, e.g. 300ms, 2s",
                    quoted()
                ));
            }
        }
        "warehouse.latency" => {
            Latency::parse(v).map_err(|e| format!("{}: {e}; e.g. 300ms or 2s-5s", quoted()))?;
        }
        "redis.url" => {
            if !(v.starts_with("redis://") || v.starts_with("rediss://")) {
                return Err(format!(
                    "{} is not a Redis URL; expected redis://[user:password@]host[:port][/db] or rediss://…",
                    mask_url(v)
                ));
            }
            redis::Client::open(v)
                .map_err(|_| format!("{} does not parse as a Redis URL", mask_url(v)))?;
        }
        "warehouse.url" if v.contains("://") => {
            if !(v.starts_with("postgres://") || v.starts_with("postgresql://")) {
                return Err(format!(
                    "{} is neither a SQLite file nor a postgres:// URL",
                    mask_url(v)
                ));
            }
            crate::warehouse::postgres::check_url(v)?;
            v.parse::<tokio_postgres::Config>()
                .map_err(|_| format!("{} does not parse as a PostgreSQL URL", mask_url(v)))?;
        }
        "redis.ca" => {
            let pem = std::fs::read(v).map_err(|e| format!("{}: cannot read it: {e}", quoted()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    quoted()
                ));
            }
        }
        "log.level" => {
            tracing_subscriber::EnvFilter::try_new(v).map_err(|e| {
                format!(
                    "{}: {e}; expected trace, debug, info, warn, error, off or a filter such as freshcache=debug",
                    quoted()
                )
            })?;
        }
        "metrics.addr" => {
            parse_addr(v)?;
        }
        _ => {}
    }
    Ok(())
}

/// Parses a listening address: `127.0.0.1:9464`, `[::1]:9464`, `localhost:9464`.
pub fn parse_addr(v: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let shown = crate::sanitize::clean_short(v, 80);
    v.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            format!(
                "`{shown}` is not an address to listen on; expected HOST:PORT, e.g. 127.0.0.1:9464"
            )
        })
}
