//! What a deployment adds to the contract (from `[amqp]`): which IdentityIQ applications
//! are for mailboxd, and which domains a remote routing address may point to. Checked on
//! the decoded [`Event`], so both formats obey the same allow-list.

use super::error::EventError;
use super::model::Event;

/// What the intake checks beyond the contract itself (from `[amqp]`).
#[derive(Debug, Clone, Default)]
pub struct IntakeRules {
    /// IdentityIQ application names whose AccountRequests are for mailboxd.
    pub iiq_applications: Vec<String>,
    /// Domains a remote routing address may use; empty: any.
    pub allowed_routing_domains: Vec<String>,
    /// What midPoint's attributes mean (`[amqp.midpoint]`).
    pub midpoint: super::midpoint::AttributeMap,
    /// Which Identity Security Cloud sources are this AD (set by the listener that takes
    /// ISC's triggers; default: none).
    pub isc: super::isc::IscRules,
}

impl IntakeRules {
    /// Refuses an event whose remote routing address is outside the allowed domains.
    pub fn check(&self, event: &Event) -> Result<(), EventError> {
        if self.allowed_routing_domains.is_empty() {
            return Ok(());
        }
        let Some(rra) = event
            .mailbox
            .as_ref()
            .and_then(|m| m.remote_routing_address.as_deref())
        else {
            return Ok(());
        };
        let domain = rra.rsplit_once('@').map_or("", |(_, d)| d);
        if self
            .allowed_routing_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
        {
            return Ok(());
        }
        Err(EventError::invalid(
            "mailbox.remote_routing_address",
            format!(
                "domain {domain:?} is not one of the allowed routing domains ({})",
                self.allowed_routing_domains.join(", ")
            ),
        ))
    }
}
