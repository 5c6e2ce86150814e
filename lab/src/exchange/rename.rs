//! rename-remote-mailbox.ps1 against the lab's directory (a mover): Get-RemoteMailbox, then
//! Set-RemoteMailbox with what differs, bound and recorded, and with the policy off a second
//! Set-RemoteMailbox that adds the new remote routing address. Set-RemoteMailbox writes
//! what Exchange writes (`set_remote_mailbox`): under the email address policy the primary
//! is the policy's again (address_policy.rs), the old one kept as `smtp:`.

use serde_json::{Map, Value, json};

use super::*;
use crate::address_policy::{renamed_primary, with_primary, with_secondary};

/// What the template compares before it calls Set-RemoteMailbox.
struct Current {
    index: usize,
    alias: Option<String>,
    upn: String,
    routing: Option<String>,
    primary: Option<String>,
    policy: bool,
}

impl Run {
    /// rename-remote-mailbox.ps1, step by step.
    pub(super) fn rename(&self, account: &AccountData) -> ResultLine {
        let common = Self::common(account);
        if let Err(e) = self.bind("Get-RemoteMailbox", &common) {
            return *e;
        }
        let Some(cur) = self.current(account) else {
            self.record(
                "Get-RemoteMailbox",
                common,
                Some("ManagementObjectNotFoundException"),
            );
            let mut r = Self::not_found("GetRemoteMailbox", account);
            r.status = ResultStatus::NotRemote;
            return r;
        };
        self.record("Get-RemoteMailbox", common.clone(), None);
        let mut set = common.clone();
        let differs = |new: &Option<String>, old: Option<&str>| {
            new.as_deref()
                .filter(|n| !old.is_some_and(|o| o.eq_ignore_ascii_case(n)))
                .map(str::to_owned)
        };
        if let Some(a) = account
            .alias
            .as_ref()
            .filter(|a| cur.alias.as_ref() != Some(a))
        {
            set.insert("Alias".into(), json!(a));
        }
        if let Some(u) = differs(&account.user_principal_name, Some(&cur.upn)) {
            set.insert("UserPrincipalName".into(), json!(u));
        }
        let new_routing = differs(&account.remote_routing_address, cur.routing.as_deref());
        if let Some(r) = &new_routing {
            set.insert("RemoteRoutingAddress".into(), json!(r));
        }
        if !cur.policy
            && let Some(p) = differs(&account.primary_smtp_address, cur.primary.as_deref())
        {
            set.insert("PrimarySmtpAddress".into(), json!(p));
        }
        if set.len() == common.len() {
            return status(ResultStatus::Already);
        }
        if let Err(e) = self.set_remote_mailbox(account, set) {
            return *e;
        }
        if let Some(routing) = new_routing.filter(|_| !cur.policy)
            && !self.has_proxy(cur.index, &routing)
        {
            let mut add = common;
            add.insert(
                "EmailAddresses".into(),
                json!({ "Add": [format!("smtp:{routing}")] }),
            );
            if let Err(e) = self.set_remote_mailbox(account, add) {
                return *e;
            }
        }
        status(ResultStatus::Renamed)
    }

    fn current(&self, account: &AccountData) -> Option<Current> {
        let st = self.state.lock();
        let index = st
            .find(&account.identity)
            .filter(|i| st.accounts[*i].recipient == Recipient::Remote)?;
        let a = &st.accounts[index];
        Some(Current {
            index,
            alias: a.alias.clone(),
            upn: a.user_principal_name.clone(),
            routing: a.remote_routing_address.clone(),
            primary: a.primary_smtp_address.clone(),
            policy: a.address_policy_enabled(),
        })
    }

    fn has_proxy(&self, index: usize, address: &str) -> bool {
        let st = self.state.lock();
        st.accounts[index].proxy_addresses.iter().any(|p| {
            p.split_once(':')
                .is_some_and(|(_, a)| a.eq_ignore_ascii_case(address))
        })
    }

