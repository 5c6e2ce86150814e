//! The lab's cloud: a simulated Entra sync cycle and Exchange Online (EXO) over the lab's
//! directory, so the daemon's cloud confirmation meets what a hybrid tenant does.
//!
//! One sync cycle ([`sync_cycle`], driven by `Lab::cloud_sync` or every
//! `CloudConfig::sync_interval`) does, per account in the sync scope (synced, not held back
//! by a `not_synced` fault), in this order:
//! 1. **Writeback** of a mailbox that existed when the cycle started (so on the cycle after
//!    the one that made it): the attributes of Microsoft's "Exchange hybrid writeback" list
//!    (learn.microsoft.com/entra/identity/hybrid/cloud-sync/exchange-hybrid, "Attributes
//!    synchronized"): `cloudLegacyExchangeDN` → `proxyAddresses` (an
//!    "Expression" mapping), `cloudMSExchArchiveStatus` → `msExchArchiveStatus`, `cloudAnchor`
//!    → `msDS-ExternalDirectoryObjectId`. Microsoft's table does not say what the expression
//!    makes of the DN; that it is added as an `X500:` proxy address, and the DN's
//!    `/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=<hex>-<alias>`
//!    shape, are practitioner lore (X500/IMCEAEX articles, tenants seen), not a Microsoft
//!    page. The lab's LDAP shows `msDS-ExternalDirectoryObjectId` for every synced account
//!    already (`ldap::entry`): Microsoft maps cloudAnchor for every user in scope, mailbox
//!    or not, so it tells "synced", not "has a mailbox". That `msExchArchiveStatus` 1 means
//!    an active archive is lore too (the ArchiveStatusFlags value `Active`).
//! 2. **EXO provisioning**: a licensed user whose on-premises remote mailbox has synced gets
//!    its mailbox `CloudConfig::mailbox_delay` after the first cycle that saw all three; a
//!    provisioning error set on the user holds it "Setting up" (no mailbox, so no writeback;
//!    the error text is kept, as Graph's `serviceProvisioningErrors` keeps it). A licensed
//!    user with no remote mailbox gets a mailbox EXO made on its own — the licence-first
//!    case practitioners describe (msb365.blog ?p=1126, c7solutions.com ?p=2079, the benw
//!    TechNet post "Dude – why isn't a mailbox being provisioned") — marked `licence_first`
//!    so a later guard can be tested against it. An on-premises mailbox is left alone: its
//!    synced msExchMailboxGuid tells EXO not to provision one (the same sources).
//!
//! Error texts are never invented here: a provisioning error is the text the test or the
//! API sets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::directory::{LabAccount, Recipient, RemoteType};
use crate::faults::Faults;
use crate::graph::{GraphUser, Tenant};

/// The SKU of "Exchange Online (Plan 1)" (EXCHANGESTANDARD), the licence the lab assigns:
/// Microsoft's "Product names and service plan identifiers for licensing" table
/// (learn.microsoft.com/entra/identity/users/licensing-service-plan-reference).
pub const EXCHANGE_ONLINE_PLAN_1_SKU: &str = "4b9405b0-7788-4568-add1-99614e613b69";

/// How the lab's cloud behaves (`LabConfig::with_cloud`).
#[derive(Debug, Clone, Default)]
pub struct CloudConfig {
    /// How long after a cycle first sees a user synced, licensed and remote-mailboxed EXO
    /// makes its mailbox (real tenants: minutes). Zero: on that cycle.
    pub mailbox_delay: Duration,
    /// A sync cycle runs by itself this often; `None`: only when driven (`Lab::cloud_sync`).
    pub sync_interval: Option<Duration>,
    /// The sAMAccountNames licensed from the start (case-insensitive).
    pub licensed: Vec<String>,
}

/// One user's state in the cloud, keyed by its objectGUID.
#[derive(Debug, Clone, Default)]
struct CloudUser {
    licensed: bool,
    provisioning_error: Option<String>,
    /// The first cycle that saw it synced, licensed and with its remote mailbox.
    eligible_since: Option<Instant>,
    mailbox: Option<ExoMailbox>,
    written_back: bool,
}

#[derive(Debug, Clone)]
struct ExoMailbox {
    exchange_guid: Uuid,
    legacy_exchange_dn: String,
    licence_first: bool,
    archive: bool,
}

/// The cloud's state inside `LabState`.
#[derive(Debug, Default)]
pub struct Cloud {
    pub(crate) config: CloudConfig,
    users: HashMap<Uuid, CloudUser>,
    /// Sync cycles run so far.
    pub cycles: u64,
}

