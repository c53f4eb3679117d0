//! The module layout as a rule: no module imports a module that imports it back (at any level
//! of the tree), and the top-level modules form the layers docs/architecture.md §2.1 draws,
//! each importing only from the layers below it.
//!
//! Read from the source text: every `crate::…` and `super::…` path outside comments and
//! `#[cfg(test)]` code is an import of the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top first. A module may import from its own layer's siblings only where no
/// cycle results, and from any layer below.
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["cli"],
    &["server"],
    &["node"],
    &["config"],
    &["store", "hsm", "pki"],
    &["audit", "card", "transport", "durable"],
    &["policy"],
    &["hierarchy"],
    &["proto", "untrusted_text", "wiping_alloc"],
];

/// A module path, `["node", "core", "log"]`; the crate root is `[]`.
type ModPath = Vec<String>;

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    match last.as_str() {
        "mod.rs" | "lib.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file that the library is built from: comments and test modules left out.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start() == "#[cfg(test)]" {
            break;
        }
        let code = line.split("//").next().unwrap_or_default();
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The names a module re-exports (`pub use child::Name;`), with the module that defines them:
/// an import of `crate::node::Keys` is an import of `node::keys`.
type Reexports = BTreeMap<(ModPath, String), ModPath>;

/// Splits `{A, b::C, D as E}` (the text inside the braces) into its items at depth 0.
fn group_items(inner: &str) -> Vec<String> {
    let (mut items, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    items.push(cur);
    items
        .into_iter()
        .map(|i| {
            i.split(" as ")
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .filter(|i| !i.is_empty())
        .collect()
}

/// The paths a `crate::…` or `super::…` (or, with `relative`, a plain `a::b`) mention at
/// `rest`'s start names, each as its segments, braces expanded one level; and how many bytes it
/// took.
fn paths_at(rest: &str) -> (Vec<Vec<String>>, usize) {
    let head: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let base: Vec<String> = head
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let after = &rest[head.len()..];
    if head.ends_with("::") && after.starts_with('{') {
        let mut depth = 0;
        let mut end = 0;
        for (i, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let items = group_items(&after[1..end]);
        let paths = items
            .iter()
            .map(|item| {
                let mut p = base.clone();
                p.extend(
                    item.split("::")
                        .map(|s| s.trim_matches(|c| c == '{' || c == '}').to_string()),
                );
                p
            })
            .collect();
        return (paths, head.len() + end + 1);
    }
    (vec![base], head.len())
}

/// Resolves a path's segments (starting `crate` or `super`, from module `me`) to the module
/// it names: the deepest module on the path, or the module a re-exported name comes from.
fn resolve(
    me: &ModPath,
    segments: &[String],
    modules: &BTreeSet<ModPath>,
    reexports: &Reexports,
) -> ModPath {
    let mut target: ModPath = me.clone();
    let mut rest = segments;
    if rest.first().map(String::as_str) == Some("crate") {
        target.clear();
        rest = &rest[1..];
    } else {
        while rest.first().map(String::as_str) == Some("super") {
            target.pop();
            rest = &rest[1..];
        }
    }
    for seg in rest {
        if seg == "self" {
            continue;
        }
        let mut deeper = target.clone();
        deeper.push(seg.clone());
        if modules.contains(&deeper) {
            target = deeper;
        } else {
            if let Some(from) = reexports.get(&(target.clone(), seg.clone())) {
                return from.clone();
            }
            break;
        }
    }
    target
}

/// Every module a file's code names, resolved against the modules that exist.
fn imports(
    me: &ModPath,
    code: &str,
    modules: &BTreeSet<ModPath>,
    reexports: &Reexports,
) -> Vec<ModPath> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let starts_word = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        if starts_word && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let (paths, took) = paths_at(rest);
            for p in paths {
                found.push(resolve(me, &p, modules, reexports));
            }
            i += took.max(1);
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    found
}

/// The `pub use` / `pub(crate) use` re-exports of a module file's code.
fn reexports_of(me: &ModPath, code: &str, modules: &BTreeSet<ModPath>, out: &mut Reexports) {
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(path) = ["pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|p| stmt.strip_prefix(p))
        else {
            continue;
        };
        let path = path.trim();
        let anchored = if path.starts_with("crate::") || path.starts_with("super::") {
            path.to_string()
        } else {
            // Relative to this module: a child module's name.
            let mut abs = String::from("crate::");
            for seg in me {
                abs.push_str(seg);
                abs.push_str("::");
            }
            abs.push_str(path);
            abs
        };
        let (paths, _) = paths_at(&anchored);
        for p in paths {
            let Some(name) = p.last().cloned() else {
                continue;
            };
            let from = resolve(me, &p[..p.len() - 1], modules, out);
            if &from != me {
                out.insert((me.clone(), name), from);
            }
        }
    }
}

struct Graph {
    /// Module → the modules its files name.
    edges: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(&src, f)).collect();
    modules.insert(vec!["proto".to_string()]);
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    let texts: Vec<(ModPath, String)> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read a source file");
            (module_of(&src, f), code(&text))
        })
        .collect();
    let mut reexports = Reexports::new();
    // Twice: a re-export of a re-export resolves on the second pass.
    for _ in 0..2 {
        for (me, code) in &texts {
            reexports_of(me, code, &modules, &mut reexports);
        }
    }
    for (me, code) in &texts {
        for target in imports(me, code, &modules, &reexports) {
            edges.entry(me.clone()).or_default().insert(target);
        }
    }
    Graph { edges }
}

