//! The fuzz targets' entry points: each runs the daemon's own code on bytes an outsider
//! controls, exactly as the daemon does, and must return without panicking whatever the
//! bytes. `fuzz/fuzz_targets/<name>.rs` calls `<name>` under libFuzzer, and
//! `tests/it/fuzz_corpus.rs` replays every file of `fuzz/corpus/<name>/` through it in
//! `cargo test`. Thin wrappers on purpose: the decoders they call are the ones to change.

use std::sync::OnceLock;

use crate::event::{self, Delivery, IntakeRules, ROUTING_KEY_JOINER, ROUTING_KEYS};

/// A target: arbitrary bytes in, nothing out; a panic is the failure.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("json_event", json_event),
    ("iiq_event", iiq_event),
    ("midpoint_event", midpoint_event),
    ("isc_event", isc_event),
    ("amqp10_body", amqp10_body),
    ("amqp_delivery", amqp_delivery),
    ("ps_result", ps_result),
    ("winrm_reply", winrm_reply),
    ("ldap_entry", ldap_entry),
    ("xml_tree", xml_tree),
    ("graph_response", graph_response),
    ("http_authorization", http_authorization),
    ("traceparent", traceparent),
    ("retry_after", retry_after),
];

/// The intake's rules with the shipped defaults (`[amqp]`), plus an allow-list so the
/// routing-domain check runs too.
fn rules() -> &'static IntakeRules {
    static RULES: OnceLock<IntakeRules> = OnceLock::new();
    RULES.get_or_init(|| {
        let amqp = crate::config::Amqp::default();
        IntakeRules {
            iiq_applications: amqp.iiq_applications,
            allowed_routing_domains: vec!["tenant.mail.onmicrosoft.com".into()],
            midpoint: amqp.midpoint,
            isc: event::isc::IscRules {
                ad_sources: vec!["Corporate Active Directory".into()],
            },
        }
    })
}

/// One delivery's body through `event::decode` as a given content type, and what the poison
/// table would keep of it when refused.
fn decode_as(body: &[u8], content_type: &str) {
    decode_with(body, Some(content_type), None);
}

/// One delivery's body with the given content type and AMQP `type` property, on every
/// routing key.
fn decode_with(body: &[u8], content_type: Option<&str>, message_type: Option<&str>) {
    for routing_key in ROUTING_KEYS {
        let delivery = Delivery {
            body,
            content_type,
            message_id: Some("fuzz-message-id"),
            routing_key,
            message_type,
        };
        if event::decode(&delivery, rules()).is_err() {
            let _ = delivery.poison_body();
        }
    }
}

/// A body as a `mailboxd.event/v1` JSON event.
pub fn json_event(data: &[u8]) {
    decode_as(data, "application/json");
}

/// A body as IdentityIQ XML (a ProvisioningPlan or an AccountRequest).
pub fn iiq_event(data: &[u8]) {
    decode_as(data, "application/xml");
}

/// A body as Identity Security Cloud's Provisioning Completed trigger posts it: through the
/// decoder the HTTP listener calls, and through `event::decode` as `application/json`
/// (where the content check must send it to the right decoder).
pub fn isc_event(data: &[u8]) {
    let _ = event::isc::parse(data, chrono::Utc::now(), &rules().isc);
    decode_as(data, "application/json");
}

/// A body as midPoint sends it (`simplifiedJson`, JMS text): without a content type, so
/// the body decides its format and type.
pub fn midpoint_event(data: &[u8]) {
    decode_with(data, None, None);
}

/// A body of AMQP 1.0 sections, as RabbitMQ hands a message published over AMQP 1.0 to
/// intake (`type` `amqp-1.0`): opened (`event::amqp10`), then decoded as what it carried.
pub fn amqp10_body(data: &[u8]) {
    decode_with(data, None, Some(event::amqp10::MESSAGE_TYPE));
}

/// AMQP basic properties (headers included) in their wire encoding, then the body: what
/// intake stores of the delivery (`intake::read_delivery`), the poison row's headers as
/// the JSON that goes to the database.
pub fn amqp_delivery(data: &[u8]) {
    let Ok((body, props)) = lapin::protocol::basic::parse_properties(data) else {
        return;
    };
    let cfg = crate::config::Amqp::default();
    let stored = crate::intake::read_delivery(
        &props,
        "iam.events",
        ROUTING_KEY_JOINER,
        body,
        rules(),
        &cfg,
    );
    if let crate::intake::Stored::Poison(row) = stored {
        let _ = serde_json::to_string(&row.headers);
    }
}

