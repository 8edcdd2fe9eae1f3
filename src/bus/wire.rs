//! The wire format of the baseline's channel: `warehouse_updated` carries the baseline's JSON —
//! `{"timestamp": ISO-8601, "tables": [..]}` — with optional `versions`, `batch` and `test`.
//! [`parse_warehouse_updated`] accepts any publisher's payload (the baseline's Python job,
//! `redis-cli PUBLISH`), ignores unknown fields, and turns anything malformed into a [`BadInput`]
//! that is counted and logged, never into a panic or an invalidation.

use std::collections::BTreeMap;

use crate::model::events::EventKind;
use crate::model::versions::{TableId, Tables, VersionVector};

/// The pub/sub channel of the baseline's protocol.
pub const CHANNEL: &str = "warehouse_updated";

/// Largest payload accepted on [`CHANNEL`].
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// A message from [`CHANNEL`] published by someone else (the baseline's job, `redis-cli`): the
/// instance checks it and applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The channel it came on.
    pub channel: String,
    /// Its payload, unchecked.
    pub payload: Vec<u8>,
}

/// The wire form of [`EventKind::WarehouseUpdated`], as published on [`CHANNEL`].
pub fn warehouse_updated_payload(kind: &EventKind) -> Option<String> {
    match kind {
        EventKind::WarehouseUpdated {
            timestamp,
            tables,
            versions,
            batch,
            test,
        } => {
            let mut v = serde_json::json!({
                "timestamp": timestamp,
                "tables": tables,
                "versions": versions,
                "batch": batch,
            });
            if *test && let Some(o) = v.as_object_mut() {
                o.insert("test".into(), true.into());
            }
            Some(v.to_string())
        }
        _ => None,
    }
}

/// Every table's version, by name: the `versions` field of the wire format.
pub fn versions_by_name(v: &VersionVector, tables: &Tables) -> BTreeMap<String, u64> {
    tables
        .ids()
        .map(|t| (tables.name(t).to_string(), v.version(t)))
        .collect()
}

/// A message from [`CHANNEL`], checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Tables named (all tables when the payload names none, as the baseline's test trigger does).
    pub tables: Vec<TableId>,
    /// Versions, when the publisher sent them (freshcache does; the baseline does not).
    pub versions: Option<Vec<(TableId, u64)>>,
    /// The batch label, if sent.
    pub batch: Option<String>,
    /// The timestamp, if sent.
    pub timestamp: Option<String>,
    /// The baseline's staging flag.
    pub test: bool,
    /// A hash of the payload: the identity of the message for exactly-once application.
    pub id: u64,
}

/// A message that was refused, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct BadInput {
    /// What is wrong.
    pub reason: String,
    /// The payload's first bytes, with control characters escaped.
    pub excerpt: String,
}

/// The first `max` characters of `bytes`, with control and escape characters made visible.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max * 4)]);
    let mut out = String::new();
    for c in text.chars().take(max) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if text.chars().count() > max || bytes.len() > max * 4 {
        out.push('…');
    }
    out
}

