//! The lab's email address policy: how Exchange picks a recipient's primary SMTP address
//! when the cmdlet is given none, so that tests see the difference between what an event
//! said and what AD shows (`mail`, `proxyAddresses`).
//!
//! The template language is Exchange's: `%g` given name, `%s` surname, `%i` middle initial,
//! `%m` alias, `%d` display name, `%Ng`/`%Ns` the first N characters, `%rxy` replace every
//! later `x` by `y` (`%rxx` removes it), `%%` a percent sign; anything else is literal.
//! Characters an SMTP local part cannot carry are translated as Exchange does (a space
//! becomes `-`, `Ä` `Ae`, `ß` `ss`, `é` `e`, …) or dropped. When the address is taken,
//! Exchange appends a number to the local part, starting at 2 (`John.Smith2@…`). A template
//! that gives nothing (no given name or surname) falls back to the alias.
//!
//! On a rename (`renamed_primary`, `with_primary`) the policy is applied again as Exchange
//! applies it on any change to a recipient it covers: the new primary from the template,
//! the old primary kept as a secondary `smtp:` address, since email address policies only
//! add addresses and never remove one (Practical 365, "Exchange Server 2010 Email Address
//! Policies"; ucservice.blogspot.com 2013-12, "Exchange Server 2010 email address policy").

use crate::directory::LabAccount;

/// The primary address Exchange gives `account` (alias `alias`) under the lab's policy,
/// numbered past every address another account holds (`taken`: whether one does; the
/// directory's address index answers it).
pub fn primary_for(account: &LabAccount, alias: &str, taken: impl Fn(&str) -> bool) -> String {
    let person = Person {
        given_name: account.given_name.as_deref(),
        surname: account.surname.as_deref(),
        alias,
        ..Person::default()
    };
    AddressPolicy::default().primary(&person, taken)
}

/// Whether one of `others` holds `candidate` under any scheme.
fn held_by<'a>(mut others: impl Iterator<Item = &'a LabAccount>, candidate: &str) -> bool {
    others.any(|a| {
        a.proxy_addresses.iter().any(|p| {
            p.split_once(':')
                .is_some_and(|(_, addr)| addr.eq_ignore_ascii_case(candidate))
        })
    })
}

/// The primary address the policy gives the account at `index` when it is changed (a
/// rename): as [`primary_for`], but numbered past the addresses of the other accounts only
/// (its own old addresses are no collision: the policy may give it its old primary back).
pub fn renamed_primary(index: usize, alias: &str, accounts: &[LabAccount]) -> String {
    let others = || {
        accounts
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != index)
            .map(|(_, a)| a)
    };
    primary_for(&accounts[index], alias, |candidate| {
        held_by(others(), candidate)
    })
}

