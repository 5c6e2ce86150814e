//! midPoint's asynchronous (messaging) outbound provisioning (4.3 and later, experimental
//! there), decoded into events: one message per operation in the `simplifiedJson` form of
//! midPoint's `JsonAsyncProvisioningRequest` — `operation` (`add`, `modify`, `delete`),
//! `objectClass`, `attributes`, `primaryIdentifiers`, `secondaryIdentifiers`, `changes`
//! (per attribute `add`/`delete`/`replace` lists). Every attribute holds a list of values;
//! names are unqualified (`login`) or, from `simplifiedQualifiedJson`, qualified
//! (`http://…/resource/instance-3#login`), and only the part after `#` is compared.
//!
//! Which attributes mean what is the deployment's [`AttributeMap`] (`[amqp.midpoint]`):
//! `add` is a joiner, `delete` or a change of the disabled attribute to a disabled value a
//! leaver, a change of it to another value (enabled again) a joiner — a rehire, whose hidden
//! mailbox the worker shows again — and any other modification is refused with its reason, so it is kept as poison
//! and visible rather than silently dropped. midPoint sends no event id and no time: the
//! id is the AMQP `message_id` (a JMS sender sets one) or else a hash of the body, and
//! `occurred_at` is when mailboxd received it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::error::EventError;
use super::model::{Draft, DraftAccount, DraftMailbox, Event, EventKind, Rename};

/// What `[amqp.midpoint]` says the attributes of midPoint's messages mean. Names are
/// compared without case, on the unqualified part.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributeMap {
    /// The object classes that are AD accounts; any other is refused.
    pub object_classes: Vec<String>,
    /// The attributes that may hold the sAMAccountName, the first one present wins. A
    /// message without any may still name the account by the DN, objectGUID or UPN
    /// attribute below: mailboxd then finds it in AD by that.
    pub login_attributes: Vec<String>,
    /// The attribute a disable changes (midPoint's outbound mapping of the account's
    /// activation to the resource schema).
    pub disabled_attribute: String,
    /// Values of `disabled_attribute` that mean disabled (compared without case; `true`,
    /// `false` and numbers by their JSON text).
    pub disabled_values: Vec<String>,
    /// The attribute holding the objectGUID (as text, with or without braces).
    pub object_guid_attribute: String,
    /// The attribute holding the distinguishedName.
    pub distinguished_name_attribute: String,
    /// The attribute holding the userPrincipalName.
    pub user_principal_name_attribute: String,
    pub alias_attribute: String,
    pub primary_smtp_address_attribute: String,
    /// The attribute read as a joiner's `mailbox.type` (user, shared, room, equipment).
    pub mailbox_type_attribute: String,
    /// The attribute read as a joiner's `mailbox.start_date` (a day or an RFC 3339
    /// date-time; midPoint's `activation/validFrom` mapped outbound to it, say).
    pub start_date_attribute: String,
}

impl Default for AttributeMap {
    fn default() -> Self {
        AttributeMap {
            object_classes: vec!["AccountObjectClass".into(), "__ACCOUNT__".into()],
            login_attributes: vec!["sAMAccountName".into(), "login".into()],
            disabled_attribute: "administrativeStatus".into(),
            disabled_values: vec!["disabled".into()],
            object_guid_attribute: "objectGUID".into(),
            distinguished_name_attribute: "distinguishedName".into(),
            user_principal_name_attribute: "userPrincipalName".into(),
            alias_attribute: "mailNickname".into(),
            primary_smtp_address_attribute: "mail".into(),
            mailbox_type_attribute: "mailboxType".into(),
            start_date_attribute: "startDate".into(),
        }
    }
}

/// Attribute name → its values, as midPoint sends them.
type Attributes = BTreeMap<String, Option<Vec<Value>>>;

/// The message as sent; unknown fields (`additionalInformation`) are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    operation: Option<String>,
    object_class: Option<String>,
    #[serde(default)]
    attributes: Option<Attributes>,
    #[serde(default)]
    primary_identifiers: Option<Attributes>,
    #[serde(default)]
    secondary_identifiers: Option<Attributes>,
    #[serde(default)]
    changes: Option<BTreeMap<String, Option<Delta>>>,
}

#[derive(Deserialize)]
struct Delta {
    add: Option<Vec<Value>>,
    replace: Option<Vec<Value>>,
}