/// Where the user's Exchange Online mailbox stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MailboxState {
    /// No mailbox: not licensed, not synced, or no remote mailbox yet.
    None,
    /// Licensed but held by a provisioning error (the admin center's "Setting up").
    SettingUp { error: String },
    /// The mailbox exists.
    Ready,
}

/// One user as the cloud knows it: what a Graph stand-in answers from.
#[derive(Debug, Clone, Serialize)]
pub struct CloudUserView {
    pub sam_account_name: String,
    /// In the sync scope: the user exists in Entra ID.
    pub synced: bool,
    /// The Entra object id (what `msDS-ExternalDirectoryObjectId` carries as `User_<id>`).
    pub object_id: Uuid,
    pub licensed: bool,
    pub mailbox: MailboxState,
    /// EXO's RecipientTypeDetails: `UserMailbox` once the mailbox exists, else `MailUser`
    /// for a synced remote mailbox, `User` for a plain user.
    pub recipient_type_details: &'static str,
    pub primary_smtp_address: Option<String>,
    /// The SMTP addresses as EXO holds them (from the synced proxyAddresses).
    pub email_addresses: Vec<String>,
    pub exchange_guid: Option<Uuid>,
    pub legacy_exchange_dn: Option<String>,
    /// EXO made the mailbox on its own because the licence came before any remote mailbox.
    pub licence_first: bool,
    /// The cloud attributes were written back to AD.
    pub written_back: bool,
}

/// What `POST /lab/cloud/users` changes for one account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudUserChange {
    pub account: String,
    #[serde(default)]
    pub licensed: Option<bool>,
    /// A provisioning error's text (held "Setting up"); `""` clears it.
    #[serde(default)]
    pub provisioning_error: Option<String>,
}

/// The Entra object id of a synced account (the same stand-in `ldap::entry` writes back).
pub fn object_id(object_guid: Uuid) -> Uuid {
    let mut b = *object_guid.as_bytes();
    b.reverse();
    Uuid::from_bytes(b)
}

impl Cloud {
    pub(crate) fn new(config: CloudConfig) -> Cloud {
        Cloud {
            config,
            users: HashMap::new(),
            cycles: 0,
        }
    }

    fn user(&mut self, a: &LabAccount) -> &mut CloudUser {
        let licensed = self
            .config
            .licensed
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&a.sam_account_name));
        self.users.entry(a.object_guid).or_insert(CloudUser {
            licensed,
            ..CloudUser::default()
        })
    }
}

/// Applies a change to one account's cloud user; false if no account has that name.
pub fn change(cloud: &mut Cloud, accounts: &[LabAccount], c: &CloudUserChange) -> bool {
    let Some(a) = accounts
        .iter()
        .find(|a| a.sam_account_name.eq_ignore_ascii_case(&c.account))
        .cloned()
    else {
        return false;
    };
    let u = cloud.user(&a);
    if let Some(l) = c.licensed {
        u.licensed = l;
    }
    if let Some(e) = &c.provisioning_error {
        u.provisioning_error = Some(e.clone()).filter(|e| !e.is_empty());
    }
    true
}

/// One Entra sync cycle with EXO's provisioning (see the module docs).
pub fn sync_cycle(cloud: &mut Cloud, accounts: &mut [LabAccount], faults: &Faults, now: Instant) {
    cloud.cycles += 1;
    let delay = cloud.config.mailbox_delay;
    for account in accounts.iter_mut() {
        let a = account.clone();
        if !a.synced || faults.unsynced(&a.sam_account_name) {
            continue;
        }
        let u = cloud.user(&a);
        if let Some(m) = u.mailbox.clone().filter(|_| !u.written_back) {
            u.written_back = true;
            write_back(account, &m);
            continue;
        }
        if u.mailbox.is_some() || !u.licensed || u.provisioning_error.is_some() {
            continue;
        }
        let licence_first = match a.recipient {
            Recipient::Remote => false,
            Recipient::None => true,
            Recipient::Onprem => continue,
        };
        let since = *u.eligible_since.get_or_insert(now);
        if now.duration_since(since) >= delay {
            u.mailbox = Some(new_mailbox(&a, licence_first));
        }
    }
}

