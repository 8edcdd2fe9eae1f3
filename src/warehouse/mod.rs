//! Where answers come from: the expensive warehouse, behind the [`Warehouse`] trait.
//!
//! The engine only ever calls [`Warehouse::run`] from a load it owns (one per key and version), so
//! an implementation never has to coalesce or cache anything itself.

pub mod memory;

use serde::{Deserialize, Serialize};

use crate::engine::catalog::Request;
use crate::store::BoxFuture;

pub use memory::MemoryWarehouse;

/// A query result: column names and rows of JSON values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<serde_json::Value>>,
}

impl Rows {
    /// The rows as the JSON text the cache stores.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"columns\":[],\"rows\":[]}"))
    }
}

/// A warehouse failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WarehouseError {
    /// The query ran and failed.
    #[error("query failed: {0}")]
    Query(String),
    /// The warehouse could not be reached.
    #[error("warehouse unavailable: {0}")]
    Unavailable(String),
}

/// A source of answers for catalog queries.
pub trait Warehouse: Send + Sync + 'static {
    /// A short, secret-free description ("memory", "sqlite (embedded)", "postgres://host/db").
    fn describe(&self) -> String;

    /// Runs one catalog query with its parameters.
    fn run<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Rows, WarehouseError>>;
}
