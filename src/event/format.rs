//! Which decoder a delivery is for. IdentityIQ senders do not always set a content type, so
//! without one the first character decides: XML starts with `<`, JSON never does. A JSON
//! body is midPoint's when it has `operation` and `objectClass` and no `schema`: midPoint's
//! JMS text comes as `text/plain` or without a content type, and on one routing key for
//! every operation, so the body has to tell. Identity Security Cloud's Provisioning Completed
//! payload is JSON with `trackingNumber` and `accountRequests` and none of the others' keys.

/// The formats the intake accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The `mailboxd.event/v1` contract.
    Json,
    /// IdentityIQ's ProvisioningPlan / AccountRequest XML.
    IdentityIq,
    /// midPoint's asynchronous provisioning request (`simplifiedJson`).
    Midpoint,
    /// Identity Security Cloud's Provisioning Completed trigger payload (`is_isc`).
    Isc,
}

impl Format {
    /// `application/xml` or `text/xml` is IdentityIQ, any other content type is JSON (whose
    /// decoder refuses what is not `application/json`); without one, a body whose first
    /// character (after a byte-order mark and white space) is `<` is IdentityIQ. JSON that
    /// is midPoint's (`is_midpoint`) without a content type, or as
    /// `application/json` or `text/plain`, is midPoint.
    pub fn of(body: &[u8], content_type: Option<&str>) -> Format {
        let base = content_type.map(media_type).unwrap_or_default();
        match base.as_str() {
            "application/xml" | "text/xml" => Format::IdentityIq,
            "" if first_char_is_angle_bracket(body) => Format::IdentityIq,
            "" | "application/json" | "text/plain" if is_midpoint(body) => Format::Midpoint,
            "" | "application/json" if is_isc(body) => Format::Isc,
            _ => Format::Json,
        }
    }
}

/// Which of the keys that tell the JSON formats apart a body has at its top level. Values
/// are skipped unread, without recursion; `None` when the body is no JSON object.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Keys {
    schema: Option<serde::de::IgnoredAny>,
    operation: Option<serde::de::IgnoredAny>,
    object_class: Option<serde::de::IgnoredAny>,
    tracking_number: Option<serde::de::IgnoredAny>,
    account_requests: Option<serde::de::IgnoredAny>,
}

fn keys(body: &[u8]) -> Option<Keys> {
    serde_json::from_slice::<Keys>(strip_bom(body)).ok()
}

/// Whether a JSON body is a midPoint request rather than mailboxd's own contract: an
/// object with `operation` and `objectClass` and without `schema` (which every
/// `mailboxd.event/v1` event has).
fn is_midpoint(body: &[u8]) -> bool {
    keys(body)
        .is_some_and(|k| k.schema.is_none() && k.operation.is_some() && k.object_class.is_some())
}

/// Whether a JSON body is a Provisioning Completed payload: an object with
/// `trackingNumber` and `accountRequests` and none of the keys that make it mailboxd's own
/// event (`schema`) or midPoint's request (`operation`, `objectClass`).
pub(super) fn is_isc(body: &[u8]) -> bool {
    keys(body).is_some_and(|k| {
        k.schema.is_none()
            && k.operation.is_none()
            && k.object_class.is_none()
            && k.tracking_number.is_some()
            && k.account_requests.is_some()
    })
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
        let midpoint = br#"{"operation":"add","objectClass":"AccountObjectClass"}"#;
        for ct in [
            None,
            Some("text/plain"),
            Some("application/json; charset=utf-8"),
        ] {
            assert_eq!(Format::of(midpoint, ct), Format::Midpoint, "{ct:?}");
        }
        let ours = br#"{"schema":"mailboxd.event/v1","operation":"add","objectClass":"x"}"#;
        assert_eq!(Format::of(ours, None), Format::Json);
        assert_eq!(Format::of(br#"{"operation":"add"}"#, None), Format::Json);
        let isc = br#"{"trackingNumber":"t","accountRequests":[]}"#;
        assert_eq!(Format::of(isc, Some("application/json")), Format::Isc);
        assert_eq!(Format::of(isc, Some("text/plain")), Format::Json);
    }
}
