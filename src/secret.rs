//! Secrets and how they are kept out of sight: a [`Secret`] prints `***`, and [`mask_url`],
//! [`mask_authority`] and [`redact`] replace the passwords in URLs (Redis, PostgreSQL) and in free
//! text (error messages) before they are shown or logged. A leaf: it uses only `sanitize`.

use std::fmt;

/// A value that must never be shown: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A URL with its password replaced by `***` (`redis://ann:***@host:6379/0`).
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".into();
    };
    // The user information ends at the last `@`: a password may hold `/`, `?`, `#` or `@`
    // unescaped, and masking too much is better than showing a password.
    crate::sanitize::clean_line(&format!("{scheme}://{}", mask_authority(rest)))
}

/// What follows `scheme://` in a URL, with the password in the user information and any
/// `password=` (or `sslpassword=`, ...) query parameter replaced by `***`.
pub fn mask_authority(rest: &str) -> String {
    let masked = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => rest.to_string(),
    };
    let Some((path, query)) = masked.split_once('?') else {
        return masked;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.to_ascii_lowercase().ends_with("password") => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// `text` with the password of every URL in it replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // Up to the end of the word: a password may hold `/` and the like.
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        out.push_str(&mask_authority(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_masked() {
        assert_eq!(
            mask_url("redis://ann:s3cret@db.local:6380/2"),
            "redis://ann:***@db.local:6380/2"
        );
        assert_eq!(mask_url("redis://:s3cret@h"), "redis://:***@h");
        assert_eq!(mask_url("rediss://h:6379"), "rediss://h:6379");
        assert_eq!(mask_url("nonsense"), "(not a URL)");
        for pw in ["p/w", "p?w", "p#w", "p@w", "p:w"] {
            let m = mask_url(&format!("redis://ann:{pw}@h:1/0"));
            assert_eq!(m, "redis://ann:***@h:1/0", "{pw}");
        }
        assert_eq!(
            mask_url("redis://:S3nt/inel@127.0.0.1:1"),
            "redis://:***@127.0.0.1:1"
        );
        assert_eq!(
            mask_url("postgres://u@h:1/db?sslmode=require&password=s3cret&sslpassword=k3y"),
            "postgres://u@h:1/db?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(format!("{:?}", Secret::new("pw")), "***");
        assert_eq!(Secret::new("pw").to_string(), "***");
    }

    #[test]
    fn redact_masks_every_password_and_keeps_the_rest() {
        assert_eq!(
            redact("cannot reach redis://ann:pw1@h:6379/0 or postgres://bob:pw2@db/sales now"),
            "cannot reach redis://ann:***@h:6379/0 or postgres://bob:***@db/sales now"
        );
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(redact("trailing ://"), "trailing ://");
        assert_eq!(
            redact("at redis://:S3nt/inel@h:1/0, then"),
            "at redis://:***@h:1/0, then"
        );
    }
}
