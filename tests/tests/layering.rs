//! The layering of the verifier and the agent, kept true by CI (issue 19): no import cycle
//! among the files of `verifier/src`, `verifier/evidence/src` or `agent/src`, and no file there
//! over 800 lines.
//!
//! The checker reads the source, not the compiler's view: every `crate::a::b` path,
//! every `super::x` path, and every `child::x` path in a file that declares `mod child;` is an
//! edge from that file's module to the longest module prefix of the path (a path to an item of
//! `storage/mod.rs` is an edge to `storage`). Test modules (`#[cfg(test)] mod ...`) and line
//! comments are left out. A file reaching up into its own folder module (`super::Error` in
//! `ima/ascii.rs`, for the items its `mod.rs` shares with its files) is part of that module and
//! not an edge; every other reference is, a folder module's own references down into its files
//! included. A cycle
//! is a strongly connected component of more than one file. It is
//! written by hand: no kept crate reads `use` lines at file granularity without a full compiler
//! front end, and this needs nothing more than the paths.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a source file may be.
const MAX_LINES: usize = 800;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, by module path (`attestation::session`, `""` for `lib.rs`),
/// binaries (`bin/`, `main.rs`) left out: nothing imports them.
fn modules(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path.strip_prefix(root).expect("under the root");
            let mut parts: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.first().map(String::as_str) == Some("bin")
                || parts.last().map(String::as_str) == Some("main") && parts.len() == 1
            {
                continue;
            }
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            found.insert(parts.join("::"), path);
        }
    }
    found
}

/// The source without test modules and line comments.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            // A test module runs to the end of the file in this codebase's style.
            break;
        }
        let mut kept = line;
        let bytes = line.as_bytes();
        for (i, window) in bytes.windows(2).enumerate() {
            if window == b"//" && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
                kept = &line[..i];
                break;
            }
        }
        out.push_str(kept);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths that follow `prefix::` in `code` (a `{a, b::c}` group gives one path per item).
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let needle = format!("{prefix}::");
    let mut paths = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at;
        from = start + needle.len();
        if code[..start]
            .chars()
            .next_back()
            .is_some_and(|c| is_ident(c) || c == ':')
        {
            continue;
        }
        paths.extend(expand(&code[from..]));
    }
    paths
}

/// The path at the head of `rest`: `a::b::c`, or `a::{b, c::d}` as `a::b` and `a::c::d`.
fn expand(rest: &str) -> Vec<String> {
    let mut head = String::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if is_ident(c) {
            head.push(c);
        } else if rest[i..].starts_with("::{") {
            let inner = &rest[i + 3..];
            let mut depth = 1usize;
            let mut end = inner.len();
            for (j, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let mut out = Vec::new();
            for item in split_top_level(&inner[..end]) {
                let item = item.trim();
                if item.is_empty() || item == "self" {
                    out.push(head.clone());
                    continue;
                }
                for tail in expand(item) {
                    out.push(format!("{head}::{tail}"));
                }
            }
            if out.is_empty() {
                out.push(head);
            }
            return out;
        } else if rest[i..].starts_with("::") {
            head.push_str("::");
            chars.next();
        } else {
            break;
        }
    }
    vec![head.trim_end_matches(':').to_string()]
}

fn split_top_level(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

/// The module a path names: its longest prefix that is a file.
fn resolve(path: &str, known: &BTreeMap<String, PathBuf>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|candidate| known.contains_key(candidate))
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}::{child}")
    }
}

/// Whether `parent` is the module directly above `child`.
fn is_parent(parent: &str, child: &str) -> bool {
    child.rsplit_once("::").map(|(p, _)| p).unwrap_or("") == parent && parent != child
}

