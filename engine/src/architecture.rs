//! The layering, checked: every top-level module's root file states which
//! of our modules it may import on a `//! May import:` line, and this test
//! compares that rule with the `crate::…` paths its files really use
//! (outside their `#[cfg(test)]` modules), then checks that no two modules
//! import each other, directly or around a circle. Test-only.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Top-level modules (files and folders under `src/`, minus the binary and
/// the crate root), with their files.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(SRC).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut files = Vec::new();
            collect(&path, &mut files);
            modules.insert(name, files);
        } else if !["lib", "main"].contains(&name.as_str()) && path.extension().is_some_and(|e| e == "rs") {
            modules.insert(name, vec![path]);
        }
    }
    modules
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's text before its inline `#[cfg(test)]` module; nothing for a
/// file that is test code as a whole (`conformance.rs`, `tests.rs`).
fn production_part(path: &Path) -> String {
    if path.ends_with("conformance.rs") || path.ends_with("tests.rs") {
        return String::new();
    }
    let text = fs::read_to_string(path).unwrap();
    let mut from = 0;
    while let Some(at) = text[from..].find("#[cfg(test)]").map(|i| i + from) {
        // The attribute of an inline module (`mod tests {`), possibly after
        // other attributes and comments, rather than of one item.
        let after = &text[at..];
        let item_end = after.find([';', '{']).unwrap_or(after.len());
        if after[..item_end].contains("mod ") && after[item_end..].starts_with('{') {
            return text[..at].to_owned();
        }
        from = at + 1;
    }
    text
}

/// The first path segment of every `crate::…` use in `text`, including the
/// members of grouped imports (`use crate::{api::X, store::{Y, Z}}`).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level members of the group: names at brace depth 0.
            let mut depth = 0usize;
            let mut name = String::new();
            let mut expecting_name = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expecting_name = true,
                    c if depth == 0 && expecting_name && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ if depth == 0 && expecting_name && !name.is_empty() => {
                        found.insert(std::mem::take(&mut name));
                        expecting_name = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                found.insert(name);
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            found.insert(name);
        }
    }
    found
}

/// The rule a module's root file states: `//! May import: a, b.` or
/// `//! May import: nothing of ours.` (`anything` for the composition root).
fn stated_rule(module: &str, files: &[PathBuf]) -> Option<BTreeSet<String>> {
    let root = files
        .iter()
        .find(|f| f.ends_with(format!("{module}/mod.rs")) || f.ends_with(format!("{module}.rs")))?;
    let text = fs::read_to_string(root).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("//! May import: "))?;
    let list = line.trim_end_matches('.');
    if list.starts_with("anything") {
        return Some(modules().into_keys().collect());
    }
    if list == "nothing of ours" {
        return Some(BTreeSet::new());
    }
    // Words after a name (`store` (the chain's durable state)) are comments.
    Some(
        list.split(", ")
            .filter_map(|m| m.split('`').nth(1).map(str::to_owned))
            .collect(),
    )
}

fn actual_imports() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let names: BTreeSet<&String> = modules.keys().collect();
    modules
        .iter()
        .map(|(module, files)| {
            let used = files
                .iter()
                .flat_map(|f| crate_paths(&production_part(f)))
                .filter(|m| m != module && names.contains(m))
                .collect();
            (module.clone(), used)
        })
        .collect()
}

#[test]
fn every_module_imports_only_what_its_rule_allows() {
    let modules = modules();
    let mut broken = Vec::new();
    for (module, used) in actual_imports() {
        if module == "architecture" || module == "testing" {
            continue;
        }
        let Some(allowed) = stated_rule(&module, &modules[&module]) else {
            broken.push(format!("{module}: no `//! May import:` line in its root file"));
            continue;
        };
        let extra: Vec<_> = used.difference(&allowed).collect();
        if !extra.is_empty() {
            broken.push(format!("{module} imports {extra:?}, which its rule does not allow"));
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn no_two_modules_import_each_other_even_around_a_circle() {
    let graph = actual_imports();
    // Depth-first search for a back edge.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut circle: Vec<String> = path[at..].iter().map(|n| n.to_string()).collect();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        let circle = visit(node, &graph, &mut Vec::new(), &mut done);
        assert!(circle.is_none(), "import circle: {}", circle.unwrap().join(" → "));
    }
}

#[test]
fn grouped_and_inline_crate_paths_are_all_seen() {
    let text = "use crate::{api::{self, X}, store::Y, telemetry};\nfn f() { crate::domain::now(); }";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["api", "domain", "store", "telemetry"]);
}
