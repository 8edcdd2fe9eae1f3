//! Dependencies point down. Every `.rs` file under `src/` is read, every path into the crate it
//! names (`use crate::…`, grouped `use crate::{a::b, c}`, inline `crate::engine::x(..)`, and
//! `super::` chains that climb to the crate root) is mapped from the file's top-level module to
//! the module it reaches, and each such edge must go to a lower rank of [`ORDER`], or be one of the
//! few [`ALLOWED`] edges inside a rank. Since every edge goes strictly down, no two files of
//! different modules can import each other, directly or round a longer loop.
//!
//! A new top-level module fails the test until it is given its place in [`ORDER`].
//!
//! Files stay small enough to read: none under `src/` is longer than [`MAX_LINES`].

// Tests may unwrap, panic and cast freely: a failure is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The top-level modules, top to bottom. A module may use any module of a lower rank; modules of
/// one rank may not use each other (except for [`ALLOWED`]).
const ORDER: &[&[&str]] = &[
    // The binary and the command line: parse, resolve settings, dispatch.
    &["main", "cli"],
    // Benchmark scenarios that run fleets of processes (the chaos checker).
    &["bench"],
    // The HTTP sidecar: answers and operator endpoints for API servers in any language.
    &["serve"],
    // The operator's edges: the console, the Prometheus endpoint, settings and logs.
    &["console", "metrics", "settings"],
    // The one HTTP server (limits, keep-alive, draining) the endpoints above run on.
    &["http"],
    // An engine wired to its bus and warehouse; the simulated users.
    &["instance", "traffic"],
    // Everything Redis: link, store, bus, fills, opened together.
    &["redis"],
    // The bus trait, the local bus and the wire format (its reports carry engine statistics).
    &["bus"],
    // The cache.
    &["engine"],
    // Where entries live, where answers come from: the traits the engine calls.
    &["store", "warehouse"],
    // The shared vocabulary.
    &["model"],
    // Leaves.
    &["secret", "exit"],
    &["sanitize"],
];

/// Edges allowed inside one rank, each with its reason.
const ALLOWED: &[(&str, &str, &str)] = &[(
    "main",
    "cli",
    "the binary is a thin shell that hands over to the command line",
)];

/// Where a file's `crate::` path leads.
struct Edge {
    file: PathBuf,
    line: usize,
    from: String,
    to: String,
}