/// `proxies` with `primary` as the one `SMTP:` address: the old primary demoted to a
/// secondary `smtp:` address (Exchange keeps it: policies only add addresses, and a new
/// primary set by hand demotes the old one), an `smtp:` copy of the new one promoted.
pub fn with_primary(proxies: &[String], primary: &str) -> Vec<String> {
    let mut out = vec![format!("SMTP:{primary}")];
    for p in proxies {
        let Some((scheme, addr)) = p.split_once(':') else {
            out.push(p.clone());
            continue;
        };
        if scheme.eq_ignore_ascii_case("smtp") {
            if !addr.eq_ignore_ascii_case(primary) {
                out.push(format!("smtp:{addr}"));
            }
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// `proxies` with `address` added as a secondary `smtp:` address unless it is one already.
pub fn with_secondary(proxies: &[String], address: &str) -> Vec<String> {
    let known = proxies.iter().any(|p| {
        p.split_once(':')
            .is_some_and(|(s, a)| s.eq_ignore_ascii_case("smtp") && a.eq_ignore_ascii_case(address))
    });
    let mut out = proxies.to_vec();
    if !known {
        out.push(format!("smtp:{address}"));
    }
    out
}

/// What the template reads of an account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person<'a> {
    pub given_name: Option<&'a str>,
    pub surname: Option<&'a str>,
    pub initials: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub alias: &'a str,
}

/// One email address policy: `<local template>@<domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPolicy {
    local: String,
    domain: String,
}

/// The lab's default: Exchange's most common custom policy.
pub const DEFAULT_TEMPLATE: &str = "%g.%s@corp.example";

impl Default for AddressPolicy {
    fn default() -> Self {
        AddressPolicy::parse(DEFAULT_TEMPLATE).expect("the default template is valid")
    }
}

impl AddressPolicy {
    /// `%g.%s@corp.example`; `None` without exactly one `@` or with an empty domain.
    pub fn parse(template: &str) -> Option<AddressPolicy> {
        let (local, domain) = template.rsplit_once('@')?;
        if domain.is_empty() || local.contains('@') {
            return None;
        }
        Some(AddressPolicy {
            local: local.to_owned(),
            domain: domain.to_owned(),
        })
    }

    /// The primary address for `person`: the template's, numbered from 2 while `taken`
    /// says the address is in use (compared without case, as Exchange does).
    pub fn primary(&self, person: &Person<'_>, taken: impl Fn(&str) -> bool) -> String {
        let local = self.local_part(person);
        let mut candidate = format!("{local}@{}", self.domain);
        let mut n = 2u32;
        while taken(&candidate) {
            candidate = format!("{local}{n}@{}", self.domain);
            n += 1;
        }
        candidate
    }

    /// The template expanded for `person`, cleaned for SMTP; the alias if that is empty.
    pub fn local_part(&self, person: &Person<'_>) -> String {
        let mut out = String::new();
        let mut replace: Vec<(char, char)> = Vec::new();
        let mut chars = self.local.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let mut width = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                width.push(*d);
                chars.next();
            }
            let value = match chars.next() {
                Some('%') => Some("%".to_owned()),
                Some('r') => {
                    if let (Some(x), Some(y)) = (chars.next(), chars.next()) {
                        replace.push((x, y));
                    }
                    None
                }
                Some(token) => field(person, token),
                None => None,
            };
            if let Some(v) = value {
                let v = match width.parse::<usize>() {
                    Ok(n) => v.chars().take(n).collect(),
                    Err(_) => v,
                };
                out.push_str(&clean(&v, &replace));
            }
        }
        let trimmed = out.trim_matches(|c| c == '.' || c == '-');
        if trimmed.chars().any(|c| c.is_ascii_alphanumeric()) {
            trimmed.to_owned()
        } else {
            clean(person.alias, &[])
        }
    }
}

fn field(person: &Person<'_>, token: char) -> Option<String> {
    let v = match token {
        'g' => person.given_name,
        's' => person.surname,
        'i' => person.initials.and_then(|i| i.get(..1)),
        'd' => person.display_name,
        'm' => Some(person.alias),
        _ => None,
    };
    v.map(str::to_owned)
}

/// A name as an SMTP local part can carry it: `%r` replacements first, then Exchange's
/// translations; dots and what is outside the allowed set are dropped.
fn clean(value: &str, replace: &[(char, char)]) -> String {
    let mut out = String::new();
    for c in value.chars() {
        let c = match replace.iter().find(|(x, _)| *x == c) {
            Some((x, y)) if x == y => continue,
            Some((_, y)) => *y,
            None => c,
        };
        match translate(c) {
            Some(t) => out.push_str(t),
            None if c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) => out.push(c),
            None => {}
        }
    }
    out
}

