//! The layers of `src/` point one way: no two top-level modules import
//! each other, directly or through others. An edge is a `crate::x` path in
//! a file of module `y` (unit tests, after `#[cfg(test)]`, aside). When
//! this fails it names the cycle and the files that make each step of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → (module it uses → a file that uses it).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let path = regex::Regex::new(r"crate::([a-z_][a-z_0-9]*)").unwrap();
    let group = regex::Regex::new(r"use crate::\{([^;]*)\};").unwrap();
    let head = regex::Regex::new(r"(?:^|[,{]\s*)([a-z_][a-z_0-9]*)").unwrap();
    let mut g = Graph::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" || rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        let mut used: BTreeSet<String> =
            path.captures_iter(text).map(|c| c[1].to_string()).collect();
        for c in group.captures_iter(text) {
            used.extend(head.captures_iter(&c[1]).map(|h| h[1].to_string()));
        }
        let edges = g.entry(top.clone()).or_default();
        for u in used.into_iter().filter(|u| *u != top) {
            edges.entry(u).or_insert_with(|| rel.display().to_string());
        }
    }
    g
}

/// A cycle through `from`, as the modules on it, if there is one.
fn cycle_from(g: &Graph, from: &str) -> Option<Vec<String>> {
    fn walk(
        g: &Graph,
        at: &str,
        goal: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).into_iter().flat_map(|e| e.keys()) {
            if next == goal {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, next, goal, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    walk(g, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let g = graph();
    assert!(g.len() > 10, "src/ was not read: {:?}", g.keys());
    let mut found = Vec::new();
    for m in g.keys() {
        if let Some(c) = cycle_from(&g, m) {
            let steps: Vec<String> = c
                .iter()
                .zip(c.iter().cycle().skip(1))
                .map(|(a, b)| format!("{a} -> {b} (src/{})", g[a][b]))
                .collect();
            found.push(steps.join(", "));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// The layers of `src/lib.rs`'s table, lowest first.
const LAYERS: [&[&str]; 10] = [
    &["domain", "diag"],
    &["schema", "store", "synth"],
    &["formats", "mapping", "dispatch"],
    &["config"],
    &["pipeline"],
    &["connectors"],
    &["payout", "sim"],
    &["hub"],
    &["admin", "demo"],
    &["cli"],
];

fn layer(m: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&m))
        .unwrap_or_else(|| {
            panic!("module {m} is in no layer of src/lib.rs's table: add it there and here")
        })
}

#[test]
fn each_module_uses_only_the_layers_below_it() {
    let g = graph();
    let mut up = Vec::new();
    for (from, uses) in &g {
        for (to, file) in uses {
            if layer(to) >= layer(from) {
                up.push(format!(
                    "{from} (layer {}) uses {to} (layer {}) in src/{file}",
                    layer(from) + 1,
                    layer(to) + 1
                ));
            }
        }
    }
    assert!(
        up.is_empty(),
        "uses that do not point down:\n{}",
        up.join("\n")
    );
}

#[test]
fn the_check_sees_a_cycle_when_there_is_one() {
    let mut g = graph();
    g.entry("domain".into())
        .or_default()
        .insert("cli".into(), "domain/mod.rs".into());
    let c = cycle_from(&g, "domain").expect("domain -> cli -> … -> domain");
    assert_eq!(c[0], "domain");
    assert_eq!(c[1], "cli");
}
