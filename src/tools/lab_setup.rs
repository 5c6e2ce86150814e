//! The daemon's settings for a running lab: what the demo, the benchmarks and the tests use to
//! point mailboxd at the simulated host and its domain controller.

use lab::Lab;
use secrecy::SecretString;

use crate::config;

/// `[ldap]` settings that point mailboxd at the lab's domain controller, when it serves one.
pub fn ldap_settings(lab: &Lab, user: &str, password: SecretString) -> Option<config::Ldap> {
    Some(config::Ldap {
        urls: vec![lab.ldap_url()?],
        base_dn: lab::directory::LAB_BASE_DN.into(),
        bind_dn: Lab::bind_dn(user),
        password: Some(password),
        // The lab speaks plain LDAP on loopback; said explicitly, as the client requires.
        starttls: false,
        allow_plaintext: true,
        ..config::Ldap::default()
    })
}