fn new_mailbox(a: &LabAccount, licence_first: bool) -> ExoMailbox {
    let exchange_guid = Uuid::new_v4();
    let alias = a
        .alias
        .clone()
        .unwrap_or_else(|| crate::directory::default_alias(a));
    ExoMailbox {
        exchange_guid,
        legacy_exchange_dn: format!(
            "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn={}-{alias}",
            exchange_guid.simple()
        ),
        licence_first,
        archive: a.archive,
    }
}

/// What the writeback puts on the AD user (module docs: which part is Microsoft's).
fn write_back(a: &mut LabAccount, m: &ExoMailbox) {
    let x500 = format!("X500:{}", m.legacy_exchange_dn);
    if !a.proxy_addresses.contains(&x500) {
        a.proxy_addresses.push(x500);
    }
    if m.archive {
        a.msExchArchiveStatus = Some(1);
    }
}

/// One account's cloud user as the cloud shows it, if the account exists.
pub fn view(
    cloud: &Cloud,
    accounts: &[LabAccount],
    faults: &Faults,
    sam: &str,
) -> Option<CloudUserView> {
    let a = accounts
        .iter()
        .find(|a| a.sam_account_name.eq_ignore_ascii_case(sam))?;
    Some(view_of(cloud, a, faults))
}

fn view_of(cloud: &Cloud, a: &LabAccount, faults: &Faults) -> CloudUserView {
    let synced = a.synced && !faults.unsynced(&a.sam_account_name);
    let u = cloud.users.get(&a.object_guid).cloned().unwrap_or_default();
    let mailbox = match (&u.mailbox, &u.provisioning_error) {
        (Some(_), _) => MailboxState::Ready,
        (None, Some(e)) if u.licensed => MailboxState::SettingUp { error: e.clone() },
        (None, _) => MailboxState::None,
    };
    let recipient_type_details = match (&u.mailbox, a.recipient) {
        (Some(_), _) => "UserMailbox",
        (None, Recipient::Remote) => "MailUser",
        (None, _) => "User",
    };
    CloudUserView {
        sam_account_name: a.sam_account_name.clone(),
        synced,
        object_id: object_id(a.object_guid),
        licensed: u.licensed,
        mailbox,
        recipient_type_details,
        primary_smtp_address: a.primary_smtp_address.clone(),
        email_addresses: a
            .proxy_addresses
            .iter()
            .filter(|p| p.to_ascii_lowercase().starts_with("smtp:"))
            .cloned()
            .collect(),
        exchange_guid: u.mailbox.as_ref().map(|m| m.exchange_guid),
        legacy_exchange_dn: u.mailbox.as_ref().map(|m| m.legacy_exchange_dn.clone()),
        licence_first: u.mailbox.as_ref().is_some_and(|m| m.licence_first),
        written_back: u.written_back,
    }
}

/// Shows the cloud to the Graph stand-in: every account's cloud user as Graph would answer
/// for it (`GraphUser`), an account out of the sync scope removed (Graph's 404). The cloud
/// stays the one model; the tenant only answers from what this writes.
pub fn publish(cloud: &Cloud, accounts: &[LabAccount], faults: &Faults, tenant: &Tenant) {
    for a in accounts {
        let id = object_id(a.object_guid).to_string();
        let v = view_of(cloud, a, faults);
        if v.synced {
            tenant.set_user(graph_user(a, &v, id));
        } else {
            tenant.remove_user(&id);
        }
    }
}

