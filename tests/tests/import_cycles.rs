//! No two source files of a crate import each other, directly or round a
//! longer loop (ARCHITECTURE.md, "Crate map"): plain data sits below the code
//! that uses it, so a file can be read, tested and moved with what it imports
//! and nothing that imports it.
//!
//! A file's imports are the `crate::…` and `super::…` paths in its code
//! (`use` trees and inline paths, before its `#[cfg(test)]` module), resolved
//! to the deepest module file they name; a name the crate root re-exports
//! (`crate::StateError`) resolves to the file the root takes it from. A
//! module and the modules inside it may name each other (a parent re-exports
//! its children): only files outside each other's subtree count.

// A test crate: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside one crate: `["runtime", "attempt"]`; the root is `[]`.
type ModPath = Vec<String>;

/// The source files of one crate's `src/`, by module path.
fn module_files(src: &Path) -> BTreeMap<ModPath, PathBuf> {
    let mut files = BTreeMap::new();
    let mut stack = vec![(src.to_path_buf(), Vec::<String>::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if path.is_dir() {
                // `src/bin/*` are crate roots of their own.
                if !(prefix.is_empty() && name == "bin") {
                    let mut sub = prefix.clone();
                    sub.push(name);
                    stack.push((path, sub));
                }
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut module = prefix.clone();
                let is_root = prefix.is_empty() && (stem == "lib" || stem == "main");
                if !is_root && stem != "mod" {
                    module.push(stem.to_owned());
                }
                files.insert(module, path);
            }
        }
    }
    files
}

/// The code of a file before its test module, without comment lines.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if !trimmed.starts_with("//") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every path the code names from `crate::` or `super::` on, with `use`
/// trees (`use crate::{a::B, c::{D, E}}`) expanded; the segments only.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut paths = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let rest: String = chars[i..chars.len().min(i + 7)].iter().collect();
        if starts_word && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let (tree, end) = read_tree(&chars, i);
            paths.extend(tree);
            i = end;
        } else {
            i += 1;
        }
    }
    paths
}

/// Reads a path or `use` tree starting at `i`; returns its expanded paths
/// and the index after it.
fn read_tree(chars: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        if i > start {
            prefix.push(chars[start..i].iter().collect::<String>());
        }
        if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
            i += 2;
            while chars.get(i).is_some_and(|c| c.is_whitespace()) {
                i += 1;
            }
            if chars.get(i) == Some(&'{') {
                i += 1;
                let mut paths = Vec::new();
                loop {
                    while chars.get(i).is_some_and(|c| c.is_whitespace() || *c == ',') {
                        i += 1;
                    }
                    match chars.get(i) {
                        None => return (paths, i),
                        Some('}') => return (paths, i + 1),
                        _ => {}
                    }
                    let (sub, end) = read_tree(chars, i);
                    paths.extend(sub.into_iter().map(|s| [prefix.clone(), s].concat()));
                    // Skip `as alias` and anything else up to the next item.
                    i = end;
                    while chars.get(i).is_some_and(|c| *c != ',' && *c != '}') {
                        i += 1;
                    }
                }
            }
            continue;
        }
        return (vec![prefix], i.max(start + 1));
    }
}

/// The names the crate root re-exports (`pub use module::{A, B}`), and the
/// module each comes from.
fn root_reexports(root_code: &str) -> BTreeMap<String, ModPath> {
    let mut names = BTreeMap::new();
    for statement in root_code.split(';') {
        let Some(tree) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let tree = tree.trim().trim_start_matches("crate::");
        let rooted = format!("crate::{tree}");
        let chars: Vec<char> = rooted.chars().collect();
        for path in read_tree(&chars, 0).0 {
            if let [_crate, module @ .., name] = path.as_slice() {
                names.insert(name.clone(), module.to_vec());
            }
        }
    }
    names
}

/// The deepest module with a file that `path` (absolute, without `crate`) names.
fn file_module(files: &BTreeMap<ModPath, PathBuf>, path: &[String]) -> ModPath {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| files.contains_key(m))
        .unwrap_or_default()
}