/// Decodes one midPoint request. `message_id` (the AMQP property) is the event id; without
/// it `content_id` (a hash of the body) is.
pub fn parse(
    body: &[u8],
    message_id: Option<&str>,
    content_id: impl FnOnce() -> String,
    received_at: DateTime<Utc>,
    map: &AttributeMap,
) -> Result<Event, EventError> {
    let wire: Wire = serde_json::from_slice(super::format::strip_bom(body))
        .map_err(|e| EventError::Json(e.to_string()))?;
    let operation = wire.operation.as_deref().unwrap_or_default();
    let class = wire.object_class.as_deref().unwrap_or_default();
    if !map.object_classes.iter().any(|c| same(c, class)) {
        return Err(refused(format!(
            "objectClass {class:?} is not an AD account for mailboxd (amqp.midpoint.object_classes: {})",
            map.object_classes.join(", ")
        )));
    }
    let kind = match operation {
        "add" => EventKind::Joiner,
        "delete" => EventKind::Leaver,
        "modify" => match disables(&wire, map) {
            Some(true) => EventKind::Leaver,
            Some(false) => EventKind::Joiner,
            None if renames(&wire, map) => EventKind::Mover,
            None => return Err(refused(modify_reason(&wire, map))),
        },
        other => {
            return Err(refused(format!(
                "operation {other:?} is none of add, modify, delete"
            )));
        }
    };
    let id = match message_id {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => content_id(),
    };
    draft(&wire, map, id, kind, received_at)?.validate(received_at)
}

fn draft(
    wire: &Wire,
    map: &AttributeMap,
    id: String,
    kind: EventKind,
    received_at: DateTime<Utc>,
) -> Result<Draft, EventError> {
    let sources = [
        &wire.primary_identifiers,
        &wire.secondary_identifiers,
        &wire.attributes,
    ];
    let value = |name: &str| sources.iter().find_map(|s| first_text(s.as_ref()?, name));
    let sam = map.login_attributes.iter().find_map(|a| value(a));
    let mover = kind == EventKind::Mover;
    let account = DraftAccount {
        sam_account_name: sam,
        object_guid: value(&map.object_guid_attribute),
        distinguished_name: value(&map.distinguished_name_attribute),
        // A mover's changed UPN is its new one, not what finds the account.
        user_principal_name: value(&map.user_principal_name_attribute).filter(|_| !mover),
        created_on_server: None,
    };
    if account == DraftAccount::default() {
        return Err(refused(format!(
            "no login attribute ({}), nor {}, {} or {}, among the identifiers or attributes",
            map.login_attributes.join(", "),
            map.distinguished_name_attribute,
            map.object_guid_attribute,
            map.user_principal_name_attribute
        )));
    }
    let mailbox = DraftMailbox {
        alias: value(&map.alias_attribute),
        primary_smtp_address: value(&map.primary_smtp_address_attribute),
        kind: value(&map.mailbox_type_attribute),
        start_date: value(&map.start_date_attribute),
        ..DraftMailbox::default()
    };
    Ok(Draft {
        id,
        kind,
        occurred_at: received_at,
        account,
        mailbox: (kind == EventKind::Joiner && mailbox != DraftMailbox::default())
            .then_some(mailbox),
        source: Some("midpoint".into()),
        identity: None,
        rename: mover.then(|| Rename {
            alias: changed(wire, &map.alias_attribute),
            user_principal_name: changed(wire, &map.user_principal_name_attribute),
            primary_smtp_address: changed(wire, &map.primary_smtp_address_attribute),
        }),
    })
}

/// The attributes whose change makes a modify a mover: the mapped alias, UPN and primary
/// address.
fn rename_attributes(map: &AttributeMap) -> [&str; 3] {
    [
        &map.alias_attribute,
        &map.user_principal_name_attribute,
        &map.primary_smtp_address_attribute,
    ]
}

/// Whether a modify gives one of [`rename_attributes`] a new value.
fn renames(wire: &Wire, map: &AttributeMap) -> bool {
    rename_attributes(map)
        .into_iter()
        .any(|name| changed(wire, name).is_some())
}

/// The new value a modify gives `name`: the first text of its `replace` or `add` in
/// `changes`, or (midPoint's `changeMapAsAttributes` form) of `attributes`.
fn changed(wire: &Wire, name: &str) -> Option<String> {
    let in_changes = wire.changes.iter().flatten().find_map(|(n, delta)| {
        let d = delta.as_ref().filter(|_| same(name, n))?;
        [&d.replace, &d.add]
            .into_iter()
            .flatten()
            .find_map(|values| values.first().map(text_of))
    });
    in_changes.or_else(|| first_text(wire.attributes.as_ref()?, name))
}

