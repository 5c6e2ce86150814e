//! The JSON contract (`mailboxd.event/v1`, docs/events.md) decoded into an [`Event`]. The
//! wire types make every field optional so that a missing one is named in the error rather
//! than lost in a serde message.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::error::EventError;
use super::format::media_type;
use super::model::{
    Draft, DraftAccount, DraftMailbox, Event, EventKind, MAX_MESSAGE_BYTES, ROUTING_KEYS, Rename,
    SCHEMA_V1,
};

/// The JSON as sent.
#[derive(Deserialize)]
struct Wire {
    schema: Option<String>,
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    occurred_at: Option<String>,
    account: Option<WireAccount>,
    mailbox: Option<WireMailbox>,
    source: Option<String>,
    identity: Option<String>,
    rename: Option<WireRename>,
}

/// A mover's new values.
#[derive(Deserialize)]
struct WireRename {
    alias: Option<String>,
    user_principal_name: Option<String>,
    primary_smtp_address: Option<String>,
}

#[derive(Deserialize)]
struct WireAccount {
    sam_account_name: Option<String>,
    object_guid: Option<String>,
    distinguished_name: Option<String>,
    user_principal_name: Option<String>,
    created_on_server: Option<String>,
}

#[derive(Deserialize)]
struct WireMailbox {
    alias: Option<String>,
    remote_routing_address: Option<String>,
    primary_smtp_address: Option<String>,
    archive: Option<bool>,
    #[serde(rename = "type")]
    kind: Option<String>,
    start_date: Option<String>,
}

/// Parses an AMQP delivery body. `message_id` is the AMQP property, used when the body has no id;
/// `routing_key` must agree with the event type when it is one of the two known keys.
pub fn parse(
    body: &[u8],
    content_type: Option<&str>,
    message_id: Option<&str>,
    routing_key: &str,
) -> Result<Event, EventError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(EventError::TooLarge(body.len()));
    }
    check_content_type(content_type)?;
    // The wire types nest three deep and serde_json skips unknown fields iteratively, so a
    // deeply nested document cannot exhaust the stack (tested below on a small one).
    let wire: Wire = serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
    check_schema(wire.schema.as_deref())?;
    let id = wire
        .id
        .or_else(|| message_id.map(str::to_owned))
        .ok_or(EventError::Missing("id (or the AMQP message_id property)"))?;
    let kind = event_kind(wire.kind, routing_key)?;
    let occurred_at = occurred_at(wire.occurred_at)?;
    let wa = wire.account.ok_or(EventError::Missing("account"))?;
    Draft {
        id,
        kind,
        occurred_at,
        account: DraftAccount {
            sam_account_name: wa.sam_account_name,
            object_guid: wa.object_guid,
            distinguished_name: wa.distinguished_name,
            user_principal_name: wa.user_principal_name,
            created_on_server: wa.created_on_server,
        },
        mailbox: wire.mailbox.map(|m| DraftMailbox {
            alias: m.alias,
            remote_routing_address: m.remote_routing_address,
            primary_smtp_address: m.primary_smtp_address,
            archive: m.archive,
            kind: m.kind,
            start_date: m.start_date,
        }),
        source: wire.source,
        identity: wire.identity,
        rename: wire.rename.map(|r| Rename {
            alias: r.alias,
            user_principal_name: r.user_principal_name,
            primary_smtp_address: r.primary_smtp_address,
        }),
    }
    .validate(Utc::now())
}

/// No content type, or `application/json` (parameters such as a charset aside).
fn check_content_type(content_type: Option<&str>) -> Result<(), EventError> {
    match content_type {
        Some(ct) if !matches!(media_type(ct).as_str(), "" | "application/json") => {
            Err(EventError::ContentType(ct.to_owned()))
        }
        _ => Ok(()),
    }
}

fn check_schema(schema: Option<&str>) -> Result<(), EventError> {
    match schema {
        Some(SCHEMA_V1) => Ok(()),
        Some(other) => Err(EventError::Schema(other.to_owned())),
        None => Err(EventError::Missing("schema")),
    }
}

/// The type, which must agree with a known routing key (an unknown key is not checked).
fn event_kind(kind: Option<String>, routing_key: &str) -> Result<EventKind, EventError> {
    let text = kind.ok_or(EventError::Missing("type"))?;
    let kind = EventKind::parse(&text).ok_or_else(|| {
        EventError::invalid(
            "type",
            format!("{text:?} is none of \"joiner\", \"leaver\", \"mover\""),
        )
    })?;
    let known_key = ROUTING_KEYS.contains(&routing_key);
    if known_key && routing_key != kind.routing_key() {
        return Err(EventError::invalid(
            "type",
            format!("{kind} event published with routing key {routing_key}"),
        ));
    }
    Ok(kind)
}

