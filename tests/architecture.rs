//! The dependency rules of ARCHITECTURE.md, checked on the source and on cargo's own view of
//! the build: no import cycle between modules, the lab only where it may be, no acceptor code
//! and no lab crate in a production build, short functions, a store split by what it keeps.
//! And the map held to the territory: the module table's "uses" column is exactly what each
//! module imports, the walk of one event names functions that exist, and no comment cites a
//! file the repository does not have.

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

#[test]
fn the_table_checker_finds_rows_that_do_not_match_the_imports() {
    // The table: a row that lists too much, one that lists too little, one for a module that
    // is gone, a module without a row, a cell that is not a list.
    let md = "## The daemon's modules\n\n| module | what it is | uses |\n|---|---|---|\n\
              | `a` | x | `b` (why), `c` |\n| `b` | y | — |\n| `gone` | z | — |\n\
              | `d` | w | all of the above |\n";
    let (rows, unread) = module_table(md);
    assert_eq!(
        unread,
        vec![
            "line 8, row `d`: cannot read \"all of the above\": write names in backticks \
             separated by commas (a note in parentheses after a name), or — for none"
                .to_owned()
        ]
    );
    let mut imports = Imports::new();
    imports
        .entry("a".into())
        .or_default()
        .entry("b".into())
        .or_default()
        .insert("src/a.rs".into());
    imports
        .entry("b".into())
        .or_default()
        .entry("a".into())
        .or_default()
        .insert("src/b.rs".into());
    imports.entry("c".into()).or_default();
    let problems = compare_uses(&rows, &imports);
    assert!(
        problems[0].starts_with("line 5, row `a`: lists `c`, which it does not import"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("row `b`: does not list `a`, which src/b.rs imports"),
        "{problems:?}"
    );
    assert!(
        problems[2].starts_with("module `c` has no row"),
        "{problems:?}"
    );
    assert!(
        problems[3].contains("row `gone`: no src/gone.rs"),
        "{problems:?}"
    );
    assert_eq!(problems.len(), 4, "{problems:?}");
}

#[test]
fn the_citation_checker_finds_documents_that_are_not_in_the_repository() {
    // Citations: a missing document, a section of a document that is not named, and what
    // passes (a file that exists, a URL, an RFC's section, a list of sections).
    let here = root().join("tests/architecture.rs");
    let text = "// see notes/winrm.md and docs/operations.md, https://x.example/a/b.md,\n\
                // learn.microsoft.com/x/y.md, RFC 4121 §4.1, §4.2 and §4.3; design §3.\n";
    let found = citation_problems(&comments_only(text), &here);
    assert_eq!(
        found,
        vec![
            (
                1,
                "cites `notes/winrm.md`, which is not in the repository".to_owned()
            ),
            (
                2,
                "cites design §3.: a section of a document that is not in the repository"
                    .to_owned()
            ),
        ]
    );
    // Only comments are read in source: a path in a string literal is data.
    assert!(comments_only("let p = \"notes/x.md\"; // ok\n").trim() == "// ok");
    assert!(code_only("let s = r#\"// not a comment\"#; x").contains("; x"));
}

#[test]
fn the_walk_checker_finds_functions_that_do_not_exist() {
    assert!(function_exists("worker::Worker::claim_loop"));
    assert!(function_exists("store::Store::claim"));
    assert!(function_exists("winrm::client::Shell::run"));
    assert!(!function_exists("worker::Worker::no_such_function"));
    assert!(!function_exists("no_such_module::run"));
    assert!(function_exists("App::stop"));
    assert!(function_exists("cli::Cli"));
    assert!(!function_exists("cli::NoSuchType"));
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

// ---- the map: ARCHITECTURE.md held to the source ---------------------------------------

/// The workspace crates the daemon's modules import, as their code names them. The "uses"
/// column lists them like modules (no module of src/ has one of these names).
const WORKSPACE_CRATES: [(&str, &str); 4] = [
    ("winrm", "winrm/src"),
    ("xml", "xml/src"),
    ("ps_templates", "ps-templates/src"),
    ("lab", "lab/src"),
];

/// ARCHITECTURE.md's table of the daemon's modules has one row per top-level module of
/// `src/`, and its "uses" cell names exactly what that module (its children included)
/// imports: every daemon module named by a `crate::`/`super::` path, every workspace crate
/// named by its own path. Listed but not imported fails; imported but not listed fails.
///
/// How the cells are read: the first cell is one module name in backticks; the "uses" cell
/// is `—` (imports nothing) or names in backticks separated by commas, each optionally
/// followed by a note in parentheses, which is not read. Nothing else may stand in the
/// cell: no "all of the above", no "…"; outside systems (PostgreSQL, LDAP, RabbitMQ) are
/// said in the "what it is" cell, and third-party crates are Cargo.toml's business.
#[test]
fn the_module_table_says_what_each_module_imports() {
    let (rows, mut problems) = module_table(&read(&root().join("ARCHITECTURE.md")));
    problems.extend(compare_uses(
        &rows,
        &imports_by_top_module(&root().join("src")),
    ));
    assert!(
        problems.is_empty(),
        "ARCHITECTURE.md, the table of \"The daemon's modules\", does not match the imports of \
         src/<module>.rs and src/<module>/ (fix the row named):\n{}",
        problems.join("\n")
    );
}

/// A row of the module table: its line in ARCHITECTURE.md and what its "uses" cell lists.
#[derive(Debug)]
struct Row {
    line: usize,
    uses: BTreeSet<String>,
}

/// The rows of the first table after "## The daemon's modules", by module, and what could
/// not be read.
fn module_table(md: &str) -> (BTreeMap<String, Row>, Vec<String>) {
    let mut rows = BTreeMap::new();
    let mut problems = Vec::new();
    let Some(start) = md
        .lines()
        .position(|l| l.starts_with("## The daemon's modules"))
    else {
        return (rows, vec!["no \"## The daemon's modules\" section".into()]);
    };
    let table = md
        .lines()
        .enumerate()
        .skip(start + 1)
        .skip_while(|(_, l)| !l.starts_with('|'))
        .take_while(|(_, l)| l.starts_with('|'))
        .skip(2); // the header and the separator
    for (i, line) in table {
        let n = i + 1;
        let Some((first, uses)) = first_and_last_cells(line) else {
            problems.push(format!("line {n}: not a row of three cells"));
            continue;
        };
        let module = match names_in_cell(first).as_deref() {
            Ok([one]) => one.clone(),
            _ => {
                problems.push(format!(
                    "line {n}: the first cell must be one module name in backticks: {first}"
                ));
                continue;
            }
        };
        match names_in_cell(uses) {
            Ok(names) => {
                let row = Row {
                    line: n,
                    uses: names.into_iter().collect(),
                };
                if rows.insert(module.clone(), row).is_some() {
                    problems.push(format!("line {n}, row `{module}`: a second row"));
                }
            }
            Err(e) => problems.push(format!("line {n}, row `{module}`: {e}")),
        }
    }
    (rows, problems)
}

fn first_and_last_cells(line: &str) -> Option<(&str, &str)> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    let (first, rest) = inner.split_once('|')?;
    let (_, last) = rest.rsplit_once('|')?;
    Some((first.trim(), last.trim()))
}

/// The names a cell lists: `—` for none, or `` `name` (note), `name` ``.
fn names_in_cell(cell: &str) -> Result<Vec<String>, String> {
    if cell == "—" {
        return Ok(Vec::new());
    }
    without_parentheses(cell)
        .split(',')
        .map(|part| {
            let part = part.trim();
            part.strip_prefix('`')
                .and_then(|p| p.strip_suffix('`'))
                .filter(|n| {
                    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
                .map(str::to_owned)
                .ok_or_else(|| {
                    format!(
                        "cannot read {part:?}: write names in backticks separated by commas \
                         (a note in parentheses after a name), or — for none"
                    )
                })
        })
        .collect()
}

fn without_parentheses(s: &str) -> String {
    let mut depth = 0usize;
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Module → (what it imports → the files that import it), for every top-level module of
/// `src` (one that imports nothing maps to nothing).
type Imports = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn imports_by_top_module(src: &Path) -> Imports {
    let files = rust_files(src);
    let tops: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    let mut out = Imports::new();
    for file in &files {
        let Some(top) = top_module(src, file) else {
            continue;
        };
        let text = read(file);
        let code = code_only(&text);
        let rel = file
            .strip_prefix(root())
            .unwrap_or(file)
            .display()
            .to_string();
        let modules = references(&text, &module_of(src, file))
            .into_iter()
            .filter_map(|r| r.split("::").next().map(str::to_owned))
            .filter(|m| tops.contains(m));
        let crates = WORKSPACE_CRATES
            .iter()
            .filter(|(c, _)| names_crate(&code, c))
            .map(|(c, _)| (*c).to_owned());
        let entry = out.entry(top.clone()).or_default();
        for used in modules.chain(crates).filter(|u| *u != top) {
            entry.entry(used).or_default().insert(rel.clone());
        }
    }
    out
}

/// `store` for `src/store/jobs/mod.rs`; `None` for the crate root (`lib.rs`, `main.rs`).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let module = module_of(src, file);
    let top = module.split("::").next().unwrap_or("");
    (!top.is_empty()).then(|| top.to_owned())
}

/// Each difference between the table and the imports, as the row to fix and how.
fn compare_uses(rows: &BTreeMap<String, Row>, imports: &Imports) -> Vec<String> {
    let mut problems = Vec::new();
    for (module, used) in imports {
        let Some(row) = rows.get(module) else {
            problems.push(format!(
                "module `{module}` has no row: add one, its uses cell {}",
                uses_cell(used.keys())
            ));
            continue;
        };
        let mut wrong = Vec::new();
        for name in row.uses.iter().filter(|n| !used.contains_key(*n)) {
            let known =
                imports.contains_key(name) || WORKSPACE_CRATES.iter().any(|(c, _)| c == name);
            wrong.push(if known {
                format!("lists `{name}`, which it does not import")
            } else {
                format!("lists `{name}`, neither a module of src/ nor a workspace crate")
            });
        }
        for (name, files) in used.iter().filter(|(n, _)| !row.uses.contains(*n)) {
            let files: Vec<&str> = files.iter().map(String::as_str).collect();
            wrong.push(format!(
                "does not list `{name}`, which {} imports",
                files.join(", ")
            ));
        }
        if !wrong.is_empty() {
            problems.push(format!(
                "line {}, row `{module}`: {}; its uses cell: {}",
                row.line,
                wrong.join("; "),
                uses_cell(used.keys())
            ));
        }
    }
    for (module, row) in rows.iter().filter(|(m, _)| !imports.contains_key(*m)) {
        problems.push(format!(
            "line {}, row `{module}`: no src/{module}.rs or src/{module}/: rename or remove the row",
            row.line
        ));
    }
    problems
}

fn uses_cell<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let cell: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if cell.is_empty() {
        "—".into()
    } else {
        cell.join(", ")
    }
}

/// The sections of ARCHITECTURE.md whose backticked paths (`module::function`,
/// `module::Type::method`, `Type::method`, `module::Type`) must name what the source has.
const NAMING_SECTIONS: [&str; 3] = ["## Entry points", "## Follow one event", "## Job states"];

/// Every path that ARCHITECTURE.md's entry points, walk of one event and job states name
/// exists: the module is a file or folder of src/ (or of a workspace crate, `winrm::…`; none
/// for a type of anywhere in the crate), and a `fn` of that name is in it or its children
/// (with the type named there in an `impl`), or a type of that name when it is capitalised.
#[test]
fn the_map_names_functions_that_exist() {
    let md = read(&root().join("ARCHITECTURE.md"));
    let mut missing = Vec::new();
    let mut named = 0;
    for heading in NAMING_SECTIONS {
        let paths: BTreeSet<&str> = section(&md, heading)
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| {
                s.contains("::") && s.chars().all(|c| c.is_alphanumeric() || "_:".contains(c))
            })
            .collect();
        named += paths.len();
        missing.extend(
            paths
                .into_iter()
                .filter(|p| !function_exists(p))
                .map(|p| format!("{heading}: {p}")),
        );
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names what the source does not have (rename it there):\n{}",
        missing.join("\n")
    );
    assert!(named >= 30, "only {named} paths named");
}

/// The text of a `## ` section, up to the next one.
fn section<'a>(md: &'a str, heading: &str) -> &'a str {
    let Some(start) = md.find(heading) else {
        return "";
    };
    let body = &md[start + heading.len()..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

fn function_exists(path: &str) -> bool {
    let parts: Vec<&str> = path.split("::").collect();
    let (src, parts) = match WORKSPACE_CRATES.iter().find(|(c, _)| *c == parts[0]) {
        Some((_, dir)) => (root().join(dir), &parts[1..]),
        None => (root().join("src"), &parts[..]),
    };
    // The longest prefix that is a module: a file, or a folder with its `mod.rs`; none (the
    // whole crate) before a type.
    let Some((n, files)) = (0..parts.len()).rev().find_map(|n| {
        let dir = src.join(parts[..n].join("/"));
        let mut files = rust_files(&dir);
        files.extend(Some(dir.with_extension("rs")).filter(|f| f.is_file()));
        (!files.is_empty()).then_some((n, files))
    }) else {
        return false;
    };
    let code: String = files.iter().map(|f| code_only(&read(f))).collect();
    let defines = |name: &str| {
        ["(", "<"]
            .iter()
            .any(|open| code.contains(&format!("fn {name}{open}")))
    };
    let is_type = |name: &str| {
        ["struct", "enum", "trait"]
            .iter()
            .any(|kind| code.contains(&format!("{kind} {name}")))
    };
    match &parts[n..] {
        [ty] if ty.starts_with(char::is_uppercase) => is_type(ty),
        [function] => defines(function),
        [ty, method] => code.contains(&format!("impl {ty}")) && defines(method),
        _ => false,
    }
}

// ---- citations: comments name only what the repository has ----------------------------

/// Where comments start, by file extension; a Markdown file counts as all comment.
const COMMENT_MARKS: [(&str, &str); 7] = [
    ("rs", "//"),
    ("ps1", "#"),
    ("sh", "#"),
    ("toml", "#"),
    ("yaml", "#"),
    ("yml", "#"),
    ("sql", "--"),
];

/// A word in a comment cites a file when its last part ends with one of these, and it is a
/// path (a folder, a slash, a name) or a bare Markdown file name.
const CITED_EXTENSIONS: [&str; 14] = [
    "md", "rs", "ps1", "sh", "toml", "yaml", "yml", "sql", "json", "py", "txt", "html", "css", "js",
];

/// No comment (in the kinds of file above, and no Markdown file) cites a file the repository
/// does not have: a cited path must exist relative to the citing file's folder or one of
/// its parents up to the repository root (so `src/worker.rs` may cite a file of `src/` by
/// its path from there, and anything may cite `docs/operations.md`). Not citations: URLs
/// (with a scheme, or a host name as their first part), absolute paths, globs, build output
/// under `target/`. A section sign must follow what it is a section of, and that must be
/// checkable: a cited file, an RFC by number or an `[MS-…]` specification; a bare word
/// before it (the team's design or research notes) names a document the repository does
/// not have.
///
/// `migrations/` is not read: sqlx checksums an applied migration's whole text, comments
/// included, so a shipped migration stays as it is (`0001_jobs.sql` still cites the design's
/// job states; ARCHITECTURE.md has them).
#[test]
fn no_comment_cites_a_file_that_is_not_in_the_repository() {
    let mut problems = Vec::new();
    for file in repo_files(root()) {
        let Some(text) = commentary(&file) else {
            continue;
        };
        let rel = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .display()
            .to_string();
        for (line, problem) in citation_problems(&text, &file) {
            problems.push(format!("{rel}:{line}: {problem}"));
        }
    }
    assert!(
        problems.is_empty(),
        "comments that cite what is not in the repository (say what matters in the comment, or \
         bring it into docs/ and cite that):\n{}",
        problems.join("\n")
    );
}

/// Every file of the repository but git's, build output, fuzzing data and the migrations
/// (see above).
fn repo_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                let skip = name.starts_with('.')
                    || ["target", "corpus", "artifacts"].contains(&name.as_str())
                    || p == root().join("migrations");
                if !skip {
                    stack.push(p);
                }
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The file's comments, everything else blanked (lines kept, so offsets give line numbers);
/// `None` for a kind of file whose comments are not checked.
fn commentary(file: &Path) -> Option<String> {
    let ext = file.extension()?.to_str()?;
    if ext == "md" {
        return Some(read(file));
    }
    let (_, mark) = COMMENT_MARKS.iter().find(|(e, _)| *e == ext)?;
    let text = read(file);
    if ext == "rs" {
        return Some(comments_only(&text));
    }
    let mut out = String::with_capacity(text.len());
    let mut in_block = false; // PowerShell's <# … #>
    for line in text.lines() {
        let start = if in_block {
            Some(0)
        } else {
            line.match_indices(mark).map(|(i, _)| i).find(|&i| {
                i == 0
                    || line[..i].ends_with(char::is_whitespace)
                    || (ext == "ps1" && line[..i].ends_with('<'))
            })
        };
        if ext == "ps1" {
            if line.contains("<#") {
                in_block = true;
            }
            if line.contains("#>") {
                in_block = false;
            }
        }
        match start {
            Some(i) => {
                out.push_str(&" ".repeat(i));
                out.push_str(&line[i..]);
            }
            None => out.push_str(&" ".repeat(line.len())),
        }
        out.push('\n');
    }
    Some(out)
}

/// (line, what is wrong) for each citation in `text` that does not resolve from `file`.
fn citation_problems(text: &str, file: &Path) -> Vec<(usize, String)> {
    let words: Vec<(usize, &str)> = text
        .split_whitespace()
        .map(|w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
        .collect();
    let line = |at: usize| text[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (i, &(at, word)) in words.iter().enumerate() {
        if is_url(word) {
            continue;
        }
        let cited = bare_word(word);
        if is_citation(cited) && !resolves(cited, file) {
            out.push((
                line(at),
                format!("cites `{cited}`, which is not in the repository"),
            ));
        }
        if bare_word(word).starts_with('§') && !section_of_something_known(&words[..i]) {
            let before = i.checked_sub(1).map_or("", |j| words[j].1);
            out.push((
                line(at),
                format!(
                    "cites {before} {word}: a section of a document that is not in the repository"
                ),
            ));
        }
    }
    out
}

/// `https://…`, `www.…`, or a host name and a path (`learn.microsoft.com/…`).
fn is_url(word: &str) -> bool {
    let word = bare_word(word);
    word.contains("://")
        || word.starts_with("www.")
        || word
            .split_once('/')
            .is_some_and(|(host, _)| host.contains('.'))
}

/// A word without the punctuation around it, and without a `:line` after a path.
fn bare_word(word: &str) -> &str {
    let w = word.trim_matches(|c: char| "`'\"()[]{},;:.!?*<>|".contains(c));
    w.split_once(':').map_or(w, |(path, _)| path)
}

fn is_citation(word: &str) -> bool {
    let Some((stem, ext)) = word
        .rsplit('/')
        .next()
        .and_then(|last| last.rsplit_once('.'))
    else {
        return false;
    };
    !stem.is_empty()
        && CITED_EXTENSIONS.contains(&ext)
        && (word.contains('/') || ext == "md")
        && !word.starts_with(['/', '~', '$', '%', '.'])
        && !word.starts_with("target/")
        && word
            .chars()
            .all(|c| c.is_alphanumeric() || "_-./".contains(c))
}

fn resolves(cited: &str, file: &Path) -> bool {
    file.ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(root()))
        .any(|d| d.join(cited).exists())
}

/// Whether the words before a section sign (skipping the earlier sections of a list, as in
/// RFC 4121 §4.1.1, §4.1.2 and §4.1.3, and the comment markers of a new line) name
/// something checkable: a cited file, an RFC by number, an `[MS-…]` specification.
fn section_of_something_known(before: &[(usize, &str)]) -> bool {
    let mut rest = before
        .iter()
        .rev()
        .map(|(_, w)| bare_word(w))
        .filter(|w| w.is_empty() || !w.chars().all(|c| "/!#-".contains(c)));
    let head = rest.find(|w| !(w.starts_with('§') || ["and", "or", "to", "&"].contains(w)));
    match head {
        Some(h) if h.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => {
            rest.next().is_some_and(|w| w.ends_with("RFC"))
        }
        Some(h) => h.starts_with("MS-") || is_citation(h),
        None => false,
    }
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

/// The module path of a file inside a crate's source folder: `src/store/audit.rs` gives
/// `store::audit`, `src/store/mod.rs` gives `store`, `src/lib.rs` the crate root (empty).
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
    split_source(text).0
}

/// Source with everything but its comments blanked: what the comments cite.
fn comments_only(text: &str) -> String {
    split_source(text).1
}

/// What a stretch of source is.
#[derive(Clone, Copy)]
enum Part {
    Code,
    Comment,
    Literal,
}

/// The source as (code, comments): each keeps the other's characters and every literal as
/// spaces, and every line break, so a position in either is a position in the source.
fn split_source(text: &str) -> (String, String) {
    let chars: Vec<char> = text.chars().collect();
    let mut code = String::with_capacity(text.len());
    let mut comments = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let (len, part) = part_at(&chars[i..], i > 0 && is_ident(chars[i - 1]));
        for &c in &chars[i..(i + len).min(chars.len())] {
            let (to_code, to_comments) = match part {
                Part::Code => (c, blank(c)),
                Part::Comment => (blank(c), c),
                Part::Literal => (blank(c), blank(c)),
            };
            code.push(to_code);
            comments.push(to_comments);
        }
        i += len.max(1);
    }
    (code, comments)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The length and kind of what starts at `s[0]`; `after_ident`: the character before is
/// part of an identifier (so an `r` there does not open a raw string).
fn part_at(s: &[char], after_ident: bool) -> (usize, Part) {
    let at = |i: usize| s.get(i).copied();
    match (s[0], at(1)) {
        ('/', Some('/')) => (
            s.iter().position(|&c| c == '\n').unwrap_or(s.len()),
            Part::Comment,
        ),
        ('/', Some('*')) => (block_comment_len(s), Part::Comment),
        ('"', _) => (string_len(s), Part::Literal),
        ('r', Some('"' | '#')) if !after_ident => match raw_string_len(s) {
            Some(n) => (n, Part::Literal),
            None => (1, Part::Code),
        },
        ('b', Some('r')) if !after_ident => match raw_string_len(&s[1..]) {
            Some(n) => (n + 1, Part::Literal),
            None => (1, Part::Code),
        },
        // A char literal ('"', '\'', '\u{22}'), not a lifetime.
        ('\'', Some('\\')) => match s.iter().skip(2).position(|&c| c == '\'') {
            Some(p) if p < 10 => (p + 3, Part::Literal),
            _ => (1, Part::Code),
        },
        ('\'', Some(_)) if at(2) == Some('\'') => (3, Part::Literal),
        _ => (1, Part::Code),
    }
}

fn block_comment_len(s: &[char]) -> usize {
    let mut depth = 0;
    let mut i = 0;
    while i + 1 < s.len() {
        match (s[i], s[i + 1]) {
            ('/', '*') => {
                depth += 1;
                i += 2;
            }
            ('*', '/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    s.len()
}

fn string_len(s: &[char]) -> usize {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

/// `r"…"`, `r#"…"#`: its length, or `None` when `s` does not start one.
fn raw_string_len(s: &[char]) -> Option<usize> {
    let hashes = s[1..].iter().take_while(|&&c| c == '#').count();
    if s.get(1 + hashes) != Some(&'"') {
        return None;
    }
    let body = 2 + hashes;
    (body..s.len())
        .find(|&i| {
            s[i] == '"'
                && s[i + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|&&c| c == '#')
                    .count()
                    == hashes
        })
        .map(|i| i + 1 + hashes)
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
