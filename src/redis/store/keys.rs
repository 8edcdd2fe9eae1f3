//! The names of a request's keys in Redis.

use crate::model::catalog::Request;
use crate::model::entry::EntryKey;

/// A key of one request: `fc:{<tag>}:<kind>:<query>:<fingerprint>`, then `:<versions>` for the
/// keys of one version (an entry, its lease). These names are what other processes and other
/// versions of this program look for in Redis: the layout is a contract (see the table in
/// [`super`]'s documentation).
pub(super) fn request_key(
    tag: &str,
    kind: char,
    request: &Request,
    key: &EntryKey,
    versions: Option<&str>,
) -> String {
    let mut name = format!(
        "fc:{{{tag}}}:{kind}:{}:{:032x}",
        request.query().name,
        key.fingerprint
    );
    if let Some(versions) = versions {
        name.push(':');
        name.push_str(versions);
    }
    name
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::model::catalog::Catalog;
    use crate::model::entry::EntryKey;

    /// The key layout other processes (and other versions of this program) rely on.
    #[test]
    fn request_keys_keep_their_layout() {
        let catalog = Catalog::bundled().unwrap();
        let request = catalog
            .request("sales_by_region", &[("quarter", "Q4"), ("year", "2026")])
            .unwrap();
        let key = EntryKey::new(request.fingerprint(), [3, 0, 0, 0]);
        let fp = format!("{:032x}", request.fingerprint());
        assert_eq!(
            request_key("sales", 'e', &request, &key, Some("3")),
            format!("fc:{{sales}}:e:sales_by_region:{fp}:3")
        );
        assert_eq!(
            request_key("sales", 'p', &request, &key, None),
            format!("fc:{{sales}}:p:sales_by_region:{fp}")
        );
    }
}