/// What a modify does to the account's activation: the values it sets the disabled attribute
/// to, in `changes` (an `add` or `replace`) or in `attributes` (midPoint's
/// `changeMapAsAttributes` form). `Some(true)`: a disabled value (a leaver); `Some(false)`:
/// only other values (enabled again: a joiner, which a rehire's hidden mailbox answers by
/// being shown again); `None`: the modify does not set it.
fn disables(wire: &Wire, map: &AttributeMap) -> Option<bool> {
    let changes = wire.changes.iter().flatten().filter_map(|(name, delta)| {
        let d = delta
            .as_ref()
            .filter(|_| same(&map.disabled_attribute, name))?;
        Some([&d.add, &d.replace].into_iter().flatten().flatten())
    });
    let attributes = wire
        .attributes
        .iter()
        .flatten()
        .filter(|(name, _)| same(&map.disabled_attribute, name))
        .filter_map(|(_, values)| values.as_ref().map(|v| v.iter()));
    let set: Vec<String> = changes
        .flatten()
        .chain(attributes.flatten())
        .map(text_of)
        .collect();
    if set.is_empty() {
        return None;
    }
    Some(set.iter().any(|text| {
        map.disabled_values
            .iter()
            .any(|d| d.eq_ignore_ascii_case(text))
    }))
}

/// Why a modify is nothing for mailboxd: the attributes it changes, named.
fn modify_reason(wire: &Wire, map: &AttributeMap) -> String {
    let mut changed: Vec<&str> = wire
        .changes
        .iter()
        .flat_map(|c| c.keys())
        .chain(wire.attributes.iter().flat_map(|a| a.keys()))
        .map(|n| local(n))
        .collect();
    changed.sort_unstable_by_key(|n| n.to_ascii_lowercase());
    changed.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    let changed: String = changed.join(", ").chars().take(300).collect();
    format!(
        "a modify of {changed} is nothing for mailboxd: only {} is (set to {}: a leaver; to another value: enabled again, a joiner), or a new {} (a mover)",
        map.disabled_attribute,
        map.disabled_values.join(" or "),
        rename_attributes(map).join(", ")
    )
}

fn refused(reason: String) -> EventError {
    EventError::Midpoint(reason)
}

