//! `freshcache serve`: the cache as an HTTP sidecar for API servers in any language.

use std::path::PathBuf;

use clap::Args;

use super::Backends;
use super::interrupt::watch_interrupt;
use crate::exit::{CliError, EXIT_CONFIG, EXIT_FAILURE};
use crate::secret::Secret;
use crate::serve::{ServeConfig, Sidecar};
use crate::settings::Settings;

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen (HOST:PORT); keep it on loopback, next to the API server.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub listen: String,
    /// A file holding the bearer token that turns the operator endpoints on (POST
    /// /v1/etl-complete, /v1/invalidate, /v1/warm, /v1/simulate-partial); off without it.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Requests handled at once; more are answered 503 at once.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_in_flight: usize,
    /// Threads that serve requests and run the cache's own work. One, like Redis, leaves the
    /// host's other cores to the API servers beside it; more pay only where cores are spare.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
}

/// The token in `path`: its first line, trimmed; at least 16 characters.
fn read_token(path: &std::path::Path) -> Result<Secret<String>, CliError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::new(EXIT_CONFIG, format!("--admin-token-file {shown}: {e}")))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.chars().count() < 16 || token.chars().any(char::is_control) {
        return Err(CliError::new(
            EXIT_CONFIG,
            format!(
                "--admin-token-file {shown}: the token must be one line of at least 16 characters \
                 (e.g. `head -c 24 /dev/urandom | base64 > {shown}`)"
            ),
        ));
    }
    Ok(Secret::new(token))
}

/// `freshcache serve`.
pub async fn serve(settings: &Settings, args: ServeArgs) -> Result<(), CliError> {
    let admin_token = args
        .admin_token_file
        .as_deref()
        .map(read_token)
        .transpose()?;
    let mut interrupt = watch_interrupt()?;
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| CliError::new(EXIT_FAILURE, format!("cannot watch for SIGTERM: {e}")))?;
    // Bound first: a port in use is said before anything else starts.
    let sidecar = Sidecar::bind(&args.listen)
        .map_err(|e| CliError::new(EXIT_CONFIG, format!("--listen {e}")))?;
    let addr = sidecar.local_addr();
    let backends = Backends::open(settings).await?;
    let instance = backends
        .instance_as(settings, crate::instance::Role::Serve)
        .await?;
    let _metrics = super::serve_metrics(settings, &instance)?;
    let operator = if admin_token.is_some() { "on" } else { "off" };
    let ready = format!(
        "serving on http://{addr} (answers at /v1/answers/QUERY, operator endpoints {operator})"
    );
    tracing::info!("{ready}");
    if !settings.json {
        eprintln!("{ready}");
    } else {
        super::output::print_json(&serde_json::json!({
            "listening": addr.to_string(),
            "operator_endpoints": admin_token.is_some(),
        }))?;
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(sidecar.serve(
        instance.clone(),
        ServeConfig {
            admin_token,
            max_in_flight: args.max_in_flight,
            ..ServeConfig::default()
        },
        stop_rx,
    ));
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping: no new connections; finishing the requests in flight");
    stop.send_replace(true);
    if let Err(e) = server.await {
        tracing::error!("the server task ended abnormally: {e}");
    }
    // Leaves the fleet: the instance's report goes, so the console stops listing it.
    instance.leave().await;
    Ok(())
}
