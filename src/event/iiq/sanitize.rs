//! The copy of an IdentityIQ document the poison table may keep: the document rewritten
//! with every credential value removed. It is rebuilt from the parsed tree rather than
//! edited as text, so no spelling of an attribute can slip a value through.

use xml::{Element, escape};

use super::request::is_credential;

const REMOVED: &str = "[removed by mailboxd: credentials are never stored]";

/// The document as XML text again, with every credential value removed. Written with a
/// stack of its own rather than by recursion: the sender decides how deep a tree is.
pub(crate) fn rewrite(root: &Element) -> String {
    let mut out = String::new();
    let mut pending = vec![Step::Open(root)];
    while let Some(step) = pending.pop() {
        match step {
            Step::Close(name) => out.push_str(&format!("</{name}>")),
            Step::Open(e) => {
                if open(e, &mut out) {
                    pending.push(Step::Close(&e.name));
                    pending.extend(e.children.iter().rev().map(Step::Open));
                }
            }
        }
    }
    out
}

/// What is left to write: an element, or the end tag of one whose children come first.
enum Step<'a> {
    Open(&'a Element),
    Close(&'a str),
}

/// Whether the element holds a credential's value (in a `value` attribute or its children).
fn holds_credential(e: &Element) -> bool {
    (e.name == "AttributeRequest" && e.attr("name").is_some_and(is_credential))
        || (e.name == "entry" && e.attr("key").is_some_and(is_credential))
}

/// Writes the start tag and text of `e`; `false` when it was written as empty (`<x/>`),
/// with neither children nor an end tag to follow.
fn open(e: &Element, out: &mut String) -> bool {
    let secret = holds_credential(e);
    out.push('<');
    out.push_str(&e.name);
    for (k, v) in &e.attrs {
        let v = if secret && k == "value" { REMOVED } else { v };
        out.push_str(&format!(" {k}=\"{}\"", escape(v)));
    }
    if secret || (e.children.is_empty() && e.text.trim().is_empty()) {
        out.push_str("/>");
        return false;
    }
    out.push('>');
    out.push_str(&escape(e.text.as_str()));
    true
}
