//! A mover in the directory: what must change before Exchange is asked, and whether AD
//! shows afterwards the addresses Exchange would give (docs/decisions.md, "Movers").
//!
//! Exchange's email address policy decides how the primary address changes
//! (EmailAddressPolicyEnabled, read off msExchPoliciesExcluded): under a policy Exchange
//! computes the new primary on the change and keeps the old one as a secondary `smtp:`
//! address (policies only add addresses); without one mailboxd sets the primary
//! (`Set-RemoteMailbox -PrimarySmtpAddress`) and Exchange keeps the old one as a proxy
//! address. Either way the old primary must still be a proxy address afterwards.

use super::{Plan, Wanted};
use crate::directory::{Account, AccountState, RecipientType};
use crate::job::{ErrorClass, JobEffect};

/// What differs between the account and what the mover asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Changes {
    alias: bool,
    user_principal_name: bool,
    remote_routing_address: bool,
    /// The primary address differs from the one asked for.
    primary: bool,
}

/// `targetAddress` without its `SMTP:` prefix.
pub(super) fn routing(a: &Account) -> Option<&str> {
    a.target_address.as_deref().map(|t| {
        t.split_once(':')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("smtp"))
            .map_or(t, |(_, address)| address)
    })
}

pub(super) fn differs(current: Option<&str>, wanted: Option<&str>) -> bool {
    wanted.is_some_and(|w| !current.is_some_and(|c| c.eq_ignore_ascii_case(w)))
}

fn changes(a: &Account, wanted: Wanted<'_>) -> Changes {
    let Some(r) = wanted.rename else {
        return Changes::default();
    };
    Changes {
        // An alias differing only in case is a change too: Exchange keeps the case given.
        alias: r
            .alias
            .as_deref()
            .is_some_and(|w| a.alias.as_deref() != Some(w)),
        user_principal_name: differs(
            a.user_principal_name.as_deref(),
            r.user_principal_name.as_deref(),
        ),
        remote_routing_address: differs(routing(a), wanted.remote_routing_address),
        primary: differs(a.mail.as_deref(), r.primary_smtp_address.as_deref()),
    }
}

/// Decides a mover from what the domain controller shows.
pub(super) fn plan(a: Option<&Account>, sam: &str, dc: &str, wanted: Wanted<'_>) -> Plan {
    let Some(a) = a else {
        return Plan::Fail(
            ErrorClass::Transient,
            format!(
                "account {sam:?} is not on domain controller {dc} (replication lag, or it was renamed or deleted); retried"
            ),
        );
    };
    if a.recipient != RecipientType::RemoteMailbox {
        return Plan::Fail(
            ErrorClass::Permanent,
            format!(
                "account {sam:?} has no remote mailbox on {dc} (recipient type {:?}); a mover changes an existing remote mailbox's addresses: send a joiner first",
                a.recipient
            ),
        );
    }
    let c = changes(a, wanted);
    let other = c.alias || c.user_principal_name || c.remote_routing_address;
    if a.address_policy_enabled && c.primary && !other {
        return Plan::Fail(
            ErrorClass::Permanent,
            format!(
                "the email address policy decides the primary address of {sam:?} (EmailAddressPolicyEnabled), so a mover cannot set it to {:?}: send the new alias (the policy builds the address from the names and the alias), or have an Exchange administrator turn the policy off for this recipient first",
                wanted
                    .rename
                    .and_then(|r| r.primary_smtp_address.as_deref())
                    .unwrap_or_default()
            ),
        );
    }
    let primary = c.primary && !a.address_policy_enabled;
    if other || primary {
        Plan::Run
    } else {
        Plan::Done(JobEffect::Already)
    }
}

