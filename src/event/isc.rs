//! SailPoint Identity Security Cloud's "Provisioning Completed" event trigger, decoded into
//! events. The trigger fires after ISC provisioned an identity's access and posts one JSON
//! payload per provisioning request to a subscribed HTTP endpoint (fire and forget: it is
//! never resent): `trackingNumber`, `sources`, `recipient` (the identity), `requester`,
//! `errors`, `warnings`, and `accountRequests`, one per account, each with its `source`
//! (`id`, `type` SOURCE, `name`), `accountId` (for an AD source the account's DN),
//! `accountOperation` (Create, Modify, Enable, Disable, Unlock or Delete),
//! `provisioningResult` (SUCCESS, PENDING or FAILED), `provisioningTarget`, `ticketId` and
//! `attributeRequests` (SailPoint's developer documentation of the trigger, "Provisioning
//! Completed", and its example input, kept as tests/data/isc/provisioning-completed.json;
//! the values as the SDKs' model ProvisioningCompletedAccountRequestsInner lists them).
//!
//! An account request of a source the deployment names as Active Directory
//! ([`IscRules::ad_sources`]) that ended SUCCESS is a joiner when it created the account and
//! a leaver when it disabled it; it names the account by its DN, which the worker finds in
//! AD (docs/events.md, "Naming the account"). Every other request is ignored with its reason
//! (a payload carries the requests of every source). The event id is the tracking number
//! and the request's index, so the same payload twice is one set of jobs; ISC sends no time,
//! so `occurred_at` is when mailboxd received it.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::Decoded;
use super::error::EventError;
use super::format::strip_bom;
use super::model::{Draft, DraftAccount, EventKind, MAX_MESSAGE_BYTES};

/// What the deployment says of its Identity Security Cloud sources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IscRules {
    /// The ISC sources that are this Active Directory, by name or id (compared without
    /// case). Empty: none, and every account request is ignored.
    pub ad_sources: Vec<String>,
}

/// The payload as sent; every field optional so a missing one is named, unknown ones
/// (`sources`, `action`, `errors`, `warnings`, `requester`, `attributeRequests`, …) ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    tracking_number: Option<String>,
    recipient: Option<Reference>,
    account_requests: Option<Vec<WireRequest>>,
}

#[derive(Deserialize)]
struct Reference {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest {
    source: Option<Reference>,
    account_id: Option<String>,
    account_operation: Option<String>,
    provisioning_result: Option<String>,
}

/// Decodes one Provisioning Completed payload into the events it carries for mailboxd and
/// the reasons the other account requests are not; an account request for mailboxd whose
/// values break a rule refuses the whole payload.
pub fn parse(
    body: &[u8],
    received_at: DateTime<Utc>,
    rules: &IscRules,
) -> Result<Decoded, EventError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(EventError::TooLarge(body.len()));
    }
    let wire: Wire =
        serde_json::from_slice(strip_bom(body)).map_err(|e| EventError::Json(e.to_string()))?;
    let tracking = wire
        .tracking_number
        .filter(|t| !t.is_empty())
        .ok_or(EventError::Missing("trackingNumber"))?;
    let requests = wire
        .account_requests
        .ok_or(EventError::Missing("accountRequests"))?;
    let identity = wire.recipient.and_then(|r| r.name.or(r.id));
    let mut out = Decoded::default();
    for (i, request) in requests.into_iter().enumerate() {
        match for_mailboxd(&request, rules) {
            Ok((kind, dn)) => out.events.push(
                Draft {
                    id: format!("isc:{tracking}:{i}"),
                    kind,
                    occurred_at: received_at,
                    account: DraftAccount {
                        distinguished_name: Some(dn),
                        ..DraftAccount::default()
                    },
                    mailbox: None,
                    source: Some("isc".into()),
                    identity: identity.clone(),
                    rename: None,
                }
                .validate(received_at)?,
            ),
            Err(why) => out.ignored.push(format!("accountRequests[{i}] {why}")),
        }
    }
    Ok(out)
}

