//! The house rules of the source tree, checked so they stay true: no source file holds
//! more than 600 lines before its tests, and no two source files import each other, even
//! through others (a circle makes neither readable alone).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Most lines of non-test code in one file.
const MAX_LINES: usize = 600;

/// Every `.rs` file under `src/`, by its path relative to the crate.
fn sources() -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).expect("read src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("read source");
                out.insert(p, text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

/// The lines before the first `#[cfg(test)]` (unit tests sit at the bottom).
fn non_test(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .collect()
}

/// A file's module path (`src/daemon/config/mod.rs` is `daemon::config`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        parts.pop();
    }
    if rel.starts_with("bin") {
        parts.insert(0, "#bin".into());
    }
    parts
}

#[test]
fn no_source_file_holds_more_than_600_lines_of_non_test_code() {
    let long: Vec<String> = sources()
        .iter()
        .map(|(p, t)| (p, non_test(t).len()))
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(p, n)| format!("{} ({n} lines)", p.display()))
        .collect();
    assert!(
        long.is_empty(),
        "split these by job (README: Layout of the source): {long:?}"
    );
}

#[test]
fn no_source_files_import_each_other_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources();
    let by_module: BTreeMap<Vec<String>, PathBuf> = files
        .keys()
        .map(|p| (module_of(&src, p), p.clone()))
        .collect();
    // The file that defines the longest prefix of a path.
    let resolve = |segs: &[String]| -> Option<PathBuf> {
        (1..=segs.len())
            .rev()
            .find_map(|n| by_module.get(&segs[..n]).cloned())
    };
    let path_re = |text: &str, prefix: &str| -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let segs: Vec<String> = rest[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            out.push(segs);
        }
        out
    };
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (file, text) in &files {
        let me = module_of(&src, file);
        let code: String = non_test(text)
            .into_iter()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut targets = BTreeSet::new();
        for segs in path_re(&code, "crate::") {
            targets.extend(resolve(&segs));
        }
        // `super::` from `a/b.rs` (module a::b) and from `a/b/mod.rs` (also a::b) is `a`.
        let parent: Vec<String> = me[..me.len().saturating_sub(1)].to_vec();
        for segs in path_re(&code, "super::") {
            let full: Vec<String> = parent.iter().cloned().chain(segs).collect();
            // A child using what its parent module defines is how Rust nests modules;
            // siblings importing each other is the circle this test is about.
            if let Some(t) = resolve(&full)
                && Some(&t) != by_module.get(&parent)
            {
                targets.insert(t);
            }
        }
        targets.remove(file);
        edges.insert(file.clone(), targets);
    }
    // Depth-first search for a back edge, reporting the circle it closes.
    fn visit(
        f: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
        found: &mut Vec<String>,
    ) {
        state.insert(f.clone(), 1);
        stack.push(f.clone());
        for t in edges.get(f).into_iter().flatten() {
            match state.get(t).copied().unwrap_or(0) {
                0 => visit(t, edges, state, stack, found),
                1 => {
                    let at = stack.iter().position(|s| s == t).unwrap_or(0);
                    let circle: Vec<String> = stack[at..]
                        .iter()
                        .chain(std::iter::once(t))
                        .map(|p| p.display().to_string())
                        .collect();
                    found.push(circle.join(" -> "));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(f.clone(), 2);
    }
    let mut state = BTreeMap::new();
    let mut found = Vec::new();
    for f in edges.keys() {
        if state.get(f).copied().unwrap_or(0) == 0 {
            visit(f, &edges, &mut state, &mut Vec::new(), &mut found);
        }
    }
    assert!(
        found.is_empty(),
        "source files import each other in a circle; move what both need to a module of its own:\n{}",
        found.join("\n")
    );
}