    /// One Set-RemoteMailbox call as Exchange runs it: bound, refused where Exchange
    /// refuses, then written to the directory and recorded.
    fn set_remote_mailbox(
        &self,
        account: &AccountData,
        params: Map<String, Value>,
    ) -> Result<(), Box<ResultLine>> {
        const TASK: &str = "SetRemoteMailbox";
        self.bind("Set-RemoteMailbox", &params)?;
        self.write_refused("Set-RemoteMailbox", TASK, &params, account)?;
        let outcome = self.apply_set(account, &params);
        let failed = outcome.as_ref().err().and_then(|e| e.reason.clone());
        self.record("Set-RemoteMailbox", params, failed.as_deref());
        outcome
    }

    fn apply_set(
        &self,
        account: &AccountData,
        params: &Map<String, Value>,
    ) -> Result<(), Box<ResultLine>> {
        const TASK: &str = "SetRemoteMailbox";
        let text = |name: &str| params.get(name).and_then(Value::as_str).map(str::to_owned);
        // Documented: "You can't use the EmailAddresses and PrimarySmtpAddress parameters in
        // the same command" (Set-RemoteMailbox, -PrimarySmtpAddress). No transcript of the
        // refusal was found, so its text is the page's sentence.
        if params.contains_key("EmailAddresses") && params.contains_key("PrimarySmtpAddress") {
            return Err(Box::new(error(
                "ArgumentException",
                "InvalidArgument",
                TASK,
                "5A1E0C",
                "You can't use the EmailAddresses and PrimarySmtpAddress parameters in the same command.".into(),
            )));
        }
        let mut st = self.state.lock();
        let Some(index) = st.find(&account.identity) else {
            return Err(Box::new(Self::not_found(TASK, account)));
        };
        let alias = text("Alias").or_else(|| st.accounts[index].alias.clone());
        let alias = alias.unwrap_or_else(|| default_alias(&st.accounts[index]));
        // -PrimarySmtpAddress on a recipient under a policy turns the policy off (what
        // msxfaq.de saw for Enable-RemoteMailbox, "PrimarySMTPAdress und Recipientpolicies").
        if text("PrimarySmtpAddress").is_some() {
            st.accounts[index].set_address_policy(false);
        }
        let policy = st.accounts[index].address_policy_enabled();
        let primary = match text("PrimarySmtpAddress") {
            Some(p) => Some(p),
            None if policy => Some(renamed_primary(index, &alias, &st.accounts)),
            None => None,
        };
        let routing = text("RemoteRoutingAddress").map(|r| strip_scheme(&r).to_owned());
        let added: Vec<String> = params
            .get("EmailAddresses")
            .and_then(|e| e.get("Add"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        // Proxy addresses are unique forest-wide (the same refusal as Enable-RemoteMailbox's).
        let wanted: Vec<String> = primary
            .iter()
            .chain(routing.iter())
            .cloned()
            .chain(added.iter().map(|a| strip_scheme(a).to_owned()))
            .collect();
        if let Some((holder, address)) = held_elsewhere(&st.accounts, index, &wanted) {
            return Err(Box::new(super::recipients::proxy_address_exists(
                TASK, &address, &holder,
            )));
        }
        let a = &mut st.accounts[index];
        a.alias = Some(alias.clone());
        a.mailNickname = Some(alias.clone());
        if let Some(upn) = text("UserPrincipalName") {
            a.user_principal_name = upn;
        }
        if let Some(r) = &routing {
            a.remote_routing_address = Some(r.clone());
            a.targetAddress = Some(format!("SMTP:{r}"));
        }
        if let Some(p) = &primary {
            a.proxy_addresses = with_primary(&a.proxy_addresses, p);
            a.primary_smtp_address = Some(p.clone());
        }
        if policy {
            // The hybrid set-up's template in the default policy,
            // %m@<tenant>.mail.onmicrosoft.com: the routing address of the new alias. Only
            // recipients under a policy get it by themselves (cgoosen/Fix-ProxyAddress, README).
            let coexistence = format!("{alias}@tenant.mail.onmicrosoft.com");
            a.proxy_addresses = with_secondary(&a.proxy_addresses, &coexistence);
        }
        for address in &added {
            a.proxy_addresses = with_secondary(&a.proxy_addresses, strip_scheme(address));
        }
        st.reindex(index);
        Ok(())
    }
}

/// An address without its `smtp:`/`SMTP:` prefix.
fn strip_scheme(address: &str) -> &str {
    address
        .split_once(':')
        .filter(|(s, _)| s.eq_ignore_ascii_case("smtp"))
        .map_or(address, |(_, a)| a)
}

/// The first of `addresses` another account than `index` holds, with that account's DN.
fn held_elsewhere(
    accounts: &[LabAccount],
    index: usize,
    addresses: &[String],
) -> Option<(String, String)> {
    accounts.iter().enumerate().find_map(|(i, a)| {
        if i == index {
            return None;
        }
        let held = addresses.iter().find(|w| {
            a.proxy_addresses
                .iter()
                .any(|p| strip_scheme(p).eq_ignore_ascii_case(w))
        })?;
        Some((a.distinguished_name.clone(), held.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::AccountSeed;
    use crate::exchange::HostPolicy;
    use crate::exchange::tests::test_run;

    fn with(seeds: Vec<AccountSeed>) -> Run {
        let run = test_run(false, HostPolicy::default());
        run.state
            .lock()
            .add_accounts(seeds.into_iter().map(LabAccount::from_seed));
        run
    }

    fn data(identity: &str, fields: Value) -> AccountData {
        let mut v = json!({"job_id": uuid::Uuid::new_v4(), "identity": identity, "sam_account_name": identity});
        if let (Some(o), Some(extra)) = (v.as_object_mut(), fields.as_object()) {
            o.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn email_addresses_and_primary_smtp_address_are_refused_together_and_nothing_changes() {
        let run = with(vec![AccountSeed::remote("jdoe").without_address_policy()]);
        let account = data("jdoe", json!({}));
        let mut p = Run::common(&account);
        p.insert("PrimarySmtpAddress".into(), json!("new@corp.example"));
        p.insert(
            "EmailAddresses".into(),
            json!({"Add": ["smtp:x@corp.example"]}),
        );
        let refused = run.set_remote_mailbox(&account, p).unwrap_err();
        assert_eq!(
            refused.message.as_deref(),
            Some(
                "You can't use the EmailAddresses and PrimarySmtpAddress parameters in the same command."
            )
        );
        let a = run.state.lock().accounts[0].clone();
        assert_eq!(a.primary_smtp_address.as_deref(), Some("jdoe@corp.example"));
        let calls = run.state.lock().invocations.clone();
        assert_eq!(
            calls.last().and_then(|c| c.error.clone()).as_deref(),
            Some("ArgumentException")
        );
    }

    #[test]
    fn a_primary_another_recipient_holds_is_refused_and_a_second_rename_is_already() {
        let run = with(vec![
            AccountSeed::remote("jdoe").without_address_policy(),
            AccountSeed::remote("taken"),
        ]);
        let clash = data(
            "jdoe",
            json!({"primary_smtp_address": "TAKEN@corp.example"}),
        );
        let r = run.rename(&clash);
        assert_eq!(r.reason.as_deref(), Some("ProxyAddressExistsException"));
        let fine = data(
            "jdoe",
            json!({"alias": "jd2", "remote_routing_address": "jd2@tenant.mail.onmicrosoft.com"}),
        );
        assert_eq!(run.rename(&fine).status, ResultStatus::Renamed);
        assert_eq!(run.rename(&fine).status, ResultStatus::Already);
        // A -PrimarySmtpAddress under a policy turns it off, as Exchange does on enable.
        let run = with(vec![AccountSeed::remote("eap")]);
        let account = data("eap", json!({}));
        let mut p = Run::common(&account);
        p.insert("PrimarySmtpAddress".into(), json!("eap.new@corp.example"));
        run.set_remote_mailbox(&account, p).unwrap();
        assert!(!run.state.lock().accounts[0].address_policy_enabled());
    }
}