fn clean_label(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Checks a payload from [`CHANNEL`].
pub fn parse_warehouse_updated(payload: &[u8], tables: &Tables) -> Result<Incoming, BadInput> {
    let bad = |reason: String| BadInput {
        reason,
        excerpt: excerpt(payload, 120),
    };
    if payload.len() > MAX_PAYLOAD {
        return Err(bad(format!(
            "payload of {} bytes is larger than {MAX_PAYLOAD}",
            payload.len()
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| bad(format!("not JSON: {}", clean_label(&e.to_string()))))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let string_field = |key: &str| -> Result<Option<String>, BadInput> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => {
                if s.len() > 64 || s.chars().any(char::is_control) {
                    Err(bad(format!(
                        "`{key}` must be a short string without control characters"
                    )))
                } else {
                    Ok(Some(s.clone()))
                }
            }
            Some(_) => Err(bad(format!("`{key}` must be a string"))),
        }
    };
    let timestamp = string_field("timestamp")?;
    let batch = string_field("batch")?;
    let test = match obj.get("test") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(bad("`test` must be true or false".into())),
    };
    let table_id = |name: &str| tables.id(name).map_err(|e| bad(e.to_string()));
    let named = match obj.get("tables") {
        None | Some(serde_json::Value::Null) => tables.ids().collect(),
        Some(serde_json::Value::Array(items)) => {
            if items.is_empty() {
                return Err(bad("`tables` is empty: it names nothing to update".into()));
            }
            let mut ids = Vec::with_capacity(items.len());
            for item in items {
                let name = item
                    .as_str()
                    .ok_or_else(|| bad("`tables` must be a list of table names".into()))?;
                let id = table_id(name)?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            ids
        }
        Some(_) => return Err(bad("`tables` must be a list of table names".into())),
    };
    let versions = match obj.get("versions") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(map)) => {
            let mut out = Vec::with_capacity(map.len());
            for (name, v) in map {
                let id = table_id(name)?;
                let n = v.as_u64().ok_or_else(|| {
                    bad(format!(
                        "version of `{}` must be a whole number >= 0",
                        clean_label(name)
                    ))
                })?;
                out.push((id, n));
            }
            Some(out)
        }
        Some(_) => return Err(bad("`versions` must be an object of table: version".into())),
    };
    Ok(Incoming {
        tables: named,
        versions,
        batch,
        timestamp,
        test,
        id: xxhash_rust::xxh3::xxh3_64(payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::events::Event;

    fn tables() -> Tables {
        Tables::new(["sales", "inventory", "customers"]).unwrap()
    }

    #[test]
    fn the_baselines_payload_is_accepted() {
        let t = tables();
        let m = parse_warehouse_updated(
            br#"{"timestamp": "2024-11-02T10:00:03.123456", "tables": ["sales", "inventory", "customers"]}"#,
            &t,
        )
        .unwrap();
        assert_eq!(m.tables.len(), 3);
        assert!(m.versions.is_none());
        // The baseline's staging trigger names no tables: all of them.
        let m = parse_warehouse_updated(br#"{"timestamp": "x", "test": true}"#, &t).unwrap();
        assert!(m.test);
        assert_eq!(m.tables.len(), 3);
        // Unknown fields are ignored; versions are read.
        let m = parse_warehouse_updated(
            br#"{"tables": ["sales"], "versions": {"sales": 4, "inventory": 2}, "batch": "b", "extra": [1]}"#,
            &t,
        )
        .unwrap();
        assert_eq!(m.versions.unwrap().len(), 2);
    }

    #[test]
    fn malformed_payloads_are_refused_with_a_reason() {
        let t = tables();
        let big = format!(
            "{{\"tables\": [\"sales\"], \"pad\": \"{}\"}}",
            "x".repeat(10 << 20)
        );
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "not JSON"),
            (b"[1,2]".to_vec(), "not a JSON object"),
            (br#"{"tables": "sales"}"#.to_vec(), "must be a list"),
            (br#"{"tables": [1]}"#.to_vec(), "must be a list"),
            (br#"{"tables": []}"#.to_vec(), "names nothing"),
            (
                br#"{"tables": ["salez"]}"#.to_vec(),
                "unknown table `salez`",
            ),
            (b"{\"tables\": [\"sa\x1b[2Jles\"]}".to_vec(), "not JSON"),
            (
                br#"{"tables": ["sa\u001b[2Jles"]}"#.to_vec(),
                "unknown table",
            ),
            (br#"{"versions": {"sales": -1}}"#.to_vec(), "whole number"),
            (br#"{"batch": 7}"#.to_vec(), "must be a string"),
            (br#"{"test": "yes"}"#.to_vec(), "true or false"),
            (big.into_bytes(), "larger than"),
        ];
        for (payload, expected) in cases {
            let e = parse_warehouse_updated(&payload, &t).unwrap_err();
            assert!(
                e.reason.contains(expected),
                "{:?}: {}",
                excerpt(&payload, 40),
                e.reason
            );
            assert!(
                !e.reason.contains('\x1b') && !e.excerpt.contains('\x1b'),
                "{e:?}"
            );
            assert!(e.excerpt.chars().count() <= 121);
        }
    }

    #[test]
    fn our_payload_round_trips() {
        let t = tables();
        let kind = EventKind::WarehouseUpdated {
            timestamp: "2026-11-26T10:00:00.000Z".into(),
            tables: vec!["sales".into()],
            versions: [("sales".to_string(), 3), ("inventory".to_string(), 1)].into(),
            batch: "20261126-10:00".into(),
            test: false,
        };
        let wire = warehouse_updated_payload(&kind).unwrap();
        let m = parse_warehouse_updated(wire.as_bytes(), &t).unwrap();
        assert_eq!(m.tables, vec![TableId(0)]);
        assert_eq!(m.batch.as_deref(), Some("20261126-10:00"));
        let e = Event {
            seq: 9,
            at_ms: 1,
            origin: "h:1".into(),
            kind,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"type\":\"warehouse_updated\""), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }
}
