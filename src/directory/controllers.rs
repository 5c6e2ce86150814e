//! Which domain controllers mailboxd talks to: only the configured ones, ever. An event's
//! `created_on_server` can put one of them first (so a fresh account is read where it was
//! created), never add another: an unknown name is ignored with a warning. The service
//! account's bind goes nowhere else, and the name Exchange is given as `-DomainController`
//! is a configured DC's too (its rootDSE `dnsHostName` only when that names the DC).

use url::Url;

/// Whether `named` (from an event or from AD) names the configured host `configured`: the
/// same DNS name in any case, or a short name that is the other's first label
/// (`dc1` and `dc1.corp.example`). Two different FQDNs never match, nor does an address.
pub(crate) fn names_host(configured: &str, named: &str) -> bool {
    if configured.eq_ignore_ascii_case(named) {
        return true;
    }
    let first = |s: &str| s.split('.').next().unwrap_or_default().to_owned();
    let short = |s: &str| !s.contains('.');
    (short(configured) && first(named).eq_ignore_ascii_case(configured))
        || (short(named) && first(configured).eq_ignore_ascii_case(named))
}

/// The configured controllers in the order they will be tried: the one `preferred` names
/// first (matched against each URL's host and the DNS name that controller reported,
/// `learned`), then the rest in configured order. A `preferred` that names none of them
/// is ignored with a warning: it is never contacted.
pub(crate) fn ordered(
    urls: &[Url],
    learned: impl Fn(&Url) -> Option<String>,
    preferred: Option<&str>,
) -> Vec<Url> {
    let mut out = Vec::with_capacity(urls.len());
    if let Some(named) = preferred {
        let known = urls.iter().find(|u| {
            u.host_str().is_some_and(|h| names_host(h, named))
                || learned(u).is_some_and(|dns| names_host(&dns, named))
        });
        match known {
            Some(u) => out.push(u.clone()),
            None => tracing::warn!(
                created_on_server = %named,
                "the event names a domain controller that is not configured (ldap.urls); it is ignored, never contacted"
            ),
        }
    }
    for u in urls {
        if !out.contains(u) {
            out.push(u.clone());
        }
    }
    out
}

/// The name Exchange is given for the controller at `url` (`-DomainController`): the DNS
/// name it reported when that names the configured host, or — configured by address,
/// where no name can be compared — when it is a valid DNS name; otherwise the configured
/// host itself, never a name only the answer supplied.
pub(crate) fn exchange_name(url: &Url, reported: Option<&str>) -> String {
    let configured = url.host_str().unwrap_or_default();
    let Some(reported) = reported.filter(|r| crate::event::check_hostname(r).is_ok()) else {
        return configured.to_owned();
    };
    // ldap: is not a "special" URL scheme, so the url crate leaves its host opaque text.
    let by_address = configured
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    if by_address || names_host(configured, reported) {
        return reported.to_owned();
    }
    tracing::warn!(
        dc = %url,
        dns_host_name = %reported,
        "the domain controller reports a DNS name other than its configured one; Exchange is given the configured name"
    );
    configured.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn an_event_reorders_the_configured_controllers_and_never_adds_one() {
        let urls = [
            url("ldaps://dc1.corp.example"),
            url("ldaps://dc2.corp.example:636"),
            url("ldaps://dc3"),
        ];
        let none = |_: &Url| None;
        let hosts = |pref| {
            ordered(&urls, none, pref)
                .iter()
                .map(|u| u.host_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        let configured = ["dc1.corp.example", "dc2.corp.example", "dc3"];
        assert_eq!(hosts(None), configured);
        assert_eq!(
            hosts(Some("dc2.CORP.example")),
            ["dc2.corp.example", "dc1.corp.example", "dc3"]
        );
        assert_eq!(hosts(Some("dc2"))[0], "dc2.corp.example");
        assert_eq!(hosts(Some("dc3.corp.example"))[0], "dc3");
        for stranger in ["evil.example", "dc1.evil.example", "127.0.0.2", "dc4"] {
            assert_eq!(hosts(Some(stranger)), configured, "{stranger}");
        }
        // A controller configured by address is found by the name it reported.
        let by_ip = [url("ldap://127.0.0.1:1389"), url("ldap://127.0.0.3:1389")];
        let learned = |u: &Url| {
            (u.host_str() == Some("127.0.0.3")).then(|| "lab-dc2.corp.example".to_owned())
        };
        let got = ordered(&by_ip, learned, Some("LAB-DC2.corp.example"));
        assert_eq!(got[0].host_str(), Some("127.0.0.3"));
    }

    #[test]
    fn exchange_is_given_a_configured_name() {
        let dc = url("ldaps://dc1.corp.example");
        assert_eq!(
            exchange_name(&dc, Some("DC1.corp.example")),
            "DC1.corp.example"
        );
        assert_eq!(exchange_name(&dc, Some("evil.example")), "dc1.corp.example");
        assert_eq!(exchange_name(&dc, None), "dc1.corp.example");
        let short = url("ldaps://dc1");
        assert_eq!(
            exchange_name(&short, Some("dc1.corp.example")),
            "dc1.corp.example"
        );
        let ip = url("ldap://127.0.0.1:1389");
        assert_eq!(
            exchange_name(&ip, Some("lab-dc1.corp.example")),
            "lab-dc1.corp.example"
        );
        assert_eq!(exchange_name(&ip, Some("bad name\n")), "127.0.0.1");
    }
}
