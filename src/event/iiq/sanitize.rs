//! The copy of an IdentityIQ document the poison table may keep: the document rewritten
//! with every credential value removed. It is rebuilt from the parsed tree rather than
//! edited as text, so no spelling of an attribute can slip a value through.

use xml::{Element, escape};

use super::request::is_credential;

const REMOVED: &str = "[removed by mailboxd: credentials are never stored]";

/// The document as XML text again, with every credential value removed.
pub fn rewrite(root: &Element) -> String {
    let mut out = String::new();
    write(root, &mut out);
    out
}

/// Whether the element holds a credential's value (in a `value` attribute or its children).
fn holds_credential(e: &Element) -> bool {
    (e.name == "AttributeRequest" && e.attr("name").is_some_and(is_credential))
        || (e.name == "entry" && e.attr("key").is_some_and(is_credential))
}

fn write(e: &Element, out: &mut String) {
    let secret = holds_credential(e);
    out.push('<');
    out.push_str(&e.name);
    for (k, v) in &e.attrs {
        let v = if secret && k == "value" { REMOVED } else { v };
        out.push_str(&format!(" {k}=\"{}\"", escape(v)));
    }
    if secret || (e.children.is_empty() && e.text.trim().is_empty()) {
        out.push_str("/>");
        return;
    }
    out.push('>');
    out.push_str(&escape(e.text.as_str()));
    for c in &e.children {
        write(c, out);
    }
    out.push_str(&format!("</{}>", e.name));
}