fn occurred_at(text: Option<String>) -> Result<DateTime<Utc>, EventError> {
    let text = text.ok_or(EventError::Missing("occurred_at"))?;
    let at = DateTime::parse_from_rfc3339(&text).map_err(|e| {
        EventError::invalid(
            "occurred_at",
            format!("{e}: expected RFC 3339, e.g. 2026-11-22T10:00:00Z"),
        )
    })?;
    Ok(at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{MailboxType, ROUTING_KEY_JOINER, ROUTING_KEY_LEAVER, ROUTING_KEY_MOVER};

    fn joiner(sam: &str) -> String {
        serde_json::json!({
            "schema": SCHEMA_V1, "id": "e1", "type": "joiner",
            "occurred_at": "2026-11-22T10:00:00Z",
            "account": {"sam_account_name": sam, "object_guid": "b1f0a2c3-d4e5-f607-1829-3a4b5c6d7e8f"},
            "mailbox": {"remote_routing_address": "jdoe@tenant.mail.onmicrosoft.com"},
            "source": "identityiq"
        })
        .to_string()
    }

    #[test]
    fn a_valid_joiner_parses() {
        let e = parse(
            joiner("jdoe").as_bytes(),
            Some("application/json"),
            None,
            ROUTING_KEY_JOINER,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::Joiner);
        assert_eq!(e.account.name(), "jdoe");
        assert_eq!(e.source.as_deref(), Some("identityiq"));
    }

    #[test]
    fn each_bad_event_gets_a_precise_reason() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{not json".to_vec(), "not valid JSON"),
            (
                br#"{"schema":"mailboxd.event/v9"}"#.to_vec(),
                "unknown schema",
            ),
            (
                br#"{"schema":"mailboxd.event/v1","type":"joiner"}"#.to_vec(),
                "missing field id",
            ),
            (joiner("a;b").into_bytes(), "account.sam_account_name"),
            (vec![b' '; MAX_MESSAGE_BYTES + 1], "limit"),
        ];
        for (body, want) in cases {
            let err = parse(&body, None, None, ROUTING_KEY_JOINER)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        let err = parse(joiner("jdoe").as_bytes(), None, None, ROUTING_KEY_LEAVER).unwrap_err();
        assert!(err.to_string().contains("routing key"), "{err}");
        let err = parse(
            joiner("jdoe").as_bytes(),
            Some("text/plain"),
            None,
            ROUTING_KEY_JOINER,
        )
        .unwrap_err();
        assert!(matches!(err, EventError::ContentType(_)));
    }

    #[test]
    fn nesting_deeper_than_serde_jsons_recursion_limit_is_refused_not_followed() {
        // 50,000 levels, far under the size limit, on a small stack: in a field the model
        // reads, refused for its type at once (the wire types nest three deep); in a field
        // it ignores, skipped by serde_json's iterative skipping. Neither recurses deeply.
        let nested = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        let known = format!(r#"{{"schema":"mailboxd.event/v1","account":{nested}}}"#);
        let unknown = format!(r#"{{"schema":"mailboxd.event/v1","x":{nested}}}"#);
        let small_stack = std::thread::Builder::new().stack_size(256 * 1024);
        let errors = small_stack
            .spawn(move || {
                [known, unknown].map(|body| {
                    parse(body.as_bytes(), None, None, ROUTING_KEY_JOINER)
                        .unwrap_err()
                        .to_string()
                })
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert!(errors[0].contains("not valid JSON"), "{errors:?}");
        assert!(errors[1].contains("missing field id"), "{errors:?}");
    }

    #[test]
    fn an_event_from_the_future_beyond_the_clock_skew_is_refused() {
        let at = |t: chrono::DateTime<Utc>| {
            joiner("jdoe").replace("2026-11-22T10:00:00Z", &t.to_rfc3339())
        };
        let soon = at(Utc::now() + chrono::TimeDelta::minutes(4));
        assert!(parse(soon.as_bytes(), None, None, ROUTING_KEY_JOINER).is_ok());
        let later = at(Utc::now() + chrono::TimeDelta::minutes(6));
        let err = parse(later.as_bytes(), None, None, ROUTING_KEY_JOINER).unwrap_err();
        assert!(
            err.to_string().contains("invalid field occurred_at"),
            "{err}"
        );
    }

    #[test]
    fn a_start_date_is_read_as_a_day_or_an_instant_and_a_v1_event_has_none() {
        let dated = |d: &str| {
            joiner("jnew").replace(
                r#""mailbox":{"#,
                &format!(r#""mailbox":{{"start_date":"{d}","#),
            )
        };
        let read = |d: &str| parse(dated(d).as_bytes(), None, None, ROUTING_KEY_JOINER);
        let day = read("2027-01-04").unwrap().mailbox.unwrap().start_date;
        assert_eq!(day.map(String::from).as_deref(), Some("2027-01-04"));
        assert!(read("2027-01-04T08:00:00+01:00").is_ok());
        let err = read("04/01/2027").unwrap_err();
        assert!(err.to_string().contains("mailbox.start_date"), "{err}");
        let v1 = parse(joiner("jdoe").as_bytes(), None, None, ROUTING_KEY_JOINER).unwrap();
        assert_eq!(v1.mailbox.unwrap().start_date, None);
    }

    #[test]
    fn the_mailbox_type_is_read_and_a_v1_event_without_it_asks_for_a_user_mailbox() {
        let typed = |t: &str| {
            joiner("room1").replace(r#""mailbox":{"#, &format!(r#""mailbox":{{"type":"{t}","#))
        };
        let e = parse(typed("room").as_bytes(), None, None, ROUTING_KEY_JOINER).unwrap();
        assert_eq!(e.mailbox.unwrap().kind, MailboxType::Room);
        let v1 = parse(joiner("jdoe").as_bytes(), None, None, ROUTING_KEY_JOINER).unwrap();
        assert_eq!(v1.mailbox.unwrap().kind, MailboxType::User);
        let err = parse(typed("Room").as_bytes(), None, None, ROUTING_KEY_JOINER).unwrap_err();
        assert!(
            err.to_string().contains("mailbox.type") && err.to_string().contains("equipment"),
            "{err}"
        );
    }

    #[test]
    fn an_account_may_be_named_by_dn_guid_or_upn_alone_but_by_one_at_least() {
        let with = |account: serde_json::Value| {
            let mut ev: serde_json::Value = serde_json::from_str(&joiner("jdoe")).unwrap();
            ev["account"] = account;
            parse(ev.to_string().as_bytes(), None, None, ROUTING_KEY_JOINER)
        };
        let guid = "b1f0a2c3-d4e5-f607-1829-3a4b5c6d7e8f";
        let dn = "CN=Doe\\, J,OU=Staff,DC=corp,DC=example";
        for (account, key) in [
            (
                serde_json::json!({ "distinguished_name": dn }),
                dn.to_lowercase(),
            ),
            (
                serde_json::json!({ "object_guid": format!("{{{guid}}}") }),
                guid.into(),
            ),
            (
                serde_json::json!({ "user_principal_name": "J.Doe@corp.example" }),
                "j.doe@corp.example".into(),
            ),
        ] {
            let e = with(account.clone()).unwrap_or_else(|e| panic!("{account}: {e}"));
            assert_eq!(e.account.sam_account_name, None);
            assert_eq!(e.account.key(), key, "{account}");
        }
        let both = with(serde_json::json!({ "sam_account_name": "JDoe", "object_guid": guid }));
        let both = both.unwrap().account;
        assert_eq!(
            (both.key(), both.name_key()),
            (guid.to_owned(), "jdoe".to_owned())
        );
        let err = with(serde_json::json!({})).unwrap_err().to_string();
        assert!(err.contains("account.sam_account_name (or"), "{err}");
        let err = with(serde_json::json!({ "distinguished_name": "jdoe" })).unwrap_err();
        assert!(
            err.to_string().contains("account.distinguished_name"),
            "{err}"
        );
    }

    #[test]
    fn a_mover_carries_its_new_values_in_rename_and_nowhere_else() {
        let mover = |rename: &str, extra: &str| {
            format!(
                r#"{{"schema":"mailboxd.event/v1","id":"m1","type":"mover","occurred_at":"2026-11-22T10:00:00Z","account":{{"sam_account_name":"jsmith"}}{rename}{extra}}}"#
            )
        };
        let ok = mover(
            r#","rename":{"alias":"jdoe","user_principal_name":"jane.doe@corp.example"}"#,
            "",
        );
        let e = parse(ok.as_bytes(), None, None, ROUTING_KEY_MOVER).unwrap();
        assert_eq!(e.kind, EventKind::Mover);
        assert_eq!(e.rename.unwrap().alias.as_deref(), Some("jdoe"));
        let refused = [
            (mover("", ""), ROUTING_KEY_MOVER, "missing field rename"),
            (
                mover(r#","rename":{}"#, ""),
                ROUTING_KEY_MOVER,
                "names nothing to change",
            ),
            (
                mover(r#","rename":{"alias":"j doe"}"#, ""),
                ROUTING_KEY_MOVER,
                "rename.alias",
            ),
            (
                mover(
                    r#","rename":{"alias":"jdoe"}"#,
                    r#","mailbox":{"alias":"x"}"#,
                ),
                ROUTING_KEY_MOVER,
                "not in mailbox",
            ),
            (
                mover(r#","rename":{"alias":"jdoe"}"#, ""),
                ROUTING_KEY_JOINER,
                "routing key",
            ),
            (
                joiner("jdoe").replace(r#""source""#, r#""rename":{"alias":"x"},"source""#),
                ROUTING_KEY_JOINER,
                "only a mover carries it",
            ),
        ];
        for (body, key, want) in refused {
            let err = parse(body.as_bytes(), None, None, key)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    #[test]
    fn message_id_property_stands_in_for_a_missing_id() {
        let body = joiner("jdoe").replace("\"id\":\"e1\",", "");
        let e = parse(body.as_bytes(), None, Some("amqp-id-7"), ROUTING_KEY_JOINER).unwrap();
        assert_eq!(e.id, "amqp-id-7");
    }
}
