//! The dependency rules of ARCHITECTURE.md, checked on the source and on cargo's own view of
//! the build: no import cycle between modules, the lab only where it may be, no acceptor code
//! and no lab crate in a production build, short functions, a store split by what it keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates of the workspace: (folder, the crate name other crates use for it).
const CRATES: [(&str, &str); 5] = [
    ("src", "mailboxd"),
    ("xml/src", "xml"),
    ("winrm/src", "winrm"),
    ("ps-templates/src", "ps_templates"),
    ("lab/src", "lab"),
];

/// Longest function allowed (lines, signature to closing brace, as rustfmt lays it out).
const MAX_FUNCTION_LINES: usize = 100;
/// Longest file allowed in `src/store`.
const MAX_STORE_FILE_LINES: usize = 600;

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut cycles = Vec::new();
    for (dir, _) in CRATES {
        let graph = module_graph(&root().join(dir));
        cycles.extend(
            find_cycles(&graph)
                .into_iter()
                .map(|c| format!("{dir}: {c}")),
        );
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn only_the_tools_import_the_lab() {
    let mut offenders = Vec::new();
    for file in rust_files(&root().join("src")) {
        let rel = file.strip_prefix(root()).unwrap_or(&file).to_path_buf();
        if rel.starts_with("src/tools") {
            continue;
        }
        if names_crate(&code_only(&read(&file)), "lab") {
            offenders.push(rel.display().to_string());
        }
    }
    assert!(
        offenders.is_empty(),
        "daemon modules that import the lab crate: {offenders:?}"
    );
    // The lab and the protocol crates never reach back into the daemon.
    for dir in ["lab/src", "winrm/src", "xml/src", "ps-templates/src"] {
        for file in rust_files(&root().join(dir)) {
            assert!(
                !code_only(&read(&file)).contains("mailboxd::"),
                "{} imports the daemon",
                file.display()
            );
        }
    }
}

#[test]
fn a_build_without_the_lab_feature_has_no_lab_no_acceptor_code_and_no_failpoints() {
    let tree = cargo(&[
        "tree",
        "--no-default-features",
        "-e",
        "normal",
        "-p",
        "mailboxd",
    ]);
    assert!(tree.contains("mailboxd-winrm"), "cargo tree said:\n{tree}");
    assert!(
        !tree.contains("mailboxd-lab"),
        "the lab crate is in the production build:\n{tree}"
    );
    let features = cargo(&[
        "tree",
        "--no-default-features",
        "-e",
        "features,normal",
        "-p",
        "mailboxd",
    ]);
    assert!(
        !features.contains("mailboxd-winrm feature \"acceptor\""),
        "the acceptor halves are in the production build:\n{features}"
    );
    // With the default features the lab (and through it the acceptor) is there: the check
    // above can see it when it is.
    let default = cargo(&["tree", "-e", "features,normal", "-p", "mailboxd"]);
    assert!(default.contains("mailboxd-lab"));
    assert!(default.contains("mailboxd-winrm feature \"acceptor\""));
    // The test failpoints (src/failpoint.rs) are compiled only with their feature, which the
    // default features turn on and a production build does not.
    let own = |extra: &[&str]| {
        let mut args = vec!["tree", "-e", "features,normal", "-p", "mailboxd"];
        args.extend(extra);
        args.extend(["-i", "mailboxd"]);
        cargo(&args)
    };
    let production = own(&["--no-default-features"]);
    assert!(
        !production.contains("mailboxd feature \"failpoints\""),
        "the test failpoints are in the production build:\n{production}"
    );
    assert!(own(&[]).contains("mailboxd feature \"failpoints\""));
}

#[test]
fn no_function_is_longer_than_a_screenful_or_two() {
    let mut long = Vec::new();
    for (dir, _) in CRATES {
        for file in rust_files(&root().join(dir)) {
            for (name, lines) in function_lengths(&read(&file)) {
                if lines > MAX_FUNCTION_LINES {
                    let rel = file
                        .strip_prefix(root())
                        .unwrap_or(&file)
                        .display()
                        .to_string();
                    long.push(format!("{rel}: {name} ({lines} lines)"));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_store_is_split_by_what_it_keeps() {
    let mut big = Vec::new();
    for file in rust_files(&root().join("src/store")) {
        let n = read(&file).lines().count();
        if n > MAX_STORE_FILE_LINES {
            big.push(format!("{} ({n} lines)", file.display()));
        }
    }
    assert!(
        big.is_empty(),
        "store files over {MAX_STORE_FILE_LINES} lines: {big:?}"
    );
    // The store is the only code that speaks SQL.
    for file in rust_files(&root().join("src")) {
        if file.starts_with(root().join("src/store")) {
            continue;
        }
        assert!(
            !code_only(&read(&file)).contains("sqlx::"),
            "{} speaks SQL outside the store",
            file.display()
        );
    }
}

#[test]
fn the_checkers_find_what_they_look_for() {
    // A checker that cannot fail proves nothing: feed each one a known offender.
    let text = "fn short() {\n    1;\n}\n\npub async fn long() {\n".to_owned()
        + &"    x();\n".repeat(120)
        + "}\n";
    let lengths = function_lengths(&text);
    assert_eq!(lengths[0], ("short".to_owned(), 3));
    assert_eq!(lengths[1], ("long".to_owned(), 122));

    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    graph.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    graph.insert("d".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(find_cycles(&graph), vec!["a -> b -> c -> a".to_owned()]);

    assert!(names_crate("let l = lab::Lab::start(cfg);", "lab"));
    assert!(!names_crate("crate::tools::lab::run(args)", "lab"));

    let refs = references(
        "use crate::{config, store::{Store, JobState}};\nuse super::soap::Envelope;\nlet x = crate::metrics::record();\n// crate::ignored\n",
        "winrm::error",
    );
    assert_eq!(
        refs,
        BTreeSet::from([
            "config".to_owned(),
            "store::Store".to_owned(),
            "store::JobState".to_owned(),
            "winrm::soap::Envelope".to_owned(),
            "metrics::record".to_owned(),
        ])
    );
}

/// Whether code names a path starting at crate `name` (`lab::x`, `use lab;`), as opposed to
/// a module of that name further down a path (`crate::tools::lab::…`).
fn names_crate(code: &str, name: &str) -> bool {
    let path = format!("{name}::");
    let alone = format!("use {name};");
    code.contains(&alone)
        || code.match_indices(&path).any(|(i, _)| {
            !code[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        })
}

// ---- the source, as modules ------------------------------------------------------------

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The module path of a file inside a crate's source folder: `store/jobs.rs` → `store::jobs`,
/// `store/mod.rs` → `store`, `lib.rs` → `` (the crate root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// Source with comments and string literals blanked, so neither can name a module.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let (mut in_str, mut in_line, mut in_block) = (false, false, 0usize);
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        if in_line {
            if c == '\n' {
                in_line = false;
                out.push('\n');
            }
            continue;
        }
        if in_block > 0 {
            if c == '*' && next == Some('/') {
                chars.next();
                in_block -= 1;
            } else if c == '/' && next == Some('*') {
                chars.next();
                in_block += 1;
            }
            out.push(if c == '\n' { '\n' } else { ' ' });
            continue;
        }
        if in_str {
            if c == '\\' {
                chars.next();
            } else if c == '"' {
                in_str = false;
            }
            out.push(if c == '\n' { '\n' } else { ' ' });
            continue;
        }
        match (c, next) {
            ('/', Some('/')) => in_line = true,
            ('/', Some('*')) => {
                chars.next();
                in_block = 1;
            }
            ('"', _) => {
                in_str = true;
                out.push(' ');
            }
            // A char literal holding a quote must not open a string.
            ('\'', Some('"')) => {
                chars.next();
                out.push_str("  ");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every path a file names through `crate::` or `super::`, as `module::…::item` from the
/// crate root (`use` trees with braces expanded).
fn references(text: &str, this_module: &str) -> BTreeSet<String> {
    let code = code_only(text);
    let parent: Vec<&str> = this_module.split("::").filter(|s| !s.is_empty()).collect();
    let parent = parent[..parent.len().saturating_sub(1)].join("::");
    let mut out = BTreeSet::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
        let mut at = 0;
        while let Some(i) = code[at..].find(prefix) {
            let start = at + i;
            at = start + prefix.len();
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for path in expand_tree(&code[at..]) {
                out.insert(if base.is_empty() {
                    path
                } else {
                    format!("{base}::{path}")
                });
            }
        }
    }
    out
}

/// `a::{b, c::{d}}` → `a::b`, `a::c::d`; `x::y` → `x::y`.
fn expand_tree(rest: &str) -> Vec<String> {
    let mut path = String::new();
    for (i, c) in rest.char_indices() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            path.push(c);
        } else if c == '{' && (path.is_empty() || path.ends_with("::")) {
            let inner = &rest[i + 1..i + 1 + matching_brace(&rest[i + 1..])];
            return split_top_level(inner)
                .into_iter()
                .flat_map(|part| expand_tree(part.trim()))
                .map(|p| format!("{path}{p}"))
                .collect();
        } else {
            break;
        }
    }
    let path = path.trim_end_matches(':').to_owned();
    if path.is_empty() || path == "self" {
        Vec::new()
    } else {
        vec![path.trim_end_matches("::self").to_owned()]
    }
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 1;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    s.len()
}

fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// Module → the modules it imports, within one crate. A reference resolves to the longest
/// module path it starts with; a module's use of its own ancestors or descendants (a parent
/// re-exporting its children, a child using its parent's error type) is structure, not an
/// import between parts, and is left out.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files(src);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let this = module_of(src, file);
        let entry = graph.entry(this.clone()).or_default();
        for r in references(&read(file), &this) {
            let Some(target) = resolve(&modules, &r) else {
                continue;
            };
            if !related(&this, &target) {
                entry.insert(target);
            }
        }
    }
    graph
}

fn resolve(modules: &BTreeSet<String>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn related(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x.is_empty() || y == x || y.starts_with(&format!("{x}::"));
    under(a, b) || under(b, a)
}

/// Each cycle once, as `a -> b -> a`, starting at its smallest module.
fn find_cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let min = path.iter().min().cloned().unwrap_or_default();
                    if &min == start {
                        found.insert(format!("{} -> {start}", path.join(" -> ")));
                    }
                } else if !path.contains(next) && next > start {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    found.into_iter().collect()
}

/// (name, lines) of every `fn` with a body, from its signature to its closing brace.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        // Product code only: a test may spell out a whole table of cases.
        let attr = i.checked_sub(1).map_or("", |p| lines[p].trim_start());
        let is_test = attr.starts_with("#[test]") || attr.starts_with("#[tokio::test");
        if let Some(name) = fn_name(line.trim_start()).filter(|_| !is_test) {
            let close = format!("{}}}", " ".repeat(indent));
            let end = (i..lines.len())
                .find(|&j| lines[j] == close || (j == i && line.trim_end().ends_with('}')));
            if let Some(end) = end.filter(|_| !line.trim_end().ends_with(';')) {
                out.push((name, end - i + 1));
                i = end;
            }
        }
        i += 1;
    }
    out
}

fn fn_name(line: &str) -> Option<String> {
    let mut rest = line;
    for word in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(word).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("async ").unwrap_or(rest);
    let name: String = rest
        .strip_prefix("fn ")?
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .args(["--offline", "--locked", "--color", "never"])
        .current_dir(root())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
