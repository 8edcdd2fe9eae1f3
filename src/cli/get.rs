//! `freshcache get`: one catalog question answered, and how fresh the answer is.

use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::Backends;
use super::output::{clean_line, human_duration, print_json, rows_table};
use crate::engine::{Answer, Freshness};
use crate::exit::{CliError, EXIT_BAD_INPUT};
use crate::model::clock::format_rfc3339;
use crate::settings::Settings;
use crate::warehouse::Rows;

/// Options of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The catalog query.
    pub query: String,
    /// Parameters, as name=value.
    #[arg(value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

fn parse_params(raw: &[String]) -> Result<Vec<(String, String)>, CliError> {
    raw.iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    CliError::new(
                        EXIT_BAD_INPUT,
                        format!(
                            "parameter `{}` must be written NAME=VALUE, e.g. quarter=Q1",
                            clean_line(p)
                        ),
                    )
                })
        })
        .collect()
}

#[derive(Serialize)]
struct AnswerJson<'a> {
    query: &'a str,
    params: serde_json::Map<String, serde_json::Value>,
    freshness: &'static str,
    age_ms: Option<u64>,
    reason: Option<String>,
    source: String,
    computed_at: String,
    /// `null` when the version truth could not be read (the shared cache did not answer).
    versions: Option<serde_json::Map<String, serde_json::Value>>,
    value: serde_json::Value,
}

fn describe_freshness(a: &Answer) -> String {
    match &a.freshness {
        Freshness::Fresh => "fresh".into(),
        Freshness::Stale { age, reason } => {
            format!(
                "STALE ({} old: {})",
                human_duration(*age),
                clean_line(&reason.to_string())
            )
        }
    }
}

/// `freshcache get`.
pub async fn get(settings: &Settings, args: GetArgs) -> Result<(), CliError> {
    let params = parse_params(&args.params)?;
    let backends = Backends::open(settings).await?;
    // Checked before anything touches the warehouse.
    let request = backends.catalog.request(&args.query, &params)?;
    let instance = backends.instance(settings).await?;
    let answer = instance.engine().get(&request).await.map_err(|e| {
        use crate::engine::{GetError, flight::LoadError};
        use crate::warehouse::WarehouseError;
        let code = match &e {
            GetError::Catalog(_) => crate::exit::EXIT_BAD_INPUT,
            GetError::Warehouse {
                error:
                    LoadError::Warehouse(
                        WarehouseError::Unavailable(_) | WarehouseError::NotInitialised(_),
                    ),
                ..
            } => crate::exit::EXIT_UNAVAILABLE,
            // It did not answer in time: for the caller, unavailable.
            GetError::Timeout { .. }
            | GetError::Warehouse {
                error: LoadError::Deadline(_),
                ..
            } => crate::exit::EXIT_UNAVAILABLE,
            _ => crate::exit::EXIT_FAILURE,
        };
        CliError::new(code, e.to_string())
    })?;
    // The shared cache holds the version truth: when it never answered, the versions this
    // process holds are its own zeros, not the truth, and are not shown as if they were.
    let versions_known = instance.start_error().is_none();
    if let Some(why) = instance
        .start_error()
        .or_else(|| instance.engine().degraded())
    {
        eprintln!(
            "freshcache: warning: running degraded, the shared cache did not answer ({}); this answer came straight from the warehouse",
            clean_line(&why)
        );
    }
    let tables = backends.catalog.tables();
    let rows: Rows = serde_json::from_str(answer.value()).unwrap_or_default();
    if settings.json {
        let versions = versions_known.then(|| {
            answer
                .versions()
                .iter()
                .map(|(t, v)| (tables.name(t).to_string(), json!(v)))
                .collect()
        });
        let (age_ms, reason) = match &answer.freshness {
            Freshness::Fresh => (None, None),
            Freshness::Stale { age, reason } => {
                (Some(crate::model::num::ms(*age)), Some(reason.to_string()))
            }
        };
        return print_json(&AnswerJson {
            query: &request.query().name,
            params: request
                .params()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
            freshness: if answer.freshness.is_fresh() {
                "fresh"
            } else {
                "stale"
            },
            age_ms,
            reason,
            source: answer.source.to_string(),
            computed_at: format_rfc3339(answer.computed_at_ms()),
            versions,
            value: serde_json::to_value(&rows).unwrap_or_default(),
        });
    }
    println!("{}", clean_line(&request.to_string()));
    println!(
        "{} · computed {} · from {} · versions {}",
        describe_freshness(&answer),
        format_rfc3339(answer.computed_at_ms()),
        answer.source,
        if versions_known {
            answer.versions().describe(tables)
        } else {
            "unknown (the shared cache did not answer)".to_string()
        }
    );
    println!("{}", rows_table(&rows, 50));
    Ok(())
}
