//! The event contract (docs/events.md): what the IAM system publishes, decoded and validated.
//!
//! One model, [`Event`] (`model`), with the rules its values must follow (`validate`), and
//! four decoders into it: the JSON contract (`json`), IdentityIQ's XML (`iiq`),
//! midPoint's asynchronous provisioning requests (`midpoint`) and Identity Security Cloud's
//! Provisioning Completed trigger (`isc`). [`decode`] is the one entry
//! for a delivery: it opens an AMQP 1.0 body (`amqp10`), picks the decoder (`format`) and
//! applies the deployment's allow-lists (`rules`). Dependencies run one way — the decoders
//! use the model, the model knows no decoder — so another format is one more file beside them.

pub mod amqp10;
mod credentials;
mod error;
mod format;
pub mod iiq;
pub mod isc;
pub mod json;
pub mod midpoint;
mod model;
mod poison;
mod rules;
mod validate;

use chrono::Utc;

pub use error::EventError;
pub use format::Format;
/// The JSON contract's decoder: the format docs/events.md documents.
pub use json::parse;
pub use model::{
    Account, AccountName, Draft, DraftAccount, DraftMailbox, Event, EventKind, MAX_MESSAGE_BYTES,
    Mailbox, MailboxType, ROUTING_KEY_JOINER, ROUTING_KEY_LEAVER, ROUTING_KEY_MOVER, ROUTING_KEYS,
    Rename, SCHEMA_V1,
};
pub use rules::IntakeRules;
pub use validate::{MAX_CLOCK_SKEW, check_address, check_hostname};

/// One AMQP delivery as the contract sees it: the body and the properties that matter.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub body: &'a [u8],
    pub content_type: Option<&'a str>,
    /// The AMQP property: the event id when the body has none.
    pub message_id: Option<&'a str>,
    pub routing_key: &'a str,
    /// The AMQP `type` property: `amqp-1.0` when the body is AMQP 1.0 sections.
    pub message_type: Option<&'a str>,
}

impl Delivery<'_> {
    pub fn format(&self) -> Format {
        Format::of(self.body, self.content_type)
    }

    /// What of this delivery the poison table may keep when it is refused: the body with
    /// its credentials removed (JSON keys and IdentityIQ attributes alike), and none of it
    /// when it is over the size limit or too broken to tell where a credential might be.
    /// An AMQP 1.0 body is kept as the text it carried when it can be opened.
    pub(crate) fn poison_body(&self) -> Vec<u8> {
        if self.is_amqp10()
            && self.body.len() <= MAX_MESSAGE_BYTES
            && let Ok(inner) = amqp10::unwrap(self.body)
        {
            let format = Format::of(&inner.body, None);
            return poison::keepable(&inner.body, format);
        }
        poison::keepable(self.body, self.format())
    }

    fn is_amqp10(&self) -> bool {
        self.message_type == Some(amqp10::MESSAGE_TYPE)
    }
}

/// What one delivery came to: the events it carries (an IdentityIQ plan may carry several,
/// or none for mailboxd), and what the log should say about it.
#[derive(Debug, Default)]
pub struct Decoded {
    pub events: Vec<Event>,
    pub ignored: Vec<String>,
    /// Credential attribute names an IdentityIQ sender included (values never kept).
    pub credentials: Vec<String>,
}

impl From<iiq::Parsed> for Decoded {
    fn from(p: iiq::Parsed) -> Decoded {
        Decoded {
            events: p.events,
            ignored: p.ignored,
            credentials: p.credentials,
        }
    }
}

/// Decodes a delivery of any format into events that obey `rules`. An AMQP 1.0 body is
/// opened first, and what it carried decoded as if it had come alone (its properties'
/// `message-id` standing in for a missing AMQP `message_id`).
pub fn decode(delivery: &Delivery<'_>, rules: &IntakeRules) -> Result<Decoded, EventError> {
    if delivery.body.len() > MAX_MESSAGE_BYTES {
        return Err(EventError::TooLarge(delivery.body.len()));
    }
    if delivery.is_amqp10() {
        let inner = amqp10::unwrap(delivery.body).map_err(EventError::Amqp10)?;
        let opened = Delivery {
            body: &inner.body,
            content_type: None,
            message_id: delivery.message_id.or(inner.message_id.as_deref()),
            routing_key: delivery.routing_key,
            message_type: None,
        };
        return decode_one(&opened, rules);
    }
    decode_one(delivery, rules)
}

