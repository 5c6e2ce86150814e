//! The PowerShell in ps-templates/ cannot run on these machines, so its syntax is checked
//! with a real PowerShell grammar (tree-sitter-powershell): a typo in a template must fail
//! here, not on the Windows host.

use ps_templates::{BOOTSTRAP, SERVE, Template};

fn syntax_errors(source: &str) -> Vec<String> {
    let mut parser = tree_sitter::Parser::new();
    parser
        .set_language(&tree_sitter_powershell::LANGUAGE.into())
        .expect("grammar loads");
    let tree = parser.parse(source, None).expect("parses");
    let mut errors = Vec::new();
    let mut cursor = tree.walk();
    let mut stack = vec![tree.root_node()];
    while let Some(node) = stack.pop() {
        if node.is_error() || node.is_missing() {
            let p = node.start_position();
            let line = source.lines().nth(p.row).unwrap_or("");
            errors.push(format!(
                "line {}:{} {}: {line}",
                p.row + 1,
                p.column + 1,
                node.kind()
            ));
        }
        stack.extend(node.children(&mut cursor));
    }
    errors
}

#[test]
fn the_bootstrap_and_every_template_parse_as_powershell() {
    let mut sources = vec![
        ("bootstrap".to_owned(), BOOTSTRAP.to_owned()),
        ("serve".to_owned(), SERVE.to_owned()),
    ];
    for t in Template::ALL {
        sources.push((t.name().to_owned(), t.script()));
    }
    for (name, source) in sources {
        let errors = syntax_errors(&source);
        assert!(
            errors.is_empty(),
            "{name} has syntax errors:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn the_grammar_does_catch_broken_powershell() {
    // Guards the check above: a grammar that accepted anything would prove nothing.
    assert!(!syntax_errors("foreach ($a in $b) { if ($a -eq 1) { 'x' }").is_empty());
    assert!(!syntax_errors("$x = @{ a = 1; b = ").is_empty());
}

/// The cmdlets that reach Exchange or the host's session set-up. Their errors must stop the
/// account's try block: Import-PSSession's proxy functions do not see the script's
/// `$ErrorActionPreference`, so a failure there would be a non-terminating error the template
/// reports as success.
const GUARDED: &[&str] = &[
    "Enable-RemoteMailbox",
    "Set-RemoteMailbox",
    "Get-RemoteMailbox",
    "Set-ADServerSettings",
    "Add-PSSnapin",
    "New-PSSession",
    "Import-PSSession",
    "New-PSSessionOption",
];

/// Calls of a guarded cmdlet that pass no `-ErrorAction`, directly or in a splatted
/// hashtable (`@common`, or a `.Clone()` of one) that holds `ErrorAction`.
fn calls_without_error_action(source: &str) -> Vec<String> {
    let mut parser = tree_sitter::Parser::new();
    parser
        .set_language(&tree_sitter_powershell::LANGUAGE.into())
        .expect("grammar loads");
    let tree = parser.parse(source, None).expect("parses");
    let mut missing = Vec::new();
    let mut cursor = tree.walk();
    let mut stack = vec![tree.root_node()];
    while let Some(node) = stack.pop() {
        stack.extend(node.children(&mut cursor));
        if node.kind() != "command" {
            continue;
        }
        let text = &source[node.byte_range()];
        let name = text.split_whitespace().next().unwrap_or("");
        if !GUARDED.iter().any(|g| g.eq_ignore_ascii_case(name)) {
            continue;
        }
        let splats_error_action = text
            .split_whitespace()
            .filter_map(|w| w.strip_prefix('@'))
            .any(|var| hashtable_has_error_action(source, var, 0));
        if !text.contains("-ErrorAction") && !splats_error_action {
            missing.push(format!("line {}: {text}", node.start_position().row + 1));
        }
    }
    missing
}

/// Whether `$var` is assigned a hashtable literal holding `ErrorAction`, or a clone of one.
fn hashtable_has_error_action(source: &str, var: &str, depth: u8) -> bool {
    let assignment = format!("${var} = ");
    let Some(at) = source.find(&assignment) else {
        return false;
    };
    let rhs = &source[at + assignment.len()..];
    if let Some(body) = rhs.strip_prefix("@{") {
        return body
            .split('}')
            .next()
            .is_some_and(|b| b.contains("ErrorAction"));
    }
    let cloned = rhs
        .strip_prefix('$')
        .and_then(|r| r.split_once(".Clone()"))
        .map(|(other, _)| other);
    match cloned {
        Some(other) if depth < 4 => hashtable_has_error_action(source, other, depth + 1),
        _ => false,
    }
}

#[test]
fn every_exchange_cmdlet_call_passes_error_action() {
    let mut sources = vec![("serve".to_owned(), SERVE.to_owned())];
    for t in Template::ALL {
        sources.push((t.name().to_owned(), t.script()));
    }
    for (name, source) in sources {
        let missing = calls_without_error_action(&source);
        assert!(missing.is_empty(), "{name}:\n{}", missing.join("\n"));
    }
    // The check catches the old shape: a call relying on the script's preference.
    let planted = "$common = @{ Identity = 'x' }\nEnable-RemoteMailbox @common -Archive\nGet-RemoteMailbox -Identity x -ErrorAction Stop\n";
    let missing = calls_without_error_action(planted);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(missing[0].contains("line 2"), "{missing:?}");
}