/// For an import from `from` to `to`: the two sibling modules under their closest common
/// ancestor that the import runs between, unless one contains the other (a module and its own
/// children are one unit: a parent declares and re-exports them).
fn siblings(from: &ModPath, to: &ModPath) -> Option<(ModPath, String, String)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    Some((
        from[..common].to_vec(),
        from[common].clone(),
        to[common].clone(),
    ))
}

fn cycle_in(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n.as_str())
            && let Some(c) = visit(n, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let g = graph();
    let mut by_parent: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, tos) in &g.edges {
        for to in tos {
            if let Some((parent, a, b)) = siblings(from, to) {
                by_parent
                    .entry(parent)
                    .or_default()
                    .entry(a)
                    .or_default()
                    .insert(b);
            }
        }
    }
    assert!(
        by_parent.contains_key(&vec!["node".to_string()]),
        "the reader finds the imports between node's use cases"
    );
    for (parent, edges) in &by_parent {
        if let Some(cycle) = cycle_in(edges) {
            panic!(
                "modules under `crate::{}` import each other: {}",
                parent.join("::"),
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn each_layer_imports_only_from_the_layers_below() {
    let rank = |m: &ModPath| -> Option<usize> {
        let top = m.first()?;
        LAYERS
            .iter()
            .position(|layer| layer.contains(&top.as_str()))
    };
    let g = graph();
    let mut checked = 0;
    for (from, tos) in &g.edges {
        let Some(rf) = rank(from) else {
            assert!(
                from.is_empty(),
                "module `{}` is in no layer of LAYERS",
                from.join("::")
            );
            continue;
        };
        for to in tos {
            if to.first() == from.first() || to.is_empty() {
                continue;
            }
            let rt = rank(to).unwrap_or_else(|| panic!("`{}` is in no layer", to.join("::")));
            assert!(
                rt > rf || (rt == rf && LAYERS[rf].len() > 1),
                "`{}` (layer {rf}) imports `{}` (layer {rt}), a layer above it",
                from.join("::"),
                to.join("::")
            );
            checked += 1;
        }
    }
    assert!(
        checked > 50,
        "only {checked} imports between top-level modules were read"
    );
}

#[test]
fn the_reader_sees_a_planted_cycle() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(cycle_in(&edges).is_some());
    let me = vec!["node".to_string(), "keys".to_string()];
    let modules = BTreeSet::from([
        vec!["node".to_string()],
        vec!["node".to_string(), "core".to_string()],
        me.clone(),
    ]);
    let mut reexports = Reexports::new();
    reexports_of(
        &vec!["node".to_string()],
        "pub use core::{Core, SIGNING_LABEL};",
        &modules,
        &mut reexports,
    );
    let found = imports(
        &me,
        "use super::core::Core; use crate::node::core; use super::{Core, NodeError};",
        &modules,
        &reexports,
    );
    let core = vec!["node".to_string(), "core".to_string()];
    let node = vec!["node".to_string()];
    assert_eq!(found, vec![core.clone(), core.clone(), core, node]);
}