/// One synced user as Graph shows it. The exchange plan's `provisioningStatus`: Microsoft's
/// provisionedPlan reference gives only "Success" as an example; "PendingInput" for a plan
/// not provisioned yet is what tenants show (not a Microsoft page), and a "Setting up" user
/// is told by its `serviceProvisioningErrors`, not by its plan.
fn graph_user(a: &LabAccount, v: &CloudUserView, id: String) -> GraphUser {
    let (plan, error) = match &v.mailbox {
        MailboxState::Ready => ("Success", None),
        MailboxState::SettingUp { error } => ("PendingInput", Some(error.clone())),
        MailboxState::None => ("PendingInput", None),
    };
    let purpose = match a.remote_type() {
        RemoteType::Regular => "user",
        RemoteType::Shared => "shared",
        RemoteType::Room => "room",
        RemoteType::Equipment => "equipment",
    };
    GraphUser {
        id,
        user_principal_name: a.user_principal_name.clone(),
        mail: v.primary_smtp_address.clone(),
        proxy_addresses: v.email_addresses.clone(),
        licences: if v.licensed {
            vec![EXCHANGE_ONLINE_PLAN_1_SKU.to_owned()]
        } else {
            Vec::new()
        },
        exchange_plan: v.licensed.then(|| plan.to_owned()),
        provisioning_error: error,
        mailbox: (v.mailbox == MailboxState::Ready).then(|| purpose.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::AccountSeed;

    struct St {
        cloud: Cloud,
        accounts: Vec<LabAccount>,
        faults: Faults,
    }

    fn state(seeds: Vec<AccountSeed>, licensed: &[&str]) -> St {
        let config = CloudConfig {
            licensed: licensed.iter().map(|s| (*s).to_owned()).collect(),
            ..CloudConfig::default()
        };
        St {
            cloud: Cloud::new(config),
            accounts: seeds.into_iter().map(LabAccount::from_seed).collect(),
            faults: Faults::default(),
        }
    }

    fn sync_cycle(st: &mut St, now: Instant) {
        super::sync_cycle(&mut st.cloud, &mut st.accounts, &st.faults, now);
    }

    fn view(st: &St, sam: &str) -> Option<CloudUserView> {
        super::view(&st.cloud, &st.accounts, &st.faults, sam)
    }

    fn change(st: &mut St, c: &CloudUserChange) -> bool {
        super::change(&mut st.cloud, &st.accounts, c)
    }

    #[test]
    fn a_licensed_remote_mailbox_is_made_then_written_back_on_the_next_cycle() {
        let mut st = state(vec![AccountSeed::remote("ann")], &["ann"]);
        sync_cycle(&mut st, Instant::now());
        assert_eq!(view(&st, "ann").unwrap().mailbox, MailboxState::Ready);
        assert!(
            !st.accounts[0]
                .proxy_addresses
                .iter()
                .any(|p| p.starts_with("X500:"))
        );
        sync_cycle(&mut st, Instant::now());
        let dn = view(&st, "ann").unwrap().legacy_exchange_dn.unwrap();
        assert!(
            st.accounts[0]
                .proxy_addresses
                .contains(&format!("X500:{dn}"))
        );
    }

    #[test]
    fn an_error_holds_it_setting_up_and_a_licence_first_user_gets_its_own_mailbox() {
        let mut st = state(
            vec![AccountSeed::remote("bob"), AccountSeed::user("cy")],
            &["bob", "cy"],
        );
        let err = CloudUserChange {
            account: "bob".into(),
            licensed: None,
            provisioning_error: Some("test-set error".into()),
        };
        assert!(change(&mut st, &err));
        for _ in 0..3 {
            sync_cycle(&mut st, Instant::now());
        }
        let bob = view(&st, "bob").unwrap();
        assert_eq!(
            bob.mailbox,
            MailboxState::SettingUp {
                error: "test-set error".into()
            }
        );
        assert!(!bob.written_back);
        let cy = view(&st, "cy").unwrap();
        assert!(cy.licence_first && cy.written_back);
    }

    #[test]
    fn graph_shows_what_the_cloud_did_to_each_user() {
        let mut st = state(
            vec![
                AccountSeed::remote("ann"),
                AccountSeed::remote("bob"),
                AccountSeed::user("cy"),
            ],
            &["ann", "bob"],
        );
        let err = CloudUserChange {
            account: "bob".into(),
            licensed: None,
            provisioning_error: Some("test-set error".into()),
        };
        change(&mut st, &err);
        sync_cycle(&mut st, Instant::now());
        let tenant = Tenant::default();
        publish(&st.cloud, &st.accounts, &st.faults, &tenant);
        let graph = |st: &St, sam: &str| tenant.user(&view(st, sam).unwrap().object_id.to_string());

        let ann = graph(&st, "ann").expect("synced users are in Graph");
        assert_eq!(ann.mailbox.as_deref(), Some("user"));
        assert_eq!(ann.exchange_plan.as_deref(), Some("Success"));
        assert_eq!(ann.licences, [EXCHANGE_ONLINE_PLAN_1_SKU]);
        let bob = graph(&st, "bob").unwrap();
        assert_eq!(bob.mailbox, None);
        assert_eq!(bob.provisioning_error.as_deref(), Some("test-set error"));
        let cy = graph(&st, "cy").unwrap();
        assert!(cy.licences.is_empty() && cy.exchange_plan.is_none());

        st.faults.apply(&crate::faults::FaultRequest::NotSynced {
            account: "cy".into(),
            seconds: 60.0,
        });
        publish(&st.cloud, &st.accounts, &st.faults, &tenant);
        assert!(
            graph(&st, "cy").is_none(),
            "out of the sync scope: Graph's 404"
        );
    }
}
