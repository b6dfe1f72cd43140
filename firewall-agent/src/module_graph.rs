//! The modules of the agent depend on each other in one direction only:
//! the crate's top-level modules as the layout list in `lib.rs` orders them
//! (each uses only modules below it), and the modules of `policy/` without
//! cycles, the model a leaf.
//!
//! Reads the sources (not the tests) and collects, for each module, the
//! modules it names in code: `crate::x` for the crate; `super::x` in a
//! submodule, `x::` in `mod.rs` and `crate::policy::x` for `policy/`
//! (`mod.rs` itself is a node, `mod`). Comments and `#[cfg(test)] mod tests`
//! blocks are left out. Run with `--nocapture` to see the graphs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name → the sibling modules (or `mod`) it depends on.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The code of a source file: comment lines and the trailing test module cut.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|l| l.trim_start().starts_with("mod tests {"))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The names a path group after `prefix` starts with: `super::a::b` gives
/// `a`; `super::{a, b::c, d}` gives `a`, `b`, `d`.
fn heads(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Nested braces only follow a `::`, so the top-level items are
            // the comma-separated heads before any `::`.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(&item));
                        item.clear();
                    }
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            out.push(ident(&item));
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The dependency graph of `src/policy/`.
fn policy_graph() -> Graph {
    let dir = source_dir().join("policy");
    // (module, file, whether `super::` in the file means the policy module)
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read src/policy") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if path.is_dir() {
            if name == "tests" {
                continue;
            }
            for f in std::fs::read_dir(&path).expect("read a policy submodule dir") {
                let f = f.expect("dir entry").path();
                let parent_is_policy = f.file_stem().is_some_and(|s| s == "mod");
                files.push((name.clone(), f, parent_is_policy));
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push((name, path, true));
        }
    }
    let modules: BTreeSet<String> = files.iter().map(|(m, ..)| m.clone()).collect();
    let mut graph = Graph::new();
    for (module, path, parent_is_policy) in &files {
        let text = code(&std::fs::read_to_string(path).expect("read a policy source"));
        let mut names = heads(&text, "crate::policy::");
        if module == "mod" {
            for m in &modules {
                if text.contains(&format!("{m}::")) {
                    names.push(m.clone());
                }
            }
        } else if *parent_is_policy {
            names.extend(heads(&text, "super::"));
        } else {
            names.extend(heads(&text, "super::super::"));
        }
        let deps = graph.entry(module.clone()).or_default();
        for n in names {
            let target = if modules.contains(&n) {
                n
            } else {
                "mod".to_string()
            };
            if &target != module {
                deps.insert(target);
            }
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// `firewall-agent/src`.
fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules in the order of `lib.rs`'s layout list (the
/// `//! - `name`: ...` lines), highest first.
fn crate_layers() -> Vec<String> {
    let lib = std::fs::read_to_string(source_dir().join("lib.rs")).expect("read lib.rs");
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

/// The `.rs` files under `path` (a file or a directory), test files left out.
fn sources(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read a source dir") {
            let entry = entry.expect("dir entry").path();
            if entry.file_stem().is_some_and(|s| s != "tests") {
                sources(&entry, out);
            }
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Top-level module → the other top-level modules its code names.
fn crate_graph(layers: &[String]) -> Graph {
    let src = source_dir();
    let mut graph = Graph::new();
    for module in layers {
        let mut files = Vec::new();
        sources(&src.join(module), &mut files);
        sources(&src.join(format!("{module}.rs")), &mut files);
        let deps = graph.entry(module.clone()).or_default();
        for file in files {
            let text = code(&std::fs::read_to_string(&file).expect("read a source"));
            for name in heads(&text, "crate::") {
                if layers.contains(&name) && &name != module {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

#[test]
fn every_module_uses_only_modules_below_it_in_the_lib_rs_layout() {
    let layers = crate_layers();
    let lib = std::fs::read_to_string(source_dir().join("lib.rs")).expect("read lib.rs");
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
        let module = line.trim_end_matches(';');
        assert!(
            layers.iter().any(|l| l == module),
            "`{module}` is missing from lib.rs's layout list"
        );
    }
    let graph = crate_graph(&layers);
    let rank = |m: &str| layers.iter().position(|l| l == m).expect("listed");
    let mut upward = Vec::new();
    for (module, deps) in &graph {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!("{module} -> {}", deps.join(", "));
        upward.extend(
            deps.iter()
                .filter(|d| rank(d) < rank(module))
                .map(|d| format!("{module} -> {d}")),
        );
    }
    assert!(
        upward.is_empty(),
        "modules use modules above them in lib.rs's layout: {upward:?}"
    );
    assert!(cycles(&graph).is_empty());
}

#[test]
fn policy_modules_depend_on_each_other_without_cycles() {
    let graph = policy_graph();
    for (module, deps) in &graph {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!("{module} -> {}", deps.join(", "));
    }
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "policy/ has dependency cycles: {cycles:?}"
    );
}

#[test]
fn the_policy_model_depends_on_no_other_policy_module() {
    let graph = policy_graph();
    let deps = &graph["model"];
    assert!(deps.is_empty(), "model.rs uses {deps:?}");
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    assert_eq!(
        cycles(&graph),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
}

#[test]
fn path_heads_are_read_from_groups_and_single_paths() {
    let code = "use super::{a, b::{C, D}, e};\nlet x = super::f::g();\nfoo_super::h();";
    assert_eq!(heads(code, "super::"), ["a", "b", "e", "f"]);
}