/// A PowerShell process's stdout, as the worker reads a batch's result
/// (`Exchange::read_output`): the `MAILBOXD-RESULT` lines for the batch's jobs, the fatal
/// line, redaction, classification.
pub fn ps_result(data: &[u8]) {
    let output = winrm::CommandOutput {
        stdout: data.to_vec(),
        stderr: Vec::new(),
        exit_code: 0,
    };
    // The batch: every job the lines name, and one they do not.
    let parsed = ps_templates::parse_stdout(&String::from_utf8_lossy(data));
    let mut ids: Vec<uuid::Uuid> = parsed
        .results
        .iter()
        .filter_map(|r| r.job_id.as_deref()?.parse().ok())
        .collect();
    ids.push(uuid::Uuid::nil());
    let accounts: Vec<ps_templates::AccountData> = ids
        .into_iter()
        .map(|job_id| ps_templates::AccountData {
            job_id,
            identity: "jdoe".into(),
            sam_account_name: "jdoe".into(),
            domain_controller: None,
            remote_routing_address: None,
            alias: None,
            primary_smtp_address: None,
            archive: false,
            ..ps_templates::AccountData::default()
        })
        .collect();
    if let Some(exchange) = exchange() {
        for template in ps_templates::Template::ALL {
            let _ = exchange.read_output(template, &accounts, &output);
        }
    }
}

/// An Exchange client that never connects (nothing here sends), redacting one secret.
fn exchange() -> Option<&'static crate::exchange::Exchange> {
    static EXCHANGE: OnceLock<Option<crate::exchange::Exchange>> = OnceLock::new();
    EXCHANGE
        .get_or_init(|| {
            let endpoint = url::Url::parse("http://127.0.0.1:5985/wsman").ok()?;
            let mut cfg = winrm::ClientConfig::new(endpoint, "fuzz", "unused".to_owned().into());
            cfg.allow_unencrypted = true;
            let client = winrm::WinrmClient::new(cfg).ok()?;
            let ex = crate::exchange::Exchange::new(
                client,
                &crate::config::Exchange::default(),
                "fuzz".into(),
            );
            Some(ex.redacting(["S3cret!".to_owned()]))
        })
        .as_ref()
}

/// A WinRM host's reply: SOAP, faults, Receive streams, the encrypted framing, CLIXML.
pub fn winrm_reply(data: &[u8]) {
    winrm::read_untrusted_reply(data);
}

/// A BER `SearchResultEntry` from a domain controller, read into an account as the
/// directory does (`directory::search_entry`, then `account_from_entry` under each rule),
/// and what the cloud watch makes of it (`cloud::seen`).
pub fn ldap_entry(data: &[u8]) {
    let Ok((_, tag)) = ldap3::asn1::parse_tag(data) else {
        return;
    };
    let Some(entry) = crate::directory::search_entry(ldap3::ResultEntry::new(tag)) else {
        return;
    };
    for rule in [
        crate::config::SyncRule::ConsistencyGuid,
        crate::config::SyncRule::ExternalDirectoryObjectId,
        crate::config::SyncRule::Off,
    ] {
        let account = crate::directory::account_from_entry(&entry, rule);
        let _ = crate::cloud::seen(&account);
    }
}

/// Any text as an XML document (the `xml` crate's tree, both parse modes), walked.
pub fn xml_tree(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let trees = [xml::parse(text), xml::parse_allowing_external_doctype(text)];
    for root in trees.into_iter().flatten() {
        let _ = (
            root.find("", "entry"),
            root.attr("key"),
            root.trimmed_text(),
        );
    }
}

/// A body from Microsoft's token endpoint or from Graph, through every reader the Graph
/// client has (`graph`): the token answer, a token refusal, a Graph answer under each status
/// the client tells apart, the user and mailboxSettings readers and the view they make, the
/// provisioning error's XML, and the same text as a `Retry-After` value.
pub fn graph_response(data: &[u8]) {
    use crate::graph::{self, MailboxAnswer, Read};
    let _ = graph::parse_token_response(data);
    let _ = graph::token_refusal(400, data).to_string();
    for status in [200, 401, 403, 404, 429, 503, 418] {
        let _ = graph::classify(status, None, data, Read::MailboxSettings);
    }
    if let Ok(user) = graph::parse_user(data) {
        let _ = graph::cloud_view(user.clone(), MailboxAnswer::None);
        let _ = graph::cloud_view(user, MailboxAnswer::Exists(None));
    }
    let _ = graph::parse_mailbox_settings(data);
    let text = String::from_utf8_lossy(data);
    let _ = graph::error_text(&text);
    let _ = graph::parse_retry_after(&text, std::time::SystemTime::now());
}

/// An `Authorization` header value, as the HTTP intake reads it before comparing the
/// credentials it presents (`http_intake::parse_authorization`).
pub fn http_authorization(data: &[u8]) {
    let _ = crate::http_intake::parse_authorization(data);
}

/// A `traceparent` header value (W3C Trace Context), as intake reads it from an AMQP or an
/// HTTP header; what it keeps must read back the same.
pub fn traceparent(data: &[u8]) {
    if let Ok(t) = crate::trace::TraceParent::parse(data) {
        let kept = t.to_string();
        assert_eq!(crate::trace::TraceParent::parse(kept.as_bytes()), Ok(t));
    }
}

/// A `Retry-After` header value, as the HTTP outcome channels (IdentityIQ, the callback) read
/// it from a receiver's 429 or 503: never a wait longer than the cap.
pub fn retry_after(data: &[u8]) {
    if let Some(wait) = crate::outcome_http::read_retry_after(data) {
        assert!(wait <= crate::outcome_http::RETRY_AFTER_CAP);
    }
}
