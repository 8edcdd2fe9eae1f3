//! The query catalog: the named, parameterised questions the chatbot may ask, and the tables each reads.
//!
//! A [`Request`] is a catalog query with its parameters checked and a stable fingerprint computed
//! once (xxh3-128 of the query name, its parameters in declaration order, and the hash of the
//! query's definition: its SQL text and tables). The fingerprint is the same in every process and
//! on every machine for the same catalog, unlike the baseline's `hash(query)`, which Python salts per
//! process so two API servers never share an entry; and it changes when the SQL does, so during a
//! rolling deploy a process with a changed query never shares the old release's answers.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::policy::Policy;
use super::versions::{TableId, Tables};

mod file;

pub use file::BUNDLED_CATALOG;

/// Most tables one query may read; the cache key carries one version per table read.
pub const MAX_TABLES_PER_QUERY: usize = 4;

/// Longest parameter value accepted.
pub const MAX_PARAM_LEN: usize = 256;

/// What values a parameter accepts besides its choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    /// Any text without control characters.
    #[default]
    Text,
    /// A whole number, optionally bounded.
    Int {
        /// The smallest accepted.
        min: Option<i64>,
        /// The largest accepted.
        max: Option<i64>,
    },
}

/// A parameter a query takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamSpec {
    /// Its name (`quarter`).
    pub name: String,
    /// The value used when the caller gives none; `None` makes the parameter required.
    pub default: Option<String>,
    /// The values accepted, when the set is closed (`Q1`..`Q4`).
    pub choices: Option<Vec<String>>,
    /// Text or a bounded integer.
    pub kind: ParamKind,
}

impl ParamSpec {
    /// A free-text parameter, required when `default` is `None`.
    pub fn text(name: &str, default: Option<&str>) -> Self {
        Self {
            name: name.to_string(),
            default: default.map(str::to_string),
            choices: None,
            kind: ParamKind::Text,
        }
    }

    /// Checks one value; the error says why it is refused.
    pub fn check(&self, value: &str) -> Result<(), String> {
        if value.len() > MAX_PARAM_LEN {
            return Err(format!("longer than {MAX_PARAM_LEN} bytes"));
        }
        if value.chars().any(char::is_control) {
            return Err("contains control characters".into());
        }
        if let Some(choices) = &self.choices
            && !choices.iter().any(|c| c == value)
        {
            return Err(format!("`{value}` is not one of {}", choices.join(", ")));
        }
        if let ParamKind::Int { min, max } = self.kind {
            let n: i64 = value
                .parse()
                .map_err(|_| format!("`{value}` is not a whole number"))?;
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                return Err(format!(
                    "{n} is outside {}..={}",
                    min.map_or("".into(), |m| m.to_string()),
                    max.map_or("".into(), |m| m.to_string())
                ));
            }
        }
        Ok(())
    }
}

/// A named, parameterised warehouse query.
#[derive(Debug, Clone)]
pub struct Query {
    /// The stable name callers use (`q1_sales_by_region`).
    pub name: String,
    /// The question in words ("Sales by region for a quarter").
    pub title: String,
    /// The SQL with `:name` placeholders for parameters.
    pub sql: String,
    /// The tables it reads, in a fixed order; the key carries their versions in this order.
    pub tables: Vec<TableId>,
    /// Its parameters, in a fixed order.
    pub params: Vec<ParamSpec>,
    /// Its freshness rules.
    pub policy: Policy,
    /// xxh3-64 of the SQL text and the table names, computed once: part of every fingerprint.
    definition: u64,
}