/// Whether AD shows, after Exchange reported `status`, what the mover asked for: the new
/// alias, UPN and remote routing address; without a policy the new primary; and the old
/// primary (from `before`) still a proxy address.
pub(in crate::worker) fn verified(
    status: JobEffect,
    before: &AccountState,
    after: &AccountState,
    wanted: Wanted<'_>,
) -> Result<(), String> {
    let dc = &after.domain_controller;
    let Some(a) = after.account.as_ref() else {
        return Err(format!(
            "the account is no longer on {dc} after Exchange reported {:?}",
            status.as_str()
        ));
    };
    if a.recipient != RecipientType::RemoteMailbox {
        return Err(format!(
            "Exchange reported {:?} but {dc} shows no remote mailbox (recipient type {:?}); retried",
            status.as_str(),
            a.recipient
        ));
    }
    let c = changes(a, wanted);
    let missing: Vec<&str> = [
        (c.alias, "the alias (mailNickname)"),
        (c.user_principal_name, "the userPrincipalName"),
        (
            c.remote_routing_address,
            "the remote routing address (targetAddress)",
        ),
        (
            c.primary && !a.address_policy_enabled,
            "the primary address (mail)",
        ),
    ]
    .into_iter()
    .filter_map(|(off, what)| off.then_some(what))
    .collect();
    if !missing.is_empty() {
        return Err(format!(
            "Exchange reported {:?} but {dc} does not show the new {}; retried",
            status.as_str(),
            missing.join(", ")
        ));
    }
    let old = before.account.as_ref().and_then(|b| b.mail.as_deref());
    match old {
        Some(old) if !has_proxy(a, old) => Err(format!(
            "Exchange reported {:?} but {dc} no longer shows the old primary address {old} among the proxy addresses: mail to it would bounce; an Exchange administrator should add it back (smtp:{old})",
            status.as_str()
        )),
        _ => Ok(()),
    }
}

