//! Which decoder a delivery is for. IdentityIQ senders do not always set a content type, so
//! without one the first character decides: XML starts with `<`, JSON never does.

/// The two formats the intake accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The `mailboxd.event/v1` contract.
    Json,
    /// IdentityIQ's ProvisioningPlan / AccountRequest XML.
    IdentityIq,
}

impl Format {
    /// `application/xml` or `text/xml` is IdentityIQ, any other content type is JSON (whose
    /// decoder refuses what is not `application/json`); without one, a body whose first
    /// character (after a byte-order mark and white space) is `<` is IdentityIQ.
    pub fn of(body: &[u8], content_type: Option<&str>) -> Format {
        match content_type.map(media_type).as_deref() {
            Some("application/xml" | "text/xml") => Format::IdentityIq,
            Some(base) if !base.is_empty() => Format::Json,
            _ if first_char_is_angle_bracket(body) => Format::IdentityIq,
            _ => Format::Json,
        }
    }
}

fn first_char_is_angle_bracket(body: &[u8]) -> bool {
    let text = strip_bom(body);
    text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

/// The body without a UTF-8 byte-order mark, which Windows senders often put first.
pub(crate) fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body)
}

/// The media type of a Content-Type value, lower-cased, without parameters.
pub(crate) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_type_decides_and_the_first_character_without_one() {
        let xml = b"\xef\xbb\xbf  <AccountRequest/>";
        assert_eq!(Format::of(xml, None), Format::IdentityIq);
        assert_eq!(Format::of(xml, Some("")), Format::IdentityIq);
        assert_eq!(Format::of(xml, Some("application/json")), Format::Json);
        assert_eq!(
            Format::of(b"{}", Some("Text/XML; charset=utf-8")),
            Format::IdentityIq
        );
        assert_eq!(Format::of(b"{}", None), Format::Json);
        assert_eq!(Format::of(b"<x/>", Some("text/plain")), Format::Json);
    }
}