fn rank_of(module: &str) -> Option<usize> {
    ORDER.iter().position(|rank| rank.contains(&module))
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The file's module path below the crate root: `src/bench/chaos/check/tests.rs` is
/// `[bench, chaos, check, tests]`, `src/store/mod.rs` is `[store]`, `src/lib.rs` is `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("a file under src/");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The source with comments, string literals and character literals blanked out (newlines
/// kept, so line numbers stay right): a URL in a string or a path in a doc comment is not an import.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0usize, 0usize);
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if (rest.starts_with(b"r\"") || rest.starts_with(b"r#"))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                out.push(rest[0] as char);
                i += 1;
                continue;
            }
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            let body = 2 + hashes;
            let end = rest[body..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(rest.len(), |p| body + p + close.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'\'' {
            // A character literal ('x', '\n', '\u{1b}', '"'); anything else is a lifetime.
            let end = if rest.get(1) == Some(&b'\\') {
                rest[2..].iter().position(|&c| c == b'\'').map(|p| p + 3)
            } else {
                let ch = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (rest.get(1 + ch) == Some(&b'\'')).then_some(2 + ch)
            };
            match end {
                Some(end) => {
                    blank(&mut out, &rest[..end]);
                    i += end;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let ch = text[i..].chars().next().expect("a character");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn ident_at(b: &[u8], i: usize) -> &str {
    let end = b[i..]
        .iter()
        .position(|&c| !is_ident(c))
        .map_or(b.len(), |p| i + p);
    std::str::from_utf8(&b[i..end]).expect("ASCII")
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The first segments of every path in a group starting at `b[i] == '{'`: `{a::b, c::{d}, self}`
/// gives `a`, `c` (and `self`).
fn group_heads(b: &[u8], i: usize) -> Vec<(usize, String)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'{' => {
                depth += 1;
                expect_head = depth == 1;
                j += 1;
            }
            b'}' => {
                depth -= 1;
                j += 1;
                if depth == 0 {
                    break;
                }
            }
            b',' => {
                expect_head = depth == 1;
                j += 1;
            }
            c if is_ident(c) && expect_head => {
                let name = ident_at(b, j);
                heads.push((j, name.to_string()));
                j += name.len();
                expect_head = false;
            }
            _ => j += 1,
        }
    }
    heads
}

/// Every top-level module a file reaches, with the byte offset of the reference.
fn references(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    // Inline `mod name {` blocks deepen `super::` chains: the brace depths where they opened.
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == b'}' {
            depth = depth.saturating_sub(1);
            if inline_mods.last() == Some(&depth) {
                inline_mods.pop();
            }
            i += 1;
            continue;
        }
        if !is_ident(c) || (i > 0 && (is_ident(b[i - 1]) || b[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let word = ident_at(b, i);
        let after = i + word.len();
        if word == "mod" {
            let name_at = skip_space(b, after);
            let name = ident_at(b, name_at);
            let brace = skip_space(b, name_at + name.len());
            if !name.is_empty() && b.get(brace) == Some(&b'{') {
                inline_mods.push(depth);
            }
            i = after;
            continue;
        }
        // Where the path's first segment below the crate root starts.
        let first_segment = match word {
            "crate" | "freshcache" if b[after..].starts_with(b"::") => {
                Some(skip_space(b, after + 2))
            }
            "super" => {
                // Climb: each `super::` leaves one module; past the file's own module path
                // (and the inline modules around here) it reaches the crate root.
                let mut levels = 0;
                let mut j = i;
                while ident_at(b, j) == "super" && b[j + 5..].starts_with(b"::") {
                    levels += 1;
                    j += 7;
                    j = skip_space(b, j);
                }
                let here = module.len() + inline_mods.len();
                if levels > 0 && levels >= here {
                    Some(j)
                } else {
                    i = j.max(after);
                    continue;
                }
            }
            _ => None,
        };
        let Some(next) = first_segment else {
            i = after;
            continue;
        };
        if b.get(next) == Some(&b'{') {
            found.extend(group_heads(b, next));
        } else if next < b.len() && is_ident(b[next]) {
            found.push((next, ident_at(b, next).to_string()));
        }
        i = next.max(after);
    }
    found
}

fn top_level_modules(src: &Path) -> BTreeSet<String> {
    std::fs::read_dir(src)
        .expect("src/")
        .map(|e| e.expect("a directory entry").path())
        .filter_map(|p| {
            let name = p.file_stem()?.to_string_lossy().into_owned();
            (p.is_dir() || p.extension().is_some_and(|x| x == "rs")).then_some(name)
        })
        .filter(|name| name != "lib")
        .collect()
}

fn edges() -> Vec<Edge> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = Vec::new();
    for file in files {
        let module = module_path(&src, &file);
        let Some(from) = module.first().cloned() else {
            continue; // lib.rs declares the modules and names none.
        };
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let code = code_only(&text);
        for (at, to) in references(&code, &module) {
            if to == from || to == "self" {
                continue;
            }
            let line = code[..at].matches('\n').count() + 1;
            out.push(Edge {
                file: file
                    .strip_prefix(src.parent().expect("the crate"))
                    .expect("in the crate")
                    .to_path_buf(),
                line,
                from: from.clone(),
                to,
            });
        }
    }
    out
}

/// The longest a file under `src/` may be: past it, a file is doing more than one job.
const MAX_LINES: usize = 600;

#[test]
fn no_file_in_src_is_longer_than_max_lines() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "longer than {MAX_LINES} lines; split by job: {long:?}"
    );
}

#[test]
fn every_top_level_module_has_its_place_in_the_order() {
    let found = top_level_modules(&src_dir());
    let listed: BTreeSet<String> = ORDER
        .iter()
        .flat_map(|r| r.iter().map(|m| m.to_string()))
        .collect();
    let unplaced: Vec<_> = found.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&found).collect();
    assert!(
        unplaced.is_empty() && gone.is_empty(),
        "tests/layers.rs ORDER is out of date: modules without a place: {unplaced:?}; listed but \
         not in src/: {gone:?}. Put each module below every module that uses it and above every module it uses."
    );
}

#[test]
fn dependencies_point_down() {
    let mut report = String::new();
    let mut count = 0;
    for e in edges() {
        let (Some(from), Some(to)) = (rank_of(&e.from), rank_of(&e.to)) else {
            // An unknown module is reported by the test above; `crate::x` for an x that is not a
            // module (a macro's path, say) is not an import between modules.
            continue;
        };
        let allowed = ALLOWED.iter().any(|(a, b, _)| *a == e.from && *b == e.to);
        if to > from || allowed {
            continue;
        }
        count += 1;
        let why = if to == from { "same rank" } else { "upward" };
        let _ = writeln!(
            report,
            "  {}:{}: {} → {} ({why}: {} is on rank {}, {} on rank {})",
            e.file.display(),
            e.line,
            e.from,
            e.to,
            e.from,
            from,
            e.to,
            to
        );
    }
    assert!(
        count == 0,
        "{count} import(s) against the layer order (top → bottom: {}):\n{report}",
        ORDER
            .iter()
            .map(|r| r.join(" / "))
            .collect::<Vec<_>>()
            .join(" → ")
    );
}

#[test]
fn the_scanner_sees_every_form_of_path() {
    let code = code_only(
        "use crate::{engine::Engine, model::{catalog, clock::Millis}};\n\
         let x = crate::bus::excerpt(\"crate::cli in a string\", 3); // crate::console\n\
         /* crate::metrics */ let c = '\"'; let l: &'static str = \"a\";\n\
         use super::super::instance::Instance;\n\
         mod tests { use super::super::super::warehouse::Rows; use super::Local; }\n",
    );
    let refs: Vec<String> = references(&code, &["store".into(), "memory".into()])
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(refs, ["engine", "model", "bus", "instance", "warehouse"]);
}
