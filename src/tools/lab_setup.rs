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

/// The URI of the lab's Exchange server (what `exchange.connection_uris` names).
pub const LAB_EXCHANGE_URI: &str = "http://lab-ex01.corp.example/PowerShell/";

/// `[winrm]` and `[exchange]` pointed at the lab as a real deployment with a domain service
/// account sets them (docs/operations.md, "Which settings work on a real host"): NTLM, which
/// seals every message over plain HTTP (the lab has no KDC of its own; against a real domain
/// Kerberos is the recommendation, shown in tests/it/second_hop.rs), remote mode, and the
/// explicit Exchange credential that answers the second hop (the domain account's
/// `user@domain` and `domain_password`).
pub fn point_at_lab(
    s: &mut config::Settings,
    lab: &Lab,
    winrm_password: SecretString,
    domain_password: SecretString,
) {
    s.winrm.endpoint = lab.endpoint();
    s.winrm.auth = config::WinrmAuth::Ntlm;
    s.winrm.username = lab::DEFAULT_USER.into();
    s.winrm.password = Some(winrm_password);
    s.winrm.allow_unencrypted = false;
    s.exchange.mode = config::ExchangeMode::Remote;
    s.exchange.connection_uris = vec![LAB_EXCHANGE_URI.into()];
    s.exchange.username = Some(Lab::bind_dn(lab::DEFAULT_USER));
    s.exchange.password = Some(domain_password);
}
