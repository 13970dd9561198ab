//! The daemon's top-level modules import each other without cycles (issue 12): a module never
//! imports from a layer above it, so each layer can be read, changed and tested with only the
//! layers below it in mind.
//!
//! The check reads the sources as text: every `crate::NAME` path outside comments (doc comments
//! and their links included) is an edge from the file's top-level module to `NAME`; grouped
//! imports (`crate::{a::X, b::Y}`) give one edge per group member. `super::` paths are not
//! followed: within a folder module they stay inside it, and a top-level file's `super::` is
//! the crate root, which is no layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The text without comments: line comments (`//`, `///`, `//!`) and block comments go; string
/// literals stay, so a `//` inside one is not taken for a comment.
fn strip_comments(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let rest = &text[i..];
        if in_string {
            if rest.starts_with("\\\\") || rest.starts_with("\\\"") {
                i += 2;
                continue;
            }
            if rest.starts_with('"') {
                in_string = false;
            }
            i += rest.chars().next().unwrap().len_utf8();
            continue;
        }
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
            continue;
        }
        if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |end| end + 2);
            continue;
        }
        if rest.starts_with('"') && !text[..i].ends_with('\'') {
            in_string = true;
            // String contents cannot hold module paths that count: blank them out.
            out.push(' ');
            i += 1;
            continue;
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules named by `crate::` paths in `code`.
fn imported(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `vfslock_crate::`, `$crate::`-like
        }
        let rest = code[at + "crate::".len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // One name per member at the group's top level.
            let mut depth = 0;
            let mut member_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => member_start = true,
                    c if member_start && (c.is_ascii_alphabetic() || c == '_') => {
                        names.insert(identifier(&group[i..]).to_owned());
                        member_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = identifier(rest);
            if !name.is_empty() {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// Edges between the daemon's top-level modules, with a file that makes each.
fn edges(src: &Path) -> BTreeMap<(String, String), PathBuf> {
    let mut edges = BTreeMap::new();
    for file in sources(src) {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap();
        let first = first.as_os_str().to_str().unwrap();
        let module = match first {
            // The crate root and the binaries stand above every layer.
            "lib.rs" | "main.rs" | "bin" => continue,
            name => name.trim_end_matches(".rs").to_owned(),
        };
        let code = strip_comments(&std::fs::read_to_string(&file).unwrap());
        for name in imported(&code) {
            if name != module {
                edges
                    .entry((module.clone(), name))
                    .or_insert_with(|| relative.to_owned());
            }
        }
    }
    edges
}

/// A cycle in `edges`, as the modules along it, if there is one.
fn find_cycle(edges: &BTreeMap<(String, String), PathBuf>) -> Option<Vec<String>> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
    }
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = path[at..].iter().map(|n| n.to_string()).collect();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_daemons_top_level_modules_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/src");
    let edges = edges(&src);
    assert!(
        edges
            .keys()
            .any(|(from, to)| from == "lock" && to == "store"),
        "the check found no edge lock -> store: it no longer reads the sources right"
    );
    if let Some(cycle) = find_cycle(&edges) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                let file = &edges[&(pair[0].clone(), pair[1].clone())];
                format!(
                    "{} -> {} (in daemon/src/{})",
                    pair[0],
                    pair[1],
                    file.display()
                )
            })
            .collect();
        panic!(
            "the daemon's modules import each other in a cycle:\n  {}\nmove what both need \
             into a module below both",
            steps.join("\n  ")
        );
    }
}

#[test]
fn the_check_sees_grouped_imports_and_ignores_comments_and_strings() {
    let code = strip_comments(
        "use crate::{a::X, b::{Y, Z}};\n/// See [`crate::c::W`].\n// crate::d\n\
         let s = \"crate::e\";\nfn f() { crate::g::h(); }\n/* crate::i */",
    );
    let names: Vec<String> = imported(&code).into_iter().collect();
    assert_eq!(names, ["a", "b", "g"]);
    let mut edges = BTreeMap::new();
    for (from, to) in [("x", "y"), ("y", "z"), ("z", "x"), ("z", "w")] {
        edges.insert((from.to_owned(), to.to_owned()), PathBuf::new());
    }
    assert_eq!(find_cycle(&edges).unwrap(), ["x", "y", "z", "x"]);
    edges.remove(&("z".to_owned(), "x".to_owned()));
    assert_eq!(find_cycle(&edges), None);
}
