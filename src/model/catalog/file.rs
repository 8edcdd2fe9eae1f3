//! The TOML form of a catalog (see `assets/catalog.toml`): reading it into a [`Catalog`].

use serde::Deserialize;

use super::{Catalog, CatalogError, ParamKind, ParamSpec};
use crate::model::clock::parse_duration;
use crate::model::policy::{Policy, PolicyBuilder};
use crate::model::versions::Tables;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    tables: Vec<String>,
    #[serde(default)]
    policy: PolicyFile,
    #[serde(rename = "query", default)]
    queries: Vec<QueryFile>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    update_interval: Option<String>,
    update_offset: Option<String>,
    grace: Option<String>,
    min_ttl: Option<String>,
    jitter: Option<String>,
    swr_window: Option<String>,
    max_stale: Option<String>,
    beta: Option<f64>,
    on_update: Option<String>,
    max_wait: Option<String>,
    stampede_threshold: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryFile {
    name: String,
    #[serde(default)]
    title: String,
    tables: Vec<String>,
    sql: String,
    #[serde(default)]
    params: Vec<ParamFile>,
    #[serde(default)]
    policy: PolicyFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamFile {
    name: String,
    default: Option<String>,
    choices: Option<Vec<String>>,
    kind: Option<String>,
    min: Option<i64>,
    max: Option<i64>,
}

impl PolicyFile {
    /// `self` over `defaults`, key by key.
    fn over(&self, defaults: &PolicyFile) -> PolicyFile {
        macro_rules! pick {
            ($($f:ident),*) => { PolicyFile { $($f: self.$f.clone().or_else(|| defaults.$f.clone()),)* } };
        }
        pick!(
            update_interval,
            update_offset,
            grace,
            min_ttl,
            jitter,
            swr_window,
            max_stale,
            beta,
            on_update,
            max_wait,
            stampede_threshold
        )
    }

    fn build(&self, context: &str) -> Result<Policy, CatalogError> {
        let bad = |m: String| CatalogError::Invalid(format!("{context}: {m}"));
        let dur =
            |key: &str, v: &Option<String>| -> Result<Option<std::time::Duration>, CatalogError> {
                v.as_deref()
                    .map(|s| parse_duration(s).map_err(|e| bad(format!("policy.{key}: {e}"))))
                    .transpose()
            };
        let mut b: PolicyBuilder = Policy::builder();
        let defaults = Policy::default();
        let interval =
            dur("update_interval", &self.update_interval)?.unwrap_or(defaults.update_interval());
        let offset = dur("update_offset", &self.update_offset)?.unwrap_or_default();
        b = b.schedule(interval, offset);
        if let Some(d) = dur("grace", &self.grace)? {
            b = b.grace(d);
        }
        if let Some(d) = dur("min_ttl", &self.min_ttl)? {
            b = b.min_ttl(d);
        }
        if let Some(d) = dur("jitter", &self.jitter)? {
            b = b.jitter(d);
        }
        if let Some(d) = dur("swr_window", &self.swr_window)? {
            b = b.swr_window(d);
        }
        if let Some(d) = dur("max_stale", &self.max_stale)? {
            b = b.max_stale(d);
        }
        if let Some(d) = dur("max_wait", &self.max_wait)? {
            b = b.max_wait(d);
        }
        if let Some(beta) = self.beta {
            b = b.beta(beta);
        }
        if let Some(n) = self.stampede_threshold {
            b = b.stampede_threshold(n);
        }
        if let Some(o) = &self.on_update {
            b = b.on_update(
                o.parse()
                    .map_err(|e| bad(format!("policy.on_update: {e}")))?,
            );
        }
        b.build().map_err(|e| bad(e.to_string()))
    }
}

fn parse(text: &str, origin: &str) -> Result<Catalog, CatalogError> {
    let file: CatalogFile = toml::from_str(text)
        .map_err(|e| CatalogError::Invalid(format!("{origin}: {}", e.to_string().trim_end())))?;
    let tables = Tables::new(file.tables)
        .map_err(|e| CatalogError::Invalid(format!("{origin}: tables: {e}")))?;
    // The defaults alone must make sense too.
    file.policy.build(&format!("{origin}: [policy]"))?;
    let mut catalog = Catalog::new(tables);
    if file.queries.is_empty() {
        return Err(CatalogError::Invalid(format!(
            "{origin}: no [[query]] defined"
        )));
    }
    for q in file.queries {
        let context = format!("{origin}: query `{}`", q.name);
        let policy = q.policy.over(&file.policy).build(&context)?;
        let mut params = Vec::with_capacity(q.params.len());
        for p in q.params {
            let kind = match p.kind.as_deref() {
                None | Some("text") => {
                    if p.min.is_some() || p.max.is_some() {
                        return Err(CatalogError::Invalid(format!(
                            "{context}: parameter `{}`: min and max need kind = \"int\"",
                            p.name
                        )));
                    }
                    ParamKind::Text
                }
                Some("int") => ParamKind::Int {
                    min: p.min,
                    max: p.max,
                },
                Some(other) => {
                    return Err(CatalogError::Invalid(format!(
                        "{context}: parameter `{}`: unknown kind `{}`; expected \"text\" or \"int\"",
                        p.name,
                        other.escape_default()
                    )));
                }
            };
            params.push(ParamSpec {
                name: p.name,
                default: p.default,
                choices: p.choices,
                kind,
            });
        }
        for p in &params {
            if !q.sql.contains(&format!(":{}", p.name)) {
                return Err(CatalogError::Invalid(format!(
                    "{context}: parameter `{}` is not used in its SQL (write it `:{}`)",
                    p.name, p.name
                )));
            }
        }
        let tables: Vec<&str> = q.tables.iter().map(String::as_str).collect();
        catalog
            .add(&q.name, &q.title, &q.sql, &tables, params, policy)
            .map_err(|e| match e {
                CatalogError::Invalid(m) => CatalogError::Invalid(format!("{origin}: {m}")),
                other => other,
            })?;
    }
    Ok(catalog)
}

/// The catalog shipped in `assets/catalog.toml`.
pub const BUNDLED_CATALOG: &str = include_str!("../../../assets/catalog.toml");

impl Catalog {
    /// Reads a catalog from its TOML text; `origin` (a path) prefixes every error message.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, CatalogError> {
        parse(text, origin)
    }

    /// The catalog shipped with freshcache (`assets/catalog.toml`).
    pub fn bundled() -> Result<Self, CatalogError> {
        Self::from_toml(BUNDLED_CATALOG, "assets/catalog.toml")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_catalog_loads() {
        let c = Catalog::bundled().unwrap();
        assert!(c.queries().len() >= 8);
        let joins = c.queries().iter().filter(|q| q.tables.len() >= 2).count();
        assert!(joins >= 3, "several queries join tables");
        assert!(c.queries().iter().any(|q| q.tables.len() == 3));
        let r = c
            .request("sales_by_region", &[("quarter", "Q2"), ("year", "2025")])
            .unwrap();
        assert_eq!(r.values(), &["Q2".to_string(), "2025".to_string()]);
        let e = c
            .request("sales_by_region", &[("year", "20x5")])
            .unwrap_err();
        assert!(e.to_string().contains("not a whole number"), "{e}");
        let e = c
            .request("sales_by_region", &[("year", "1999")])
            .unwrap_err();
        assert!(e.to_string().contains("outside 2020..=2030"), "{e}");
    }

    #[test]
    fn bad_files_name_the_key_and_line() {
        let e = Catalog::from_toml("tables = [\"sales\"]\nbogus = 1\n", "x.toml").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("x.toml") && m.contains("bogus") && m.contains("line 2"),
            "{m}"
        );
        let text = "tables = [\"sales\"]\n[policy]\nswr_window = \"0s\"\n[[query]]\nname = \"q\"\ntables = [\"sales\"]\nsql = \"SELECT 1\"\n";
        let m = Catalog::from_toml(text, "y.toml").unwrap_err().to_string();
        assert!(m.contains("stale-while-revalidate window"), "{m}");
        let text = "tables = [\"sales\"]\n[[query]]\nname = \"q\"\ntables = [\"nope\"]\nsql = \"SELECT 1\"\n";
        let m = Catalog::from_toml(text, "z.toml").unwrap_err().to_string();
        assert!(m.contains("unknown table `nope`"), "{m}");
        let text = "tables = [\"sales\"]\n[[query]]\nname = \"q\"\ntables = [\"sales\"]\nsql = \"SELECT 1\"\nparams = [{ name = \"p\" }]\n";
        let m = Catalog::from_toml(text, "w.toml").unwrap_err().to_string();
        assert!(m.contains("not used in its SQL"), "{m}");
        let text = "tables = [\"sales\"]\n[[query]]\nname = \"q\"\ntables = [\"sales\"]\nsql = \"SELECT 1\"\n[query.policy]\nmax_wait = \"soon\"\n";
        let m = Catalog::from_toml(text, "v.toml").unwrap_err().to_string();
        assert!(m.contains("policy.max_wait"), "{m}");
    }
}
