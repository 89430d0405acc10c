//! The crate's structure, checked on its sources: no module imports a module that imports it back
//! (directly or through others; `crate::x`, `super::x` and a parent's `x::` count), and no
//! function outside the tests is longer than 80 lines (from `fn` to its closing brace, as
//! rustfmt lays it out). See the crate documentation for the layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module's source without its tests and comments, by module path (`""` is the root).
fn modules() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    collect(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    assert!(out.len() > 10, "found only {:?}", out.keys());
    out
}

fn collect(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let mut module = prefix.to_vec();
        if path.is_dir() {
            module.push(name);
            collect(&path, &module, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || name == "main" {
            continue;
        }
        if name != "mod" && name != "lib" {
            module.push(name);
        }
        out.insert(
            module.join("::"),
            code(&std::fs::read_to_string(&path).unwrap()),
        );
    }
}

/// The source before its test module, without comments.
fn code(text: &str) -> String {
    let end = non_test_end(text);
    text[..end]
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the `#[cfg(test)]` test module starts (the end when there is none).
fn non_test_end(text: &str) -> usize {
    [
        "#[cfg(test)]\nmod tests",
        "#[cfg(test)]\npub(crate) mod tests",
    ]
    .iter()
    .filter_map(|m| text.find(m))
    .min()
    .unwrap_or(text.len())
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifiers of a path (`a::b::{c, d::e}` gives `a::b::c` and `a::b::d::e`), after `s`.
fn paths_after(prefix: &[String], s: &str) -> Vec<Vec<String>> {
    let mut segments = prefix.to_vec();
    let mut rest = s;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            return group_paths(&segments, group);
        }
        let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        segments.push(rest[..len].to_string());
        match rest[len..].strip_prefix("::") {
            Some(after) if len > 0 => rest = after,
            _ => return vec![segments],
        }
    }
}

/// The paths of a `{a, b::c}` group (after its `{`) under `prefix`.
fn group_paths(prefix: &[String], group: &str) -> Vec<Vec<String>> {
    let (mut depth, mut items, mut start) = (1, Vec::new(), 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                items.extend(paths_after(prefix, group[start..i].trim()));
                start = i + 1;
                if c == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    items
}

/// The modules `module` refers to.
fn references(module: &str, text: &str, all: &BTreeMap<String, String>) -> BTreeSet<String> {
    let own: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut paths = Vec::new();
    let mut declared = Vec::new();
    for line in text.lines() {
        let l = line.trim_start().trim_start_matches("pub ");
        if let Some(child) = l.strip_prefix("mod ").and_then(|c| c.strip_suffix(';')) {
            declared.push(child.to_string());
        }
    }
    for (i, _) in text.char_indices() {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let rest = &text[i..];
        if let Some(r) = rest.strip_prefix("crate::") {
            paths.extend(paths_after(&[], r));
        } else if let Some(r) = rest.strip_prefix("super::") {
            paths.extend(paths_after(&own[..own.len().saturating_sub(1)], r));
        } else if let Some(child) = declared
            .iter()
            .find(|c| rest.starts_with(&format!("{c}::")))
        {
            let mut p = own.clone();
            p.push(child.clone());
            paths.push(p);
        }
    }
    paths
        .into_iter()
        .map(|p| {
            (1..=p.len())
                .rev()
                .map(|n| p[..n].join("::"))
                .find(|m| all.contains_key(m))
                .unwrap_or_default()
        })
        .filter(|m| m != module)
        .collect()
}

/// A cycle through `start`, if there is one.
fn cycle_from(
    start: &str,
    node: &str,
    edges: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in &edges[node] {
        if next == start {
            let mut c = path.clone();
            c.push(start.to_string());
            return Some(c);
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if let Some(c) = cycle_from(start, next, edges, path, seen) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let all = modules();
    let edges: BTreeMap<String, BTreeSet<String>> = all
        .iter()
        .map(|(m, text)| (m.clone(), references(m, text, &all)))
        .collect();
    // The checker sees the imports it must see.
    assert!(
        edges["error"].contains("kube::rollout"),
        "{:?}",
        edges["error"]
    );
    assert!(
        edges["commands"].contains("commands::apply"),
        "{:?}",
        edges["commands"]
    );
    assert!(
        edges["oci::archive"].contains("oci::publish"),
        "{:?}",
        edges["oci::archive"]
    );
    let cycles: Vec<Vec<String>> = all
        .keys()
        .filter_map(|m| cycle_from(m, m, &edges, &mut vec![m.clone()], &mut BTreeSet::new()))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
    for leaf in ["exit", "options", "progress", "support"] {
        assert!(edges[leaf].is_empty(), "{leaf} imports {:?}", edges[leaf]);
    }
    for side in ["kube", "oci"] {
        for (m, to) in edges.iter().filter(|(m, _)| m.starts_with(side)) {
            let other = if side == "kube" { "oci" } else { "kube" };
            let upward = to.iter().find(|t| {
                t.starts_with(other)
                    || t.starts_with("commands")
                    || ["error", "render", "cli"].contains(&t.as_str())
            });
            assert!(upward.is_none(), "{m} imports {upward:?}");
        }
    }
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                files.push(p);
            }
        }
    }
    let mut long = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text[..non_test_end(&text)].lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let t = t
                .strip_prefix("pub(crate) ")
                .or(t.strip_prefix("pub "))
                .unwrap_or(t);
            let t = t.strip_prefix("async ").unwrap_or(t);
            if !t.starts_with("fn ") || l.trim_end().ends_with('}') || l.trim_end().ends_with(';') {
                continue;
            }
            let close = format!("{}}}", &l[..l.len() - l.trim_start().len()]);
            if let Some(j) = lines[i..].iter().position(|x| x.trim_end() == close)
                && j + 1 > 80
            {
                long.push(format!("{}:{}: {} lines", f.display(), i + 1, j + 1));
            }
        }
    }
    assert!(long.is_empty(), "functions over 80 lines: {long:#?}");
}