/// `address` is one of the account's proxy addresses (`SMTP:` or `smtp:`).
fn has_proxy(a: &Account, address: &str) -> bool {
    a.proxy_addresses.iter().any(|p| {
        p.split_once(':').is_some_and(|(scheme, addr)| {
            scheme.eq_ignore_ascii_case("smtp") && addr.eq_ignore_ascii_case(address)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Rename;

    fn remote(policy: bool) -> Account {
        Account {
            distinguished_name: "CN=jsmith,CN=Users,DC=corp,DC=example".into(),
            sam_account_name: "jsmith".into(),
            user_principal_name: Some("jsmith@corp.example".into()),
            object_guid: None,
            user_account_control: 512,
            disabled: false,
            recipient: RecipientType::RemoteMailbox,
            recipient_type_details: Some(2_147_483_648),
            remote_recipient_type: Some(1),
            hidden: false,
            target_address: Some("SMTP:jsmith@t.mail.onmicrosoft.com".into()),
            mail: Some("Jane.Smith@corp.example".into()),
            proxy_addresses: vec![
                "SMTP:Jane.Smith@corp.example".into(),
                "smtp:jsmith@t.mail.onmicrosoft.com".into(),
            ],
            alias: Some("jsmith".into()),
            cloud_synced: true,
            archive_guid: None,
            archive_name: None,
            archive_status: None,
            external_directory_object_id: None,
            address_policy_enabled: policy,
        }
    }

    fn state(a: Account) -> AccountState {
        AccountState {
            domain_controller: "dc1.corp.example".into(),
            url: "ldaps://dc1.corp.example".into(),
            account: Some(a),
        }
    }

    fn asking<'a>(r: &'a Rename, rra: Option<&'a str>) -> Wanted<'a> {
        Wanted {
            rename: Some(r),
            remote_routing_address: rra,
            ..Wanted::default()
        }
    }

    #[test]
    fn a_primary_alone_under_a_policy_fails_with_what_to_do_and_runs_without_one() {
        let r = Rename {
            primary_smtp_address: Some("jane.doe@corp.example".into()),
            ..Rename::default()
        };
        let under_policy = plan(Some(&remote(true)), "jsmith", "dc1", asking(&r, None));
        assert!(
            matches!(&under_policy, Plan::Fail(ErrorClass::Permanent, why) if why.contains("turn the policy off")),
            "{under_policy:?}"
        );
        assert_eq!(
            plan(Some(&remote(false)), "jsmith", "dc1", asking(&r, None)),
            Plan::Run
        );
    }

    #[test]
    fn nothing_to_change_is_already_and_no_remote_mailbox_is_permanent() {
        let same = Rename {
            alias: Some("jsmith".into()),
            user_principal_name: Some("JSMITH@corp.example".into()),
            ..Rename::default()
        };
        let rra = Some("jsmith@t.mail.onmicrosoft.com");
        assert_eq!(
            plan(Some(&remote(true)), "jsmith", "dc1", asking(&same, rra)),
            Plan::Done(JobEffect::Already)
        );
        let mut user = remote(true);
        user.recipient = RecipientType::None;
        assert!(matches!(
            plan(Some(&user), "jsmith", "dc1", asking(&same, rra)),
            Plan::Fail(ErrorClass::Permanent, _)
        ));
        assert!(matches!(
            plan(None, "jsmith", "dc1", asking(&same, rra)),
            Plan::Fail(ErrorClass::Transient, _)
        ));
    }

    #[test]
    fn verification_wants_the_new_values_and_the_old_primary_kept() {
        let r = Rename {
            alias: Some("jdoe".into()),
            primary_smtp_address: Some("jane.doe@corp.example".into()),
            ..Rename::default()
        };
        let rra = Some("jdoe@t.mail.onmicrosoft.com");
        let before = state(remote(false));
        let mut after = remote(false);
        after.alias = Some("jdoe".into());
        after.target_address = Some("SMTP:jdoe@t.mail.onmicrosoft.com".into());
        after.mail = Some("jane.doe@corp.example".into());
        after.proxy_addresses = vec![
            "SMTP:jane.doe@corp.example".into(),
            "smtp:Jane.Smith@corp.example".into(),
        ];
        let ok = verified(
            JobEffect::Renamed,
            &before,
            &state(after.clone()),
            asking(&r, rra),
        );
        assert_eq!(ok, Ok(()));
        after.proxy_addresses.pop();
        let lost = verified(
            JobEffect::Renamed,
            &before,
            &state(after.clone()),
            asking(&r, rra),
        );
        assert!(
            lost.unwrap_err()
                .contains("old primary address Jane.Smith@corp.example")
        );
        after.alias = Some("jsmith".into());
        let stale = verified(JobEffect::Renamed, &before, &state(after), asking(&r, rra));
        assert!(stale.unwrap_err().contains("the alias (mailNickname)"));
    }

    #[test]
    fn a_mover_without_a_policy_is_paced_for_the_second_set_only_when_it_adds_the_address() {
        use crate::exchange::{AccountData, Template};
        let r = Rename {
            alias: Some("jane.doe".into()),
            ..Rename::default()
        };
        let new_rra = Some("jane.doe@t.mail.onmicrosoft.com");
        let expected = |a: &Account, rra| {
            let seen = crate::worker::plan::seen(a, asking(&r, rra));
            Template::RenameRemoteMailbox.expected_cmdlets(&AccountData::default(), &seen)
        };
        // Under a policy Exchange adds the new routing address: Get and one Set.
        assert_eq!(expected(&remote(true), new_rra), 2);
        // Without one, the second Set adds it to the proxy addresses.
        assert_eq!(expected(&remote(false), new_rra), 3);
        // Unless it is there already (any case), or it does not change.
        let mut known = remote(false);
        known
            .proxy_addresses
            .push("smtp:Jane.Doe@t.mail.onmicrosoft.com".into());
        assert_eq!(expected(&known, new_rra), 2);
        assert_eq!(
            expected(&remote(false), Some("jsmith@t.mail.onmicrosoft.com")),
            2
        );
    }
}
