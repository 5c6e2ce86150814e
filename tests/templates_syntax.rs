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