/// Module-to-module edges of one source tree.
fn edges(known: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in known {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let code = code(&text);
        // What `super::` names: the parent of this module.
        let parent = module.rsplit_once("::").map(|(p, _)| p).unwrap_or("");
        let mut targets: Vec<String> = paths_after(&code, "crate");
        for path in paths_after(&code, "super") {
            // `super::super::x`: one level up per `super`.
            let mut base = parent;
            let mut rest = path.as_str();
            while let Some(up) = rest.strip_prefix("super") {
                base = base.rsplit_once("::").map(|(p, _)| p).unwrap_or("");
                rest = up.trim_start_matches(':');
            }
            targets.push(join(base, rest));
        }
        targets.extend(
            paths_after(&code, "self")
                .into_iter()
                .map(|p| join(module, &p)),
        );
        for line in code.lines() {
            let line = line.trim_start();
            let line = line
                .strip_prefix("pub(crate) ")
                .or_else(|| line.strip_prefix("pub(super) "))
                .or_else(|| line.strip_prefix("pub "))
                .unwrap_or(line);
            // `mod child;` children are this module's, for mod.rs/lib.rs and `a.rs` + `a/` alike.
            if let Some(child) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) {
                let child = child.trim();
                targets.extend(
                    paths_after(&code, child)
                        .into_iter()
                        .map(|p| join(module, &format!("{child}::{p}"))),
                );
            }
        }
        let entry = graph.entry(module.clone()).or_default();
        for target in targets {
            if let Some(to) = resolve(&target, known)
                && to != *module
                && !is_parent(&to, module)
            {
                entry.insert(to);
            }
        }
    }
    graph
}

/// Strongly connected components of more than one module (Tarjan, iterative).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = graph.keys().collect();
    let id: BTreeMap<&String, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let adjacency: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            graph[*n]
                .iter()
                .filter_map(|t| id.get(t).copied())
                .collect()
        })
        .collect();
    let count = nodes.len();
    let mut index = vec![usize::MAX; count];
    let mut low = vec![0; count];
    let mut on_stack = vec![false; count];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut found = Vec::new();
    for root in 0..count {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some((v, edge)) = work.pop() {
            if edge == 0 {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = adjacency[v].get(edge) {
                work.push((v, edge + 1));
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(nodes[w].clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    found.push(component);
                }
            }
        }
    }
    found
}

fn check_tree(name: &str) -> Vec<String> {
    let root = workspace().join(name);
    let known = modules(&root);
    assert!(!known.is_empty(), "no sources under {}", root.display());
    let graph = edges(&known);
    let mut problems: Vec<String> = cycles(&graph)
        .into_iter()
        .map(|component| {
            let inside: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|to| component.contains(to))
                        .map(move |to| format!("{from} -> {to}"))
                })
                .collect();
            format!(
                "{name}: import cycle among {}\n    edges: {}",
                component.join(", "),
                inside.join("; ")
            )
        })
        .collect();
    for path in known.values() {
        let lines = std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or_default();
        if lines > MAX_LINES {
            problems.push(format!(
                "{}: {lines} lines (at most {MAX_LINES})",
                path.strip_prefix(workspace()).unwrap_or(path).display()
            ));
        }
    }
    problems
}

#[test]
fn the_verifier_and_the_agent_have_no_import_cycle_and_no_file_over_800_lines() {
    let mut problems = check_tree("verifier/src");
    problems.extend(check_tree("verifier/evidence/src"));
    problems.extend(check_tree("agent/src"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle_through_super_and_a_group_import() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    std::fs::write(
        src.join("a/mod.rs"),
        "pub mod inner;\nuse crate::b::{x, y::Z};\n",
    )
    .unwrap();
    std::fs::write(
        src.join("a/inner.rs"),
        "use super::super::c::Thing; // crate::b\n",
    )
    .unwrap();
    std::fs::write(src.join("c.rs"), "use crate::a::Thing;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub fn f() { crate::a::inner::g(); }\n").unwrap();
    let known = modules(src);
    let graph = edges(&known);
    assert!(graph["a"].contains("b"), "{graph:?}");
    assert!(
        !graph["a::inner"].contains("b"),
        "a comment is no edge: {graph:?}"
    );
    // a -> b -> a::inner -> c -> a.
    assert_eq!(
        cycles(&graph),
        vec![vec![
            "a".to_string(),
            "a::inner".into(),
            "b".into(),
            "c".into()
        ]]
    );
}