/// The first value of `name` in `attrs`, as text, if it is a string or a number.
fn first_text(attrs: &Attributes, name: &str) -> Option<String> {
    let values = attrs.iter().find(|(k, _)| same(name, k))?.1.as_ref()?;
    match values.first()? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A name without its namespace (`…/instance-3#login` → `login`).
fn local(name: &str) -> &str {
    name.rsplit_once('#').map_or(name, |(_, l)| l)
}

/// Whether the configured `want` names the attribute or class `got`.
fn same(want: &str, got: &str) -> bool {
    local(want).eq_ignore_ascii_case(local(got))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MailboxType;

    /// midPoint's documented samples (docs/resources/asynchronous/outbound/configuration in
    /// midPoint's repository: the add, the relative modify, the `changeMapAsAttributes`
    /// modify) and the disable and delete of the same account in the same shape.
    fn sample(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/midpoint/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn decode(body: &[u8], map: &AttributeMap) -> Result<Event, EventError> {
        parse(body, None, || "hash-id".into(), Utc::now(), map)
    }

    #[test]
    fn the_documented_add_is_a_joiner_and_a_disable_or_delete_a_leaver() {
        let map = AttributeMap::default();
        let add = decode(&sample("add.json"), &map).unwrap();
        assert_eq!(add.kind, EventKind::Joiner);
        assert_eq!(add.account.name(), "jack");
        assert_eq!(
            (add.id.as_str(), add.source.as_deref()),
            ("hash-id", Some("midpoint"))
        );
        for leaver in ["modify-disable.json", "delete.json"] {
            let e = decode(&sample(leaver), &map).unwrap();
            assert_eq!(e.kind, EventKind::Leaver, "{leaver}");
            assert_eq!(e.account.name(), "jack", "{leaver}");
        }
        let id = parse(
            &sample("add.json"),
            Some("ID:7"),
            String::new,
            Utc::now(),
            &map,
        );
        assert_eq!(id.unwrap().id, "ID:7");
    }

    #[test]
    fn qualified_names_and_the_mapped_attributes_are_read() {
        let e = decode(&sample("add-qualified.json"), &AttributeMap::default()).unwrap();
        assert_eq!(e.account.name(), "jsparrow");
        assert_eq!(
            e.account.user_principal_name.as_deref(),
            Some("jack.sparrow@corp.example")
        );
        let alias = e.mailbox.and_then(|m| m.alias);
        assert_eq!(alias.as_deref(), Some("jack.sparrow"));
    }

    #[test]
    fn the_mapped_mailbox_type_is_read_and_checked() {
        let body = |t: &str| {
            format!(
                r#"{{"operation":"add","objectClass":"AccountObjectClass","attributes":{{"login":["sales"],"mailboxType":["{t}"]}}}}"#
            )
        };
        let map = AttributeMap::default();
        let e = decode(body("shared").as_bytes(), &map).unwrap();
        assert_eq!(e.mailbox.map(|m| m.kind), Some(MailboxType::Shared));
        let err = decode(body("team").as_bytes(), &map).unwrap_err();
        assert!(err.to_string().contains("mailbox.type"), "{err}");
    }

    #[test]
    fn the_mapped_start_date_is_read() {
        let e = decode(&sample("add-start-date.json"), &AttributeMap::default()).unwrap();
        let at = e.mailbox.and_then(|m| m.start_date).map(String::from);
        assert_eq!(at.as_deref(), Some("2027-01-04T09:00:00+01:00"));
    }

    #[test]
    fn a_modify_of_the_mapped_alias_upn_or_mail_is_a_mover() {
        let map = AttributeMap::default();
        let body = br#"{"operation":"modify","objectClass":"AccountObjectClass",
            "primaryIdentifiers":{"login":["jack"]},
            "attributes":{"userPrincipalName":["old@corp.example"]},
            "changes":{"mailNickname":{"replace":["jsparrow"]},
                       "userPrincipalName":{"replace":["jack.sparrow@corp.example"]}}}"#;
        let e = decode(body, &map).unwrap();
        assert_eq!(e.kind, EventKind::Mover);
        assert_eq!(e.account.user_principal_name, None, "not the lookup");
        let r = e.rename.unwrap();
        assert_eq!(r.alias.as_deref(), Some("jsparrow"));
        assert_eq!(
            r.user_principal_name.as_deref(),
            Some("jack.sparrow@corp.example")
        );
        assert_eq!(r.primary_smtp_address, None);
    }

    #[test]
    fn other_modifications_are_refused_with_what_they_change() {
        let map = AttributeMap::default();
        for name in ["modify-full-name.json", "modify-as-attributes.json"] {
            let err = decode(&sample(name), &map).unwrap_err().to_string();
            assert!(err.contains("midPoint request refused"), "{err}");
            assert!(
                err.contains("fullName") && err.contains("administrativeStatus"),
                "{err}"
            );
        }
        let group = br#"{"operation":"add","objectClass":"GroupObjectClass","attributes":{}}"#;
        let err = decode(group, &map).unwrap_err().to_string();
        assert!(err.contains("GroupObjectClass"), "{err}");
        let by_dn = br#"{"operation":"delete","objectClass":"AccountObjectClass",
            "primaryIdentifiers":{"distinguishedName":["CN=Jack,OU=Staff,DC=corp,DC=example"]}}"#;
        let e = decode(by_dn, &map).unwrap();
        assert_eq!(e.account.sam_account_name, None);
        assert_eq!(e.account.name(), "CN=Jack,OU=Staff,DC=corp,DC=example");
        let nameless = br#"{"operation":"delete","objectClass":"AccountObjectClass"}"#;
        let err = decode(nameless, &map).unwrap_err().to_string();
        assert!(err.contains("no login attribute"), "{err}");
        let bad = br#"{"operation":"add","objectClass":"AccountObjectClass","attributes":{"login":["a;b"]}}"#;
        let err = decode(bad, &map).unwrap_err().to_string();
        assert!(err.contains("account.sam_account_name"), "{err}");
    }

    #[test]
    fn the_map_decides_which_change_disables_and_which_enables_again() {
        let map = AttributeMap {
            disabled_attribute: "enabled".into(),
            disabled_values: vec!["false".into()],
            ..AttributeMap::default()
        };
        let body = br#"{"operation":"modify","objectClass":"AccountObjectClass",
            "primaryIdentifiers":{"login":["jack"]},"changes":{"enabled":{"replace":[false]}}}"#;
        assert_eq!(decode(body, &map).unwrap().kind, EventKind::Leaver);
        // Enabled again: a joiner (a rehire), with nothing but the account.
        let enabled = String::from_utf8_lossy(body).replace("[false]", "[true]");
        let rehire = decode(enabled.as_bytes(), &map).unwrap();
        assert_eq!(rehire.kind, EventKind::Joiner);
        assert!(rehire.mailbox.is_none());
        // An attribute the map does not name is nothing, whatever its value.
        assert!(decode(&sample("modify-disable.json"), &map).is_err());
        // The default map: administrativeStatus enabled, in either form.
        let default = AttributeMap::default();
        let on =
            String::from_utf8_lossy(&sample("modify-disable.json")).replace("disabled", "enabled");
        assert_eq!(
            decode(on.as_bytes(), &default).unwrap().kind,
            EventKind::Joiner
        );
        let as_attributes = br#"{"operation":"modify","objectClass":"AccountObjectClass",
            "primaryIdentifiers":{"login":["jack"]},"attributes":{"administrativeStatus":["ENABLED"]}}"#;
        assert_eq!(
            decode(as_attributes, &default).unwrap().kind,
            EventKind::Joiner
        );
        // An emptied value list sets nothing.
        let emptied = br#"{"operation":"modify","objectClass":"AccountObjectClass",
            "primaryIdentifiers":{"login":["jack"]},"changes":{"administrativeStatus":{"replace":[]}}}"#;
        assert!(decode(emptied, &default).is_err());
    }
}