/// The stable hash of a query's definition (SQL text, then each table name, NUL-separated).
fn definition_hash(sql: &str, tables: &[&str]) -> u64 {
    let mut bytes = Vec::with_capacity(sql.len() + 16 * tables.len());
    bytes.extend_from_slice(sql.as_bytes());
    for t in tables {
        bytes.push(0);
        bytes.extend_from_slice(t.as_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// Index of a query in its catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryId(pub u32);

/// Errors from building a catalog or a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The query name is not in the catalog.
    #[error("unknown query `{name}`; known queries: {known}")]
    UnknownQuery {
        /// The name asked for (control characters removed).
        name: String,
        /// The known query names.
        known: String,
    },
    /// A required parameter was not given.
    #[error("query `{query}` needs parameter `{param}`")]
    MissingParam {
        /// The query.
        query: String,
        /// The missing parameter.
        param: String,
    },
    /// A parameter the query does not take.
    #[error("query `{query}` has no parameter `{param}`; it takes: {accepted}")]
    UnknownParam {
        /// The query.
        query: String,
        /// The unexpected parameter (control characters removed).
        param: String,
        /// The parameters it takes.
        accepted: String,
    },
    /// A value outside the accepted set, too long, or holding control characters.
    #[error("query `{query}`: bad value for `{param}`: {why}")]
    BadValue {
        /// The query.
        query: String,
        /// The parameter.
        param: String,
        /// What is wrong with it.
        why: String,
    },
    /// The catalog itself is inconsistent.
    #[error("invalid catalog: {0}")]
    Invalid(String),
}

/// The tables and queries the engine serves.
#[derive(Debug, Clone)]
pub struct Catalog {
    tables: Tables,
    queries: Vec<Arc<Query>>,
    by_name: HashMap<String, QueryId>,
}

impl Catalog {
    /// A catalog over `tables`; queries are added with [`Catalog::add`].
    pub fn new(tables: Tables) -> Self {
        Self {
            tables,
            queries: Vec::new(),
            by_name: HashMap::new(),
        }
    }

    /// Adds a query; its name must be new and its tables known, at most [`MAX_TABLES_PER_QUERY`].
    pub fn add(
        &mut self,
        name: &str,
        title: &str,
        sql: &str,
        tables: &[&str],
        params: Vec<ParamSpec>,
        policy: Policy,
    ) -> Result<QueryId, CatalogError> {
        let invalid = |m: String| Err(CatalogError::Invalid(m));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return invalid(format!(
                "query name `{}` must be ASCII letters, digits, `_` or `-`",
                name.escape_default()
            ));
        }
        if self.by_name.contains_key(name) {
            return invalid(format!("query `{name}` is defined twice"));
        }
        if tables.is_empty() || tables.len() > MAX_TABLES_PER_QUERY {
            return invalid(format!(
                "query `{name}` must read 1 to {MAX_TABLES_PER_QUERY} tables, not {}",
                tables.len()
            ));
        }
        let mut ids = Vec::with_capacity(tables.len());
        for t in tables {
            let id = self
                .tables
                .id(t)
                .map_err(|e| CatalogError::Invalid(format!("query `{name}`: {e}")))?;
            if ids.contains(&id) {
                return invalid(format!("query `{name}` lists table `{t}` twice"));
            }
            ids.push(id);
        }
        for (i, p) in params.iter().enumerate() {
            if params[..i].iter().any(|q| q.name == p.name) {
                return invalid(format!("query `{name}` lists parameter `{}` twice", p.name));
            }
            if let Some(d) = &p.default
                && let Err(why) = p.check(d)
            {
                return invalid(format!(
                    "query `{name}`: default of `{}` is refused: {why}",
                    p.name
                ));
            }
        }
        let id = QueryId(super::num::to_u32(self.queries.len()));
        self.queries.push(Arc::new(Query {
            name: name.to_string(),
            title: title.to_string(),
            sql: sql.to_string(),
            tables: ids,
            params,
            policy,
            definition: definition_hash(sql, tables),
        }));
        self.by_name.insert(name.to_string(), id);
        Ok(id)
    }

    /// The tables.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Every query, in the order added.
    pub fn queries(&self) -> &[Arc<Query>] {
        &self.queries
    }

    /// A query by name.
    pub fn query(&self, name: &str) -> Result<&Arc<Query>, CatalogError> {
        self.by_name
            .get(name)
            .map(|id| &self.queries[id.0 as usize])
            .ok_or_else(|| CatalogError::UnknownQuery {
                name: clean(name),
                known: self
                    .queries
                    .iter()
                    .map(|q| q.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// What invalidating `tables` does: every query reading any of them misses once (see
    /// [`super::ops::BlastRadius`]).
    pub fn blast_radius(&self, tables: &[String]) -> super::ops::BlastRadius {
        let names = self.tables();
        super::ops::BlastRadius::of_invalidation(
            self.queries
                .iter()
                .map(|q| q.tables.iter().map(|&t| names.name(t))),
            tables,
        )
    }

    /// The queries that read `table`.
    pub fn queries_reading(&self, table: TableId) -> impl Iterator<Item = &Arc<Query>> {
        self.queries
            .iter()
            .filter(move |q| q.tables.contains(&table))
    }

    /// Builds a request: checks the query exists, every given parameter is known and valid, and
    /// every required one is given.
    pub fn request<K, V>(&self, name: &str, args: &[(K, V)]) -> Result<Request, CatalogError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let query = self.query(name)?.clone();
        for (k, _) in args {
            let k = k.as_ref();
            if !query.params.iter().any(|p| p.name == k) {
                return Err(CatalogError::UnknownParam {
                    query: query.name.clone(),
                    param: clean(k),
                    accepted: if query.params.is_empty() {
                        "no parameters".into()
                    } else {
                        query
                            .params
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                });
            }
        }
        let mut values = Vec::with_capacity(query.params.len());
        for spec in &query.params {
            let given = args
                .iter()
                .rev()
                .find(|(k, _)| k.as_ref() == spec.name)
                .map(|(_, v)| v.as_ref().to_string());
            let value = match given.or_else(|| spec.default.clone()) {
                Some(v) => v,
                None => {
                    return Err(CatalogError::MissingParam {
                        query: query.name.clone(),
                        param: spec.name.clone(),
                    });
                }
            };
            spec.check(&value).map_err(|why| CatalogError::BadValue {
                query: query.name.clone(),
                param: spec.name.clone(),
                why: why.chars().filter(|c| !c.is_control()).collect(),
            })?;
            values.push(value);
        }
        Ok(Request::new(query, values))
    }
}

fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// A checked query with its parameter values and a stable fingerprint.
#[derive(Clone)]
pub struct Request {
    query: Arc<Query>,
    values: Vec<String>,
    fingerprint: u128,
}

impl Request {
    fn new(query: Arc<Query>, values: Vec<String>) -> Self {
        let mut canonical = Vec::with_capacity(64);
        canonical.extend_from_slice(query.name.as_bytes());
        for (spec, v) in query.params.iter().zip(&values) {
            canonical.push(0);
            canonical.extend_from_slice(spec.name.as_bytes());
            canonical.push(b'=');
            canonical.extend_from_slice(v.as_bytes());
        }
        // The definition last: `name\0param=value...\0#<definition hash, little-endian>`.
        canonical.extend_from_slice(b"\0#");
        canonical.extend_from_slice(&query.definition.to_le_bytes());
        let fingerprint = xxhash_rust::xxh3::xxh3_128(&canonical);
        Self {
            query,
            values,
            fingerprint,
        }
    }

    /// The query.
    pub fn query(&self) -> &Arc<Query> {
        &self.query
    }

    /// Parameter values, in the query's parameter order.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// `(name, value)` pairs in the query's parameter order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.query
            .params
            .iter()
            .zip(&self.values)
            .map(|(p, v)| (p.name.as_str(), v.as_str()))
    }

    /// The stable 128-bit fingerprint of query name, parameters and the query's definition.
    pub fn fingerprint(&self) -> u128 {
        self.fingerprint
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.query.name)?;
        for (k, v) in self.params() {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let mut c = Catalog::new(Tables::new(["sales", "inventory"]).unwrap());
        c.add(
            "sales_by_region",
            "Sales by region",
            "SELECT 1",
            &["sales"],
            vec![ParamSpec {
                choices: Some(vec!["Q1".into(), "Q2".into()]),
                ..ParamSpec::text("quarter", None)
            }],
            Policy::default(),
        )
        .unwrap();
        c
    }

    #[test]
    fn fingerprint_is_stable_and_param_sensitive() {
        let c = catalog();
        let a = c.request("sales_by_region", &[("quarter", "Q1")]).unwrap();
        let b = c.request("sales_by_region", &[("quarter", "Q1")]).unwrap();
        let d = c.request("sales_by_region", &[("quarter", "Q2")]).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), d.fingerprint());
        // Pinned: the key must not change between processes, machines or releases (for the
        // same query definition).
        let mut canonical = b"sales_by_region\0quarter=Q1\0#".to_vec();
        canonical.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(b"SELECT 1\0sales").to_le_bytes());
        assert_eq!(a.fingerprint(), xxhash_rust::xxh3::xxh3_128(&canonical));
    }

    /// Regression (issue 10): during a rolling deploy, old and new processes share one Redis; a
    /// query whose SQL changed must not share the old release's answers.
    #[test]
    fn fingerprint_changes_with_the_sql_text() {
        let with_sql = |sql: &str| {
            let mut c = Catalog::new(Tables::new(["sales"]).unwrap());
            c.add(
                "total",
                "Total",
                sql,
                &["sales"],
                vec![ParamSpec::text("quarter", None)],
                Policy::default(),
            )
            .unwrap();
            c.request("total", &[("quarter", "Q1")])
                .unwrap()
                .fingerprint()
        };
        let old = with_sql("SELECT sum(amount) FROM sales WHERE quarter = :quarter");
        let new = with_sql("SELECT sum(amount - refunds) FROM sales WHERE quarter = :quarter");
        assert_ne!(old, new);
        assert_eq!(
            old,
            with_sql("SELECT sum(amount) FROM sales WHERE quarter = :quarter")
        );
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let c = catalog();
        let e = c.request::<&str, &str>("nope", &[]).unwrap_err();
        assert!(e.to_string().contains("unknown query `nope`"), "{e}");
        assert!(e.to_string().contains("sales_by_region"), "{e}");
        let e = c.request::<&str, &str>("sales_by_region", &[]).unwrap_err();
        assert!(e.to_string().contains("needs parameter `quarter`"), "{e}");
        let e = c
            .request("sales_by_region", &[("quarter", "Q1"), ("year", "2024")])
            .unwrap_err();
        assert!(e.to_string().contains("no parameter `year`"), "{e}");
        let e = c
            .request("sales_by_region", &[("quarter", "Q9")])
            .unwrap_err();
        assert!(e.to_string().contains("not one of Q1, Q2"), "{e}");
        let e = c
            .request("sales_by_region", &[("quarter", "Q1\x1b[2J")])
            .unwrap_err();
        assert!(e.to_string().contains("control characters"), "{e}");
    }

    #[test]
    fn bad_catalogs_are_rejected() {
        let mut c = catalog();
        let p = Policy::default;
        assert!(c.add("x", "", "", &["nope"], vec![], p()).is_err());
        assert!(
            c.add("sales_by_region", "", "", &["sales"], vec![], p())
                .is_err()
        );
        assert!(c.add("y", "", "", &[], vec![], p()).is_err());
        assert!(
            c.add("z", "", "", &["sales", "sales"], vec![], p())
                .is_err()
        );
    }
}
