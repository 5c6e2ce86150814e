//! What the poison table may keep of a refused delivery's body. Never a credential: a
//! JSON body loses the values of credential-looking keys, an IdentityIQ one those of
//! credential attributes (`iiq::sanitized`). Never a parse over the size limit: a body too
//! large to be read is withheld, as is one too broken to tell where a credential might be.

use serde_json::Value;

use super::credentials::{is_credential, mentions_credential};
use super::format::{Format, strip_bom};
use super::iiq;
use super::model::MAX_MESSAGE_BYTES;

/// What replaces a credential's value.
pub(crate) const REMOVED: &str = "[removed by mailboxd: credentials are never stored]";
const TOO_LARGE: &[u8] = b"[body withheld by mailboxd: over the size limit, so it was not read]";
const UNREADABLE_XML: &[u8] = b"[body withheld by mailboxd: unreadable XML may hold credentials]";
const UNREADABLE_JSON: &[u8] =
    b"[body withheld by mailboxd: unreadable JSON that mentions a credential-looking word]";

/// The body as the poison table may keep it.
pub(crate) fn keepable(body: &[u8], format: Format) -> Vec<u8> {
    if body.len() > MAX_MESSAGE_BYTES {
        return TOO_LARGE.to_vec();
    }
    match format {
        Format::IdentityIq => iiq::sanitized(body).unwrap_or_else(|| UNREADABLE_XML.to_vec()),
        Format::Json | Format::Midpoint | Format::Isc => json_without_credentials(body),
    }
}

/// A JSON body with the value of every credential-looking key, at any depth, replaced;
/// the bytes as they came when there was none. serde_json's recursion limit (128) bounds
/// the parse, and the walk uses a stack of its own.
fn json_without_credentials(body: &[u8]) -> Vec<u8> {
    let Ok(mut doc) = serde_json::from_slice::<Value>(strip_bom(body)) else {
        return if mentions_credential(body) {
            UNREADABLE_JSON.to_vec()
        } else {
            body.to_vec()
        };
    };
    let mut removed = false;
    let mut pending = vec![&mut doc];
    while let Some(v) = pending.pop() {
        match v {
            Value::Object(map) => {
                // A name/value pair (Identity Security Cloud's attributeRequests): the
                // value of a credential-looking name goes too.
                let named = map.get("attributeName").and_then(Value::as_str);
                if named.is_some_and(is_credential) && map.contains_key("attributeValue") {
                    map.insert("attributeValue".into(), Value::String(REMOVED.into()));
                    removed = true;
                }
                for (k, v) in map.iter_mut() {
                    if is_credential(k) {
                        *v = Value::String(REMOVED.into());
                        removed = true;
                    } else {
                        pending.push(v);
                    }
                }
            }
            Value::Array(items) => pending.extend(items.iter_mut()),
            _ => {}
        }
    }
    if !removed {
        return body.to_vec();
    }
    serde_json::to_vec(&doc).unwrap_or_else(|_| UNREADABLE_JSON.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_values_are_removed_at_any_depth_and_the_rest_is_kept() {
        let body = br#"{"schema":"x","Password":"Hunter2","account":{"sam_account_name":"jdoe","creds":[{"api_token":"T0k3n"},{"clientSecret":{"v":"S3cr3t"}}]}}"#;
        let kept = String::from_utf8(keepable(body, Format::Json)).unwrap();
        for secret in ["Hunter2", "T0k3n", "S3cr3t"] {
            assert!(!kept.contains(secret), "{kept}");
        }
        assert!(kept.contains("jdoe") && kept.contains(REMOVED), "{kept}");
        let pair = br#"{"accountRequests":[{"attributeRequests":[{"attributeName":"password","attributeValue":"Pa55"}]}]}"#;
        let kept = String::from_utf8(keepable(pair, Format::Isc)).unwrap();
        assert!(!kept.contains("Pa55") && kept.contains(REMOVED), "{kept}");
        // Nothing to remove: the bytes as they came.
        let plain = br#"{ "schema" : "x" }"#;
        assert_eq!(keepable(plain, Format::Json), plain);
        assert_eq!(keepable(b"{not json", Format::Json), b"{not json");
        assert_eq!(
            keepable(b"{\"password\": \"x\"", Format::Json),
            UNREADABLE_JSON
        );
        assert_eq!(
            keepable(&vec![b' '; MAX_MESSAGE_BYTES + 1], Format::Json),
            TOO_LARGE
        );
        // Deeper than serde_json's recursion limit (128, the default, which this build
        // keeps): refused by the parse, on a small stack, and kept as it came.
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)).into_bytes();
        let kept = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn({
                let deep = deep.clone();
                move || keepable(&deep, Format::Json)
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert_eq!(kept, deep);
        let err = serde_json::from_slice::<Value>(&deep).unwrap_err();
        assert!(
            err.to_string().contains("recursion limit exceeded"),
            "{err}"
        );
    }
}
