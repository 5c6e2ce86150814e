//! Reading one `AccountRequest`: its named values, from `AttributeRequest`s and from its
//! `Attributes` map, and which of those names are credentials. Names are matched on the
//! local name only, as IdentityIQ writes no namespaces.

use xml::Element;

pub use super::super::credentials::is_credential;

/// The children of `e` with this local name.
pub(super) fn children<'a>(
    e: &'a Element,
    name: &'a str,
) -> impl Iterator<Item = &'a Element> + 'a {
    e.children.iter().filter(move |c| c.name == name)
}

/// Every element of the request that names a value, with its name: each
/// `AttributeRequest name=…` and each `Attributes/Map/entry key=…`.
fn named_elements(req: &Element) -> impl Iterator<Item = (&str, &Element)> {
    let requests = children(req, "AttributeRequest").filter_map(|c| Some((c.attr("name")?, c)));
    let entries = children(req, "Attributes")
        .flat_map(|a| children(a, "Map"))
        .flat_map(|m| children(m, "entry"))
        .filter_map(|e| Some((e.attr("key")?, e)));
    requests.chain(entries)
}

/// The value of an `AttributeRequest` or Map `entry`: its `value` attribute, else the text
/// of `<Value><String>…</String></Value>` (or `<Value>…</Value>`).
fn value_of(e: &Element) -> Option<String> {
    if let Some(v) = e.attr("value") {
        return Some(v.to_owned());
    }
    let v = children(e, "Value").next()?;
    let inner = children(v, "String")
        .next()
        .map_or(v.text.as_str(), |s| s.text.as_str());
    Some(inner.trim().to_owned())
}

/// Names of the credential attributes the request carries (their values are never read).
pub(crate) fn credential_names(req: &Element) -> impl Iterator<Item = &str> {
    named_elements(req)
        .map(|(name, _)| name)
        .filter(|name| is_credential(name))
}

/// Whether the request sets `IIQDisabled` to true: IdentityIQ's way to disable in a Modify.
pub(crate) fn sets_disabled(req: &Element) -> bool {
    named_elements(req).any(|(n, e)| {
        n.eq_ignore_ascii_case("IIQDisabled")
            && value_of(e).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    })
}

/// What a Modify sets that makes it a mover: a new alias, UPN or primary address.
const RENAME_ATTRIBUTES: [&str; 3] = ["mailNickname", "userPrincipalName", "mail"];

/// Whether the request sets (op `Set`, or no op) one of [`RENAME_ATTRIBUTES`].
pub(crate) fn renames(req: &Element) -> bool {
    children(req, "AttributeRequest").any(|c| {
        c.attr("name")
            .is_some_and(|n| RENAME_ATTRIBUTES.iter().any(|r| r.eq_ignore_ascii_case(n)))
            && c.attr("op").is_none_or(|op| op == "Set")
    })
}

/// The request's values except credentials, looked up by name in any case.
pub(crate) struct Values(Vec<(String, String)>);

impl Values {
    pub(super) fn of(req: &Element) -> Values {
        Values(
            named_elements(req)
                // Credentials are never read, whatever the request holds.
                .filter(|(name, _)| !is_credential(name))
                .filter_map(|(name, e)| Some((name.to_owned(), value_of(e)?)))
                .collect(),
        )
    }

    /// The value of the first attribute of this name, unless that is empty.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}
