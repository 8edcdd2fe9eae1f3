//! The configuration file: where it is looked for, its format (TOML: top-level keys and the
//! `[warehouse]`, `[redis]`, `[log]` and `[metrics]` sections of [`KEYS`]), and the line each
//! value was written on. Every unknown key is reported, not only the first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::{ConfigError, KEYS};

/// A value as written in the file (or in a variable, or on the command line, converted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FileValue {
    Text(String),
    Bool(bool),
    Int(i64),
    /// Another TOML type (float, date, array, table), by name.
    Other(&'static str),
}

impl FileValue {
    /// The value as `config check` shows it.
    pub(super) fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Bool(b) => b.to_string(),
            Self::Int(n) => n.to_string(),
            Self::Other(kind) => format!("({kind})"),
        }
    }
}

/// A read configuration file: the values of known keys with their lines, and what was wrong.
pub(super) struct FileConfig {
    /// The file, as shown in messages.
    pub(super) shown: String,
    /// Known keys: value and line (from 1).
    pub(super) values: BTreeMap<&'static str, (FileValue, usize)>,
    /// Unknown keys and misplaced sections: line and message.
    pub(super) problems: Vec<(usize, String)>,
}

/// The file read when `--config` is not given: `$XDG_CONFIG_HOME/freshcache/config.toml`, else
/// `~/.config/freshcache/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("freshcache").join("config.toml"))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Reads and parses `path`. A file that cannot be read or is not TOML is one error; keys it
/// does not know are listed in [`FileConfig::problems`].
pub(super) fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let shown = crate::sanitize::clean_line(&path.display().to_string());
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(format!("config file {shown}: cannot read it: {e}")))?;
    let table = DeTable::parse(&text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(&text, s.start));
        let why = crate::sanitize::clean_line(e.message().trim());
        ConfigError::one(format!("config file {shown}: line {line}: {why}"))
    })?;
    let mut file = FileConfig {
        shown,
        values: BTreeMap::new(),
        problems: Vec::new(),
    };
    walk(&text, table.get_ref(), "", &mut file);
    file.problems.sort();
    Ok(file)
}

/// The keys (leaves) and sections (prefixes) allowed under `section` ("" for the top level).
fn allowed(section: &str) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for k in KEYS {
        let rest = if section.is_empty() {
            Some(k.key)
        } else {
            k.key
                .strip_prefix(section)
                .and_then(|r| r.strip_prefix('.'))
        };
        if let Some(rest) = rest {
            let name = rest.split('.').next().unwrap_or(rest);
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

fn walk(text: &str, table: &DeTable<'_>, section: &str, file: &mut FileConfig) {
    for (name, value) in table {
        let name_text: &str = name.get_ref();
        let line = line_of(text, name.span().start);
        let path = if section.is_empty() {
            name_text.to_string()
        } else {
            format!("{section}.{name_text}")
        };
        let shown_name = crate::sanitize::clean_short(name_text, 40);
        let place = format!("config file {}: line {line}", file.shown);
        if let Some(k) = KEYS.iter().find(|k| k.key == path) {
            let v = match value.get_ref() {
                DeValue::String(s) => FileValue::Text(s.to_string()),
                DeValue::Boolean(b) => FileValue::Bool(*b),
                DeValue::Integer(i) => {
                    let digits = i.as_str().replace('_', "");
                    match i64::from_str_radix(&digits, i.radix()) {
                        Ok(n) => FileValue::Int(n),
                        Err(_) => FileValue::Other("integer out of range"),
                    }
                }
                other => FileValue::Other(other.type_str()),
            };
            // The line of the value: a multi-line string is reported where it starts.
            let line = line_of(text, value.span().start);
            file.values.insert(k.key, (v, line));
            continue;
        }
        let is_section = KEYS.iter().any(|k| k.key.starts_with(&format!("{path}.")));
        match value.get_ref() {
            DeValue::Table(inner) if is_section => walk(text, inner, &path, file),
            _ if is_section => file.problems.push((
                line,
                format!("{place}: `{shown_name}` is a section; write its keys under [{path}]"),
            )),
            _ => {
                let expected = allowed(section)
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                file.problems.push((
                    line,
                    format!("{place}: unknown key `{shown_name}`, expected one of {expected}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_keys_are_found_with_their_lines() {
        let text = "strategy = \"ttl\"\n\n[redis]\ntimeout = \"1s\"\nbogus = 1\n[nope]\nx = 1\n";
        let table = DeTable::parse(text).unwrap();
        let mut file = FileConfig {
            shown: "f".into(),
            values: BTreeMap::new(),
            problems: Vec::new(),
        };
        walk(text, table.get_ref(), "", &mut file);
        file.problems.sort();
        assert_eq!(
            file.values.get("strategy"),
            Some(&(FileValue::Text("ttl".into()), 1))
        );
        assert_eq!(
            file.values.get("redis.timeout"),
            Some(&(FileValue::Text("1s".into()), 4))
        );
        assert_eq!(file.problems.len(), 2, "{:?}", file.problems);
        assert!(
            file.problems[0]
                .1
                .contains("line 5: unknown key `bogus`, expected one of `url`")
        );
        assert!(file.problems[1].1.contains("line 6: unknown key `nope`"));
    }
}
