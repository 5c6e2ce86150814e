//! A small element tree over quick-xml, for SOAP envelopes (a few KB each): parse once,
//! then look elements up by namespace URI and local name, never by prefix (every WinRM
//! client and server picks its own prefixes).

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
                    ..Element::default()
                };
                for a in e.attributes() {
                    let a = a.map_err(|e| XmlError(e.to_string()))?;
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| XmlError(e.to_string()))?;
                    el.attrs
                        .push((a.key.local_name().as_ref().to_owned(), value.into_owned()));
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

    /// First descendant (depth-first) with this name.
    pub fn find(&self, ns: &str, name: &str) -> Option<&Element> {
        for c in &self.children {
            if c.is(ns, name) {
                return Some(c);
            }
            if let Some(f) = c.find(ns, name) {
                return Some(f);
            }
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
    fn dtds_and_broken_documents_are_refused() {
        assert!(parse(r#"<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>"#).is_err());
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("").is_err());
        assert!(parse("<a>&bogus;</a>").is_err());
    }
}
