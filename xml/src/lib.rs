//! A small element tree over quick-xml, for SOAP envelopes (a few KB each): parse once,
//! then look elements up by namespace URI and local name, never by prefix (every WinRM
//! client and server picks its own prefixes).
//!
//! The sender decides how deep a document nests, so nothing here recurses over the tree:
//! parsing refuses more than [`MAX_DEPTH`] levels, and searching and dropping walk it with
//! a stack of their own (a 50,000-level tree dropped by the default recursive drop
//! overflows the thread's stack).

pub use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub ns: String,
    pub name: String,
    /// (local name, value), unescaped.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// Concatenated text content directly inside this element, unescaped.
    pub text: String,
}

/// How deep elements may nest: far beyond any SOAP envelope or IdentityIQ plan (a dozen
/// levels), far below what any recursion over the tree could not afford.
pub const MAX_DEPTH: usize = 256;

impl Drop for Element {
    /// Drops the subtree iteratively: each descendant is emptied of its children before
    /// it is dropped, so no drop recurses.
    fn drop(&mut self) {
        let mut pending = std::mem::take(&mut self.children);
        while let Some(mut e) = pending.pop() {
            pending.append(&mut e.children);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML: {0}")]
pub struct XmlError(pub String);

fn predefined_entity(name: &str) -> Option<&'static str> {
    Some(match name {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "quot" => "\"",
        "apos" => "'",
        _ => return None,
    })
}

/// Parses a document into its root element. DTDs are refused: SOAP forbids them, and
/// refusing them keeps entity expansion out entirely.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    parse_doc(text, false)
}

/// Like `parse`, but a document type declaration that only names an external DTD
/// (`<!DOCTYPE ProvisioningPlan PUBLIC "sailpoint.dtd" "sailpoint.dtd">`, as IdentityIQ
/// writes) is accepted and ignored — never fetched. An internal subset, where entities
/// would be declared, is still refused, so no entity is ever expanded (billion laughs).
pub fn parse_allowing_external_doctype(text: &str) -> Result<Element, XmlError> {
    parse_doc(text, true)
}

fn parse_doc(text: &str, external_doctype_ok: bool) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| XmlError(e.to_string()))?;
        let ns = match resolved {
            ResolveResult::Bound(ns) => ns.as_ref().to_owned(),
            _ => String::new(),
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let mut el = Element {
                    ns,
                    name: e.local_name().as_ref().to_owned(),
                    attrs: Vec::new(),
                    children: Vec::new(),
                    text: String::new(),
                };
                for a in e.attributes() {
                    let a = a.map_err(|e| XmlError(e.to_string()))?;
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| XmlError(e.to_string()))?;
                    el.attrs
                        .push((a.key.local_name().as_ref().to_owned(), value.into_owned()));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError(format!(
                        "elements nest more than {MAX_DEPTH} levels deep"
                    )));
                }
                if matches!(event, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => return Ok(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| XmlError("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let raw = t.xml10_content();
                    let un =
                        quick_xml::escape::unescape(&raw).map_err(|e| XmlError(e.to_string()))?;
                    top.text.push_str(&un);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    if let Ok(Some(c)) = r.resolve_char_ref() {
                        top.text.push(c);
                    } else {
                        let name = r.xml10_content();
                        let v = predefined_entity(&name)
                            .ok_or_else(|| XmlError(format!("unknown entity &{name};")))?;
                        top.text.push_str(v);
                    }
                }
            }
            Event::DocType(d) => {
                let has_subset = d.as_ref().contains(['[', '<']);
                if !external_doctype_ok || has_subset {
                    return Err(XmlError(
                        "a DTD with declarations is not allowed (entities are never expanded)"
                            .into(),
                    ));
                }
            }
            Event::Eof => return Err(XmlError("document ended before its root element".into())),
            _ => {}
        }
    }
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// Follows a path of (namespace, local name) steps from this element.
    pub fn path(&self, steps: &[(&str, &str)]) -> Option<&Element> {
        let mut el = self;
        for (ns, name) in steps {
            el = el.child(ns, name)?;
        }
        Some(el)
    }

    /// First descendant (depth-first, document order) with this name; walked with a stack
    /// of its own, not by recursion.
    pub fn find(&self, ns: &str, name: &str) -> Option<&Element> {
        let mut pending: Vec<&Element> = self.children.iter().rev().collect();
        while let Some(e) = pending.pop() {
            if e.is(ns, name) {
                return Some(e);
            }
            pending.extend(e.children.iter().rev());
        }
        None
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn trimmed_text(&self) -> &str {
        self.text.trim()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_resolve_whatever_the_prefix() {
        let a =
            parse(r#"<a:X xmlns:a="urn:n"><a:Y k="v&amp;w">t&lt;1&#65;</a:Y><Z/></a:X>"#).unwrap();
        let b = parse(r#"<X xmlns="urn:n"><Y k="v&amp;w">t&lt;1A</Y><Z xmlns=""/></X>"#).unwrap();
        for doc in [&a, &b] {
            assert!(doc.is("urn:n", "X"));
            let y = doc.child("urn:n", "Y").unwrap();
            assert_eq!(y.text, "t<1A");
            assert_eq!(y.attr("k"), Some("v&w"));
        }
    }

    #[test]
    fn find_walks_in_document_order() {
        let doc = parse("<r><a><x n='1'/></a><x n='2'/></r>").unwrap();
        assert_eq!(doc.find("", "x").and_then(|x| x.attr("n")), Some("1"));
        assert!(doc.find("", "nothing").is_none());
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused_and_deep_trees_drop_without_recursion() {
        let nested = |n: usize| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
        assert!(parse(&nested(MAX_DEPTH)).is_ok());
        let err = parse(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(err.0.contains("nest more than 256"), "{err}");
        let err = parse(&nested(50_000)).unwrap_err();
        assert!(err.0.contains("nest more than"), "{err}");
        // A tree deeper than the parser allows (built by code) still drops on a small stack.
        let deep = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let mut root = Element::default();
                for _ in 0..200_000 {
                    let mut parent = Element::default();
                    parent.children.push(root);
                    root = parent;
                }
                drop(root);
            })
            .unwrap();
        deep.join()
            .expect("dropping a deep tree does not overflow the stack");
    }

    #[test]
    fn dtds_and_broken_documents_are_refused() {
        assert!(parse(r#"<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>"#).is_err());
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("").is_err());
        assert!(parse("<a>&bogus;</a>").is_err());
    }
}