fn decode_one(delivery: &Delivery<'_>, rules: &IntakeRules) -> Result<Decoded, EventError> {
    let decoded = match delivery.format() {
        Format::Midpoint => Decoded {
            events: vec![midpoint::parse(
                delivery.body,
                delivery.message_id,
                || iiq::content_id_with("midpoint", delivery.body),
                Utc::now(),
                &rules.midpoint,
            )?],
            ..Decoded::default()
        },
        Format::Isc => isc::parse(delivery.body, Utc::now(), &rules.isc)?,
        Format::IdentityIq => iiq::parse(
            delivery.body,
            delivery.message_id,
            Utc::now(),
            &rules.iiq_applications,
        )?
        .into(),
        Format::Json => Decoded {
            events: vec![json::parse(
                delivery.body,
                delivery.content_type,
                delivery.message_id,
                delivery.routing_key,
            )?],
            ..Decoded::default()
        },
    };
    for event in &decoded.events {
        rules.check(event)?;
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joiner(body: &[u8]) -> Delivery<'_> {
        Delivery {
            body,
            content_type: None,
            message_id: None,
            routing_key: ROUTING_KEY_JOINER,
            message_type: None,
        }
    }

    #[test]
    fn routing_domains_outside_the_allow_list_are_refused() {
        let body = br#"{"schema":"mailboxd.event/v1","id":"r1","type":"joiner","occurred_at":"2026-11-22T10:00:00Z","account":{"sam_account_name":"jdoe"},"mailbox":{"remote_routing_address":"jdoe@evil.example"}}"#;
        let rules = IntakeRules {
            allowed_routing_domains: vec!["tenant.mail.onmicrosoft.com".into()],
            ..IntakeRules::default()
        };
        let err = decode(&joiner(body), &rules).unwrap_err();
        assert!(
            err.to_string()
                .contains("not one of the allowed routing domains"),
            "{err}"
        );
        let ok =
            String::from_utf8_lossy(body).replace("evil.example", "tenant.mail.onmicrosoft.com");
        assert_eq!(
            decode(&joiner(ok.as_bytes()), &rules).unwrap().events.len(),
            1
        );
    }

    #[test]
    fn a_midpoint_body_decides_its_type_plain_or_wrapped_in_amqp_1_0() {
        let leaver = br#"{"operation":"delete","objectClass":"AccountObjectClass","primaryIdentifiers":{"login":["jack"]}}"#;
        // One fixed routing key for every operation: the body decides.
        let plain = decode(&joiner(leaver), &IntakeRules::default()).unwrap();
        assert_eq!(plain.events[0].kind, EventKind::Leaver);
        let text = std::str::from_utf8(leaver).unwrap();
        let mut wrapped = vec![0x00, 0x53, 0x77, 0xa1, u8::try_from(text.len()).unwrap()];
        wrapped.extend(text.as_bytes());
        let delivery = Delivery {
            message_type: Some(amqp10::MESSAGE_TYPE),
            message_id: Some("ID:1"),
            ..joiner(&wrapped)
        };
        let got = decode(&delivery, &IntakeRules::default()).unwrap();
        assert_eq!(
            (got.events[0].kind, got.events[0].id.as_str()),
            (EventKind::Leaver, "ID:1")
        );
        let broken = Delivery {
            message_type: Some(amqp10::MESSAGE_TYPE),
            ..joiner(&wrapped[..10])
        };
        let err = decode(&broken, &IntakeRules::default()).unwrap_err();
        assert!(err.to_string().contains("runs past the end"), "{err}");
        assert_eq!(broken.poison_body(), &wrapped[..10]);
    }

    #[test]
    fn an_unreadable_xml_body_is_withheld_from_the_poison_table() {
        let broken = joiner(b"<ProvisioningPlan><entry key=\"pwdText\" value=\"S3cret\"");
        assert!(
            String::from_utf8(broken.poison_body())
                .unwrap()
                .starts_with("[body withheld by mailboxd: unreadable XML")
        );
        let json = joiner(b"{\"not\": \"an event\"}");
        assert_eq!(json.poison_body(), json.body);
    }
}