/// The file-to-file import edges of one crate, outside parent/child pairs.
fn import_edges(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let files = module_files(src);
    let root_code: String = ["lib.rs", "main.rs"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(src.join(f)).ok())
        .collect();
    let reexports = root_reexports(&root_code);
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (module, file) in &files {
        // The module `super::` names: the file's parent (for `a.rs` and
        // `a/mod.rs` alike).
        let parent: ModPath = module[..module.len().saturating_sub(1)].to_vec();
        for path in named_paths(&code(file)) {
            let absolute: Vec<String> = match path.first().map(String::as_str) {
                Some("crate") => path[1..].to_vec(),
                Some("super") => {
                    let mut base = parent.clone();
                    let mut rest = &path[1..];
                    while rest.first().map(String::as_str) == Some("super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    [base, rest.to_vec()].concat()
                }
                _ => continue,
            };
            let mut target = file_module(&files, &absolute);
            if target.is_empty()
                && let Some(from) = absolute.first().and_then(|n| reexports.get(n))
            {
                target = file_module(&files, from);
            }
            let related = target.starts_with(module) || module.starts_with(&target);
            if !related {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    edges
}

/// The groups of modules that reach each other (strongly connected, more
/// than one module), by Tarjan's algorithm.
fn cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<ModPath, usize>,
        low: BTreeMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on_stack: BTreeSet<ModPath>,
        groups: Vec<Vec<ModPath>>,
    }
    fn visit(w: &mut Walk<'_>, v: &ModPath) {
        let n = w.index.len();
        w.index.insert(v.clone(), n);
        w.low.insert(v.clone(), n);
        w.stack.push(v.clone());
        w.on_stack.insert(v.clone());
        let next: Vec<ModPath> = w.edges.get(v).into_iter().flatten().cloned().collect();
        for u in &next {
            if !w.index.contains_key(u) {
                visit(w, u);
                let low = w.low[v].min(w.low[u]);
                w.low.insert(v.clone(), low);
            } else if w.on_stack.contains(u) {
                let low = w.low[v].min(w.index[u]);
                w.low.insert(v.clone(), low);
            }
        }
        if w.low[v] == w.index[v] {
            let mut group = Vec::new();
            while let Some(u) = w.stack.pop() {
                w.on_stack.remove(&u);
                let done = &u == v;
                group.push(u);
                if done {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                w.groups.push(group);
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            visit(&mut walk, v);
        }
    }
    walk.groups
}

/// Every workspace crate's `src/` directory.
fn crate_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("src").is_dir())
        .map(|p| p.join("src"))
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn no_two_files_import_each_other() {
    let sources = crate_sources();
    assert!(sources.len() >= 6, "crates not found: {sources:?}");
    let mut found = Vec::new();
    for src in &sources {
        for group in cycles(&import_edges(src)) {
            let names: Vec<String> = group.iter().map(|m| m.join("/")).collect();
            found.push(format!("{}: {}", src.display(), names.join(" <-> ")));
        }
    }
    assert!(
        found.is_empty(),
        "import circles between files:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_a_circle_and_resolves_use_trees() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("log")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod log;\npub use log::topic::Topic;\n").unwrap();
    std::fs::write(src.join("log.rs"), "mod reader;\nmod topic;\n").unwrap();
    std::fs::write(
        src.join("log/reader.rs"),
        "use super::{format::Parse, topic::Topic};\n",
    )
    .unwrap();
    std::fs::write(
        src.join("log/topic.rs"),
        "use crate::{Result, log::reader::{self, Reader as R}};\n#[cfg(test)]\nmod tests { use crate::log::reader; }\n",
    )
    .unwrap();
    let edges = import_edges(src);
    let reader = vec!["log".to_owned(), "reader".to_owned()];
    let topic = vec!["log".to_owned(), "topic".to_owned()];
    assert!(edges[&reader].contains(&topic), "{edges:?}");
    assert!(edges[&topic].contains(&reader), "{edges:?}");
    assert_eq!(cycles(&edges), vec![vec![reader.clone(), topic.clone()]]);

    // Only the reader importing the topic: no circle.
    std::fs::write(src.join("log/topic.rs"), "use crate::Topic;\n").unwrap();
    assert!(cycles(&import_edges(src)).is_empty());
}