/// The kind of event an account request is and the DN it names, or why it is nothing for
/// mailboxd (for the log).
fn for_mailboxd(r: &WireRequest, rules: &IscRules) -> Result<(EventKind, String), String> {
    let (id, name) = r
        .source
        .as_ref()
        .map_or((None, None), |s| (s.id.as_deref(), s.name.as_deref()));
    let source = name.or(id).unwrap_or_default();
    let ad = rules.ad_sources.iter().any(|s| {
        [id, name]
            .into_iter()
            .flatten()
            .any(|n| n.eq_ignore_ascii_case(s))
    });
    if !ad {
        return Err(format!(
            "for source {source:?}, which is not one of the AD sources (isc ad_sources: {})",
            rules.ad_sources.join(", ")
        ));
    }
    let op = r.account_operation.as_deref().unwrap_or_default();
    let kind = if op.eq_ignore_ascii_case("Create") {
        EventKind::Joiner
    } else if op.eq_ignore_ascii_case("Disable") {
        EventKind::Leaver
    } else {
        return Err(format!(
            "{op:?} on {source:?}: nothing for mailboxd (Create is a joiner, Disable a leaver)"
        ));
    };
    let result = r.provisioning_result.as_deref().unwrap_or_default();
    if !result.eq_ignore_ascii_case("SUCCESS") {
        return Err(format!(
            "{op} on {source:?} ended {result:?}, not SUCCESS: AD may not show it (reconciliation finds what changes later)"
        ));
    }
    let dn = r
        .account_id
        .clone()
        .ok_or_else(|| format!("{op} on {source:?} names no accountId"))?;
    Ok((kind, dn))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example (`provisioning-completed.json`: a Modify, so nothing for
    /// mailboxd) and the Create and Disable of an AD account in the same shape.
    fn sample(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/isc/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn ad() -> IscRules {
        IscRules {
            ad_sources: vec!["corporate active directory".into()],
        }
    }

    #[test]
    fn a_successful_create_is_a_joiner_and_a_disable_a_leaver_named_by_dn() {
        for (name, kind) in [
            ("create.json", EventKind::Joiner),
            ("disable.json", EventKind::Leaver),
        ] {
            let d = parse(&sample(name), Utc::now(), &ad()).unwrap();
            assert_eq!(d.events.len(), 1, "{name}: {:?}", d.ignored);
            let e = &d.events[0];
            assert_eq!(e.kind, kind, "{name}");
            assert_eq!(e.account.sam_account_name, None);
            assert_eq!(
                e.account.distinguished_name.as_deref(),
                Some("CN=Rob.Robertson,ou=csm,ou=sales,dc=helpco,dc=com")
            );
            assert_eq!(e.id, "isc:4b4d982dddff4267ab12f0f1e72b5a6d:0");
            assert_eq!(
                (e.source.as_deref(), e.identity.as_deref()),
                (Some("isc"), Some("William Wilson"))
            );
        }
    }

    #[test]
    fn the_documented_modify_and_other_sources_and_results_are_ignored_with_reasons() {
        let d = parse(&sample("provisioning-completed.json"), Utc::now(), &ad()).unwrap();
        assert!(d.events.is_empty());
        assert!(d.ignored[0].contains("\"Modify\""), "{:?}", d.ignored);
        let d = parse(&sample("create.json"), Utc::now(), &IscRules::default()).unwrap();
        assert!(d.events.is_empty());
        assert!(
            d.ignored[0].contains("not one of the AD sources"),
            "{:?}",
            d.ignored
        );
        let failed = String::from_utf8(sample("create.json"))
            .unwrap()
            .replace("\"SUCCESS\"", "\"PENDING\"");
        let d = parse(failed.as_bytes(), Utc::now(), &ad()).unwrap();
        assert!(
            d.ignored[0].contains("ended \"PENDING\""),
            "{:?}",
            d.ignored
        );
    }

    #[test]
    fn a_payload_that_breaks_a_rule_is_refused_with_the_field() {
        let not_dn = String::from_utf8(sample("create.json"))
            .unwrap()
            .replace("CN=Rob.Robertson,ou=csm,ou=sales,dc=helpco,dc=com", "rob");
        let err = parse(not_dn.as_bytes(), Utc::now(), &ad()).unwrap_err();
        assert!(
            err.to_string().contains("account.distinguished_name"),
            "{err}"
        );
        let err = parse(br#"{"accountRequests":[]}"#, Utc::now(), &ad()).unwrap_err();
        assert_eq!(err, EventError::Missing("trackingNumber"));
        assert!(parse(b"[1]", Utc::now(), &ad()).is_err());
    }

    #[test]
    fn the_content_check_tells_it_from_the_other_json_formats() {
        use crate::event::format::is_isc;
        assert!(is_isc(&sample("provisioning-completed.json")));
        assert!(is_isc(&sample("create.json")));
        for other in [
            &br#"{"schema":"mailboxd.event/v1","trackingNumber":"x","accountRequests":[]}"#[..],
            br#"{"operation":"add","objectClass":"x","trackingNumber":"x","accountRequests":[]}"#,
            br#"{"trackingNumber":"x"}"#,
            br#"{"accountRequests":[]}"#,
            b"not json",
        ] {
            assert!(!is_isc(other), "{}", String::from_utf8_lossy(other));
        }
    }
}
