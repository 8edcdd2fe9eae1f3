//! The two server addresses a setting can hold, checked once when the settings are read: a Redis
//! URL and a warehouse location (a SQLite file or a PostgreSQL URL). A URL may carry a password,
//! so it is kept in a [`Secret`] and shown (`Debug`, `Display`) with the password masked; only
//! [`RedisUrl::expose`] and [`PostgresUrl::expose`] hand out the text itself, to the code that
//! connects.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::secret::{Secret, mask_url};

/// A checked `redis://` or `rediss://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Secret<String>);

impl RedisUrl {
    /// Checks `text`; the error says what is accepted and never shows the password.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
            return Err(format!(
                "{} is not a Redis URL; expected redis://[user:password@]host[:port][/db] or rediss://…",
                mask_url(text)
            ));
        }
        redis::Client::open(text)
            .map_err(|_| format!("{} does not parse as a Redis URL", mask_url(text)))?;
        Ok(Self(Secret::new(text.to_string())))
    }

    /// The URL with its password, for the one place that connects.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.expose().starts_with("rediss://")
    }
}

/// A checked `postgres://` or `postgresql://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(Secret<String>);

impl PostgresUrl {
    /// Whether `text` names a PostgreSQL database rather than a file.
    pub fn is_postgres(text: &str) -> bool {
        text.starts_with("postgres://") || text.starts_with("postgresql://")
    }

    /// Checks `text`; the error says what is accepted and never shows the password.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !Self::is_postgres(text) {
            return Err(format!(
                "{} is neither a SQLite file nor a postgres:// URL",
                mask_url(text)
            ));
        }
        crate::warehouse::postgres::check_url(text)?;
        text.parse::<tokio_postgres::Config>()
            .map_err(|_| format!("{} does not parse as a PostgreSQL URL", mask_url(text)))?;
        Ok(Self(Secret::new(text.to_string())))
    }

    /// The URL with its password, for the one place that connects.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

/// Where the warehouse is.
#[derive(Clone, PartialEq, Eq)]
pub enum WarehouseUrl {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresUrl),
}

impl WarehouseUrl {
    /// A SQLite file, or a PostgreSQL URL; anything else with `://` is refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains("://") {
            PostgresUrl::parse(text).map(Self::Postgres)
        } else {
            Ok(Self::Sqlite(PathBuf::from(text)))
        }
    }

    /// The SQLite file, if it is one.
    pub fn sqlite(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(p) => Some(p),
            Self::Postgres(_) => None,
        }
    }

    /// The text to hand to a process started with `--warehouse`, password included.
    pub fn expose(&self) -> String {
        match self {
            Self::Sqlite(p) => p.display().to_string(),
            Self::Postgres(u) => u.expose().to_string(),
        }
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_url(self.expose()))
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_url(self.expose()))
    }
}

impl fmt::Display for WarehouseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => f.write_str(&crate::sanitize::clean_line(&p.display().to_string())),
            Self::Postgres(u) => u.fmt(f),
        }
    }
}

// Debug shows what Display shows: the password masked.
impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for WarehouseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let r = RedisUrl::parse("redis://ann:S3NT1NEL@127.0.0.1:1/0").unwrap();
        for shown in [r.to_string(), format!("{r:?}")] {
            assert_eq!(shown, "redis://ann:***@127.0.0.1:1/0");
        }
        assert_eq!(r.expose(), "redis://ann:S3NT1NEL@127.0.0.1:1/0");
        let w = WarehouseUrl::parse("postgres://bob:S3NT1NEL@db/sales").unwrap();
        for shown in [w.to_string(), format!("{w:?}")] {
            assert!(
                !shown.contains("S3NT1NEL") && shown.contains("bob:***@db"),
                "{shown}"
            );
        }
        let e = RedisUrl::parse("http://ann:S3NT1NEL@h/0").unwrap_err();
        assert!(!e.contains("S3NT1NEL") && e.contains("redis://"), "{e}");
        let e = WarehouseUrl::parse("mysql://ann:S3NT1NEL@h/db").unwrap_err();
        assert!(!e.contains("S3NT1NEL") && e.contains("postgres://"), "{e}");
        assert_eq!(
            WarehouseUrl::parse("w.sqlite").unwrap().sqlite(),
            Some(Path::new("w.sqlite"))
        );
    }
}