/// Exchange's translations of characters an address cannot carry.
fn translate(c: char) -> Option<&'static str> {
    Some(match c {
        ' ' => "-",
        'Ä' => "Ae",
        'Ö' => "Oe",
        'Ü' => "Ue",
        'ä' => "ae",
        'ö' => "oe",
        'ü' => "ue",
        'ß' => "ss",
        'á' | 'à' | 'â' => "a",
        'Á' | 'À' | 'Â' => "A",
        'é' | 'è' | 'ê' => "e",
        'É' | 'È' | 'Ê' => "E",
        'í' | 'ì' | 'î' => "i",
        'Í' | 'Ì' | 'Î' => "I",
        'ó' | 'ò' | 'ô' => "o",
        'Ó' | 'Ò' | 'Ô' => "O",
        'ú' | 'ù' | 'û' => "u",
        'Ú' | 'Ù' | 'Û' => "U",
        '§' => "S",
        'µ' => "M",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person<'a>(given: &'a str, sn: &'a str) -> Person<'a> {
        Person {
            given_name: Some(given),
            surname: Some(sn),
            alias: "alias",
            ..Person::default()
        }
    }

    #[test]
    fn given_name_dot_surname_keeps_the_names_case() {
        let p = AddressPolicy::default();
        assert_eq!(
            p.primary(&person("John", "Smith"), |_| false),
            "John.Smith@corp.example"
        );
    }

    #[test]
    fn a_taken_address_gets_the_next_number_from_two() {
        let p = AddressPolicy::default();
        let taken = ["john.smith@corp.example", "JOHN.SMITH2@corp.example"];
        let is_taken = |a: &str| taken.iter().any(|t| t.eq_ignore_ascii_case(a));
        assert_eq!(
            p.primary(&person("John", "Smith"), is_taken),
            "John.Smith3@corp.example"
        );
        assert_eq!(
            p.primary(&person("Jane", "Smith"), is_taken),
            "Jane.Smith@corp.example"
        );
    }

    #[test]
    fn non_ascii_letters_are_transliterated_and_the_rest_dropped() {
        let p = AddressPolicy::default();
        let at = |g, s| p.primary(&person(g, s), |_| false);
        assert_eq!(at("Jürgen", "Müller"), "Juergen.Mueller@corp.example");
        assert_eq!(at("Renée", "Straße"), "Renee.Strasse@corp.example");
        assert_eq!(at("Ana María", "López"), "Ana-Maria.Lopez@corp.example");
        // Characters with no translation are dropped, as are ones an address cannot carry.
        assert_eq!(at("Zoë", "Ng (Ext)"), "Zo.Ng-Ext@corp.example");
        assert_eq!(at("J.R.", "Smith"), "JR.Smith@corp.example");
    }

    #[test]
    fn widths_replacements_and_the_alias() {
        let p = AddressPolicy::parse("%1g%s@corp.example").unwrap();
        assert_eq!(p.local_part(&person("Michael", "Müller")), "MMueller");
        let p = AddressPolicy::parse("%r''%g.%s@corp.example").unwrap();
        assert_eq!(p.local_part(&person("Ian", "O'Connell")), "Ian.OConnell");
        let p = AddressPolicy::parse("%m@corp.example").unwrap();
        assert_eq!(p.local_part(&person("Ian", "Smith")), "alias");
        let p = AddressPolicy::parse("%%%g@corp.example").unwrap();
        assert_eq!(p.local_part(&person("Ian", "Smith")), "%Ian");
    }

    #[test]
    fn a_new_primary_demotes_the_old_one_and_keeps_the_rest() {
        let before = [
            "SMTP:Jane.Smith@corp.example".to_owned(),
            "smtp:jsmith@tenant.mail.onmicrosoft.com".to_owned(),
            "smtp:jane.doe@corp.example".to_owned(),
            "X500:/o=ExchangeLabs/cn=jsmith".to_owned(),
        ];
        assert_eq!(
            with_primary(&before, "Jane.Doe@corp.example"),
            [
                "SMTP:Jane.Doe@corp.example",
                "smtp:Jane.Smith@corp.example",
                "smtp:jsmith@tenant.mail.onmicrosoft.com",
                "X500:/o=ExchangeLabs/cn=jsmith",
            ]
        );
        let added = with_secondary(&before, "jdoe@tenant.mail.onmicrosoft.com");
        assert_eq!(
            added.last().map(String::as_str),
            Some("smtp:jdoe@tenant.mail.onmicrosoft.com")
        );
        assert_eq!(
            with_secondary(&added, "JDOE@tenant.mail.onmicrosoft.com"),
            added
        );
    }

    #[test]
    fn without_names_the_alias_is_used() {
        let p = AddressPolicy::default();
        let nobody = Person {
            alias: "jdoe",
            ..Person::default()
        };
        assert_eq!(p.primary(&nobody, |_| false), "jdoe@corp.example");
    }

    #[test]
    fn a_template_needs_one_at_and_a_domain() {
        assert!(AddressPolicy::parse("%g.%s").is_none());
        assert!(AddressPolicy::parse("%g@").is_none());
        assert!(AddressPolicy::parse("a@b@c").is_none());
    }
}
