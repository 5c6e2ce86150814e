//! The recipient cmdlets as the templates call them, against the lab's directory: Enable-
//! RemoteMailbox (mailbox, then the archive as its own call), Get-RemoteMailbox and
//! Set-RemoteMailbox, each bound against its parameter sets first and recorded, with
//! Exchange's errors for what Exchange refuses.

use serde_json::{Map, Value, json};

use super::*;
use crate::directory::RemoteType;

/// What enable-remote-mailbox.ps1 returns for a room or equipment mailbox the joiner does
/// not ask for: mailboxd's own refusal (no cmdlet failed).
fn resource_mailbox(kind: RemoteType, wanted: RemoteType) -> ResultLine {
    ResultLine {
        status: ResultStatus::Error,
        category: Some("InvalidType".into()),
        reason: Some("ResourceMailbox".into()),
        message: Some(format!(
            "the account is a {}, not the {} mailbox the event asks for",
            kind.type_name(),
            wanted.type_value()
        )),
        ..ResultLine::default()
    }
}

/// Exchange's refusal of a proxy address another recipient holds (they are unique
/// forest-wide).
pub(super) fn proxy_address_exists(task: &str, address: &str, holder: &str) -> ResultLine {
    error(
        "ProxyAddressExistsException",
        "NotSpecified",
        task,
        "A9D1E3",
        format!(
            "The proxy address \"SMTP:{address}\" is already being used by the proxy addresses or LegacyExchangeDN of \"{holder}\". Please choose another proxy address."
        ),
    )
}

/// What Get-RemoteMailbox shows of a remote mailbox.
struct Existing {
    index: usize,
    remote_routing_address: Option<String>,
    hidden: bool,
    /// ArchiveGuid is set (msExchArchiveGUID).
    archive: bool,
    /// RecipientTypeDetails: a user, shared, room or equipment remote mailbox.
    remote_type: RemoteType,
}

impl Run {
    pub(super) fn common(account: &AccountData) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("Identity".into(), json!(account.identity));
        if let Some(dc) = &account.domain_controller {
            p.insert("DomainController".into(), json!(dc));
        }
        p
    }

    pub(super) fn not_found(task: &str, account: &AccountData) -> ResultLine {
        let dc = account
            .domain_controller
            .as_deref()
            .unwrap_or("dc1.corp.example");
        error(
            "ManagementObjectNotFoundException",
            "NotSpecified",
            task,
            "8B8D3C",
            format!(
                "The operation couldn't be performed because object '{}' couldn't be found on '{dc}'.",
                account.identity
            ),
        )
    }

    /// Whether the snap-in's writes are refused: without RBAC they run with the WinRM
    /// account's own AD rights, which a member of neither "Recipient Management EMT" nor
    /// Domain Admins lacks on user objects.
    fn emt_denied(&self) -> bool {
        self.snapin && self.policy.emt_missing
    }

    /// The DC's refusal of such a write, as Exchange reports it: the text of
    /// `faults::insufficient_rights_message` (its sources there). No transcript of the
    /// Management Tools refusing an account outside "Recipient Management EMT" was found; the
    /// refusal is the DC's (problem 4003, INSUFF_ACCESS_RIGHTS), so this is its form.
    fn rights_error(task: &str, account: &AccountData) -> ResultLine {
        let dc = account
            .domain_controller
            .as_deref()
            .unwrap_or("dc1.corp.example");
        error(
            "ADOperationException",
            "NotSpecified",
            task,
            "0",
            crate::faults::insufficient_rights_message(dc),
        )
    }

    /// A write (Set-RemoteMailbox, Enable-RemoteMailbox -Archive) the snap-in refuses without
    /// EMT membership, recorded as failed.
    pub(super) fn write_refused(
        &self,
        cmdlet: &str,
        task: &str,
        params: &Map<String, Value>,
        account: &AccountData,
    ) -> Result<(), Box<ResultLine>> {
        if !self.emt_denied() {
            return Ok(());
        }
        self.record(cmdlet, params.clone(), Some("ADOperationException"));
        Err(Box::new(Self::rights_error(task, account)))
    }

    /// enable-remote-mailbox.ps1, step by step: the mailbox, hidden when the joiner's start
    /// date is ahead (`hidden`), then (a second call, in the Archive parameter set) the
    /// archive when one is asked for and not there yet.
    pub(super) fn enable(&self, account: &AccountData) -> ResultLine {
        let common = Self::common(account);
        if account.make_visible {
            return self.make_visible(account, &common);
        }
        let (mut result, existing) = match self.enable_mailbox(account, &common) {
            Ok(done) => done,
            Err(e) => return *e,
        };
        let hidden_already = existing.as_ref().is_some_and(|e| e.hidden);
        if account.hidden && !hidden_already {
            if let Err(e) = self.set_hidden(account, &common, true) {
                return *e;
            }
            if result.status == ResultStatus::Already {
                result.status = ResultStatus::Hidden;
            }
        }
        let needs_archive = account.archive && !existing.as_ref().is_some_and(|e| e.archive);
        if let Err(e) = needs_archive
            .then(|| self.enable_archive(account, &common))
            .transpose()
        {
            return *e;
        }
        result
    }

    /// The mailbox call; on "already a remote mailbox", what Get-RemoteMailbox showed.
    fn enable_mailbox(
        &self,
        account: &AccountData,
        common: &Map<String, Value>,
    ) -> Result<(ResultLine, Option<Existing>), Box<ResultLine>> {
        let mut params = common.clone();
        params.insert(
            "RemoteRoutingAddress".into(),
            json!(account.remote_routing_address.clone().unwrap_or_default()),
        );
        if let Some(a) = &account.alias {
            params.insert("Alias".into(), json!(a));
        }
        if let Some(p) = &account.primary_smtp_address {
            params.insert("PrimarySmtpAddress".into(), json!(p));
        }
        let wanted = RemoteType::of(account.mailbox_type);
        if let Some(switch) = wanted.switch() {
            params.insert(switch.into(), json!(true));
        }
        self.bind("Enable-RemoteMailbox", &params)?;
        let outcome = self.try_enable(account, wanted);
        let failed = outcome.as_ref().err().and_then(|e| e.reason.clone());
        self.record("Enable-RemoteMailbox", params, failed.as_deref());
        let enable_error = match outcome {
            Ok(()) => return Ok((status(ResultStatus::Enabled), None)),
            Err(e) => e,
        };
        if enable_error.reason.as_deref() != Some("RecipientTaskException") {
            return Err(enable_error);
        }
        // Exchange has no "already enabled" no-op: ask Get-RemoteMailbox.
        let Some(existing) = self.get_remote_mailbox(account, common)? else {
            return Err(enable_error);
        };
        let mut r = status(ResultStatus::Already);
        r.remote_routing_address = existing.remote_routing_address.clone();
        if existing.remote_type != wanted {
            // A resource is never converted away; a user or shared one is (-Type).
            if existing.remote_type.is_resource() {
                return Err(Box::new(resource_mailbox(existing.remote_type, wanted)));
            }
            self.set_remote_type(account, common, existing.index, wanted)?;
            r.status = ResultStatus::Converted;
        }
        if existing.hidden && !account.hidden {
            self.set_hidden(account, common, false)?;
            if r.status == ResultStatus::Already {
                r.status = ResultStatus::Unhidden;
            }
        }
        Ok((r, Some(existing)))
    }

    /// enable-remote-mailbox.ps1 for a start date's step (`make_visible`): Get-RemoteMailbox,
    /// then, if it is hidden, `Set-RemoteMailbox -HiddenFromAddressListsEnabled $false`.
    fn make_visible(&self, account: &AccountData, common: &Map<String, Value>) -> ResultLine {
        let existing = match self.get_remote_mailbox(account, common) {
            Ok(Some(existing)) => existing,
            Ok(None) => return Self::not_found("GetRemoteMailbox", account),
            Err(e) => return *e,
        };
        if !existing.hidden {
            return status(ResultStatus::Already);
        }
        match self.set_hidden(account, common, false) {
            Ok(()) => status(ResultStatus::Unhidden),
            Err(e) => *e,
        }
    }

    /// `Set-RemoteMailbox -HiddenFromAddressListsEnabled <hidden>` on the account's remote
    /// mailbox (the one Enable-RemoteMailbox made, or the one it found).
    fn set_hidden(
        &self,
        account: &AccountData,
        common: &Map<String, Value>,
        hidden: bool,
    ) -> Result<(), Box<ResultLine>> {
        let mut p = common.clone();
        p.insert("HiddenFromAddressListsEnabled".into(), json!(hidden));
        self.bind("Set-RemoteMailbox", &p)?;
        self.write_refused("Set-RemoteMailbox", "SetRemoteMailbox", &p, account)?;
        let Some(found) = self.find_remote(account) else {
            self.record(
                "Set-RemoteMailbox",
                p,
                Some("ManagementObjectNotFoundException"),
            );
            return Err(Box::new(Self::not_found("SetRemoteMailbox", account)));
        };
        self.record("Set-RemoteMailbox", p, None);
        self.state.lock().accounts[found.index].set_hidden(hidden);
        Ok(())
    }

    /// `Set-RemoteMailbox -Type <wanted>`: most often a converted (shared) remote mailbox
    /// made a user's again.
    fn set_remote_type(
        &self,
        account: &AccountData,
        common: &Map<String, Value>,
        index: usize,
        wanted: RemoteType,
    ) -> Result<(), Box<ResultLine>> {
        let mut p = common.clone();
        p.insert("Type".into(), json!(wanted.type_value()));
        self.bind("Set-RemoteMailbox", &p)?;
        self.write_refused("Set-RemoteMailbox", "SetRemoteMailbox", &p, account)?;
        let kind = p
            .get("Type")
            .and_then(Value::as_str)
            .and_then(RemoteType::parse);
        self.record("Set-RemoteMailbox", p, None);
        self.state.lock().accounts[index].set_remote_type(kind.unwrap_or_default());
        Ok(())
    }

    /// `Enable-RemoteMailbox -Identity … -Archive`: provisions the cloud archive.
    fn enable_archive(
        &self,
        account: &AccountData,
        common: &Map<String, Value>,
    ) -> Result<(), Box<ResultLine>> {
        let mut params = common.clone();
        params.insert("Archive".into(), json!(true));
        self.bind("Enable-RemoteMailbox", &params)?;
        self.write_refused(
            "Enable-RemoteMailbox",
            "EnableRemoteMailbox",
            &params,
            account,
        )?;
        let found = self.find_remote(account);
        let error = found
            .is_none()
            .then_some("ManagementObjectNotFoundException");
        self.record("Enable-RemoteMailbox", params, error);
        let Some(existing) = found else {
            return Err(Box::new(Self::not_found("EnableRemoteMailbox", account)));
        };
        self.state.lock().accounts[existing.index].enable_archive();
        Ok(())
    }

    fn try_enable(&self, account: &AccountData, kind: RemoteType) -> Result<(), Box<ResultLine>> {
        const TASK: &str = "EnableRemoteMailbox";
        let mut st = self.state.lock();
        let Some(index) = st.find(&account.identity) else {
            return Err(Box::new(Self::not_found(TASK, account)));
        };
        let target = &st.accounts[index];
        let type_name = match target.recipient {
            Recipient::None => None,
            Recipient::Remote => Some("RemoteUserMailbox"),
            Recipient::Onprem => Some("UserMailbox"),
        };
        if let Some(type_name) = type_name {
            return Err(Box::new(error(
                "RecipientTaskException",
                "InvalidArgument",
                TASK,
                "2882FF3D",
                format!(
                    "This task does not support recipients of this type. The specified recipient {} is of type {type_name}. Please make sure that this recipient matches the required recipient type for this task.",
                    target.distinguished_name
                ),
            )));
        }
        let alias = account
            .alias
            .clone()
            .unwrap_or_else(|| default_alias(target));
        // No address in the call: the email address policy decides (address_policy.rs).
        let primary = account.primary_smtp_address.clone().unwrap_or_else(|| {
            crate::address_policy::primary_for(target, &alias, |candidate| {
                !st.index.holders(&st.accounts, candidate).is_empty()
            })
        });
        let rra = account.remote_routing_address.clone().unwrap_or_default();
        // The hybrid configuration accepts the tenant's coexistence domain only.
        let accepted = rra
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.to_ascii_lowercase().ends_with(".mail.onmicrosoft.com"));
        if !accepted {
            return Err(Box::new(error(
                "ErrorCannotFindTargetDeliveryDomainException",
                "NotSpecified",
                TASK,
                "6A8B1F",
                "Couldn't find a target delivery domain for the remote routing address. Run the Hybrid Configuration Wizard or specify -RemoteRoutingAddress.".into(),
            )));
        }
        // Proxy addresses are unique forest-wide.
        let wanted = [format!("smtp:{primary}"), format!("smtp:{rra}")];
        let mut holders: Vec<usize> = wanted
            .iter()
            .flat_map(|w| st.index.holders(&st.accounts, w))
            .filter(|i| *i != index)
            .collect();
        holders.sort_unstable();
        // The index finds an address under any scheme; Exchange's check is on SMTP ones.
        if let Some(holder) = holders.into_iter().find_map(|i| {
            let a = &st.accounts[i];
            a.proxy_addresses
                .iter()
                .any(|p| wanted.iter().any(|w| w.eq_ignore_ascii_case(p)))
                .then(|| a.distinguished_name.clone())
        }) {
            return Err(Box::new(proxy_address_exists(TASK, &primary, &holder)));
        }
        if self.emt_denied() {
            return Err(Box::new(Self::rights_error(TASK, account)));
        }
        st.accounts[index].make_remote(&rra, &alias, &primary);
        // -Room, -Equipment and -Shared stamp their type as -Type does afterwards.
        st.accounts[index].set_remote_type(kind);
        st.reindex(index);
        Ok(())
    }

    /// Get-RemoteMailbox, bound and recorded: the remote mailbox, if the identity names one.
    fn get_remote_mailbox(
        &self,
        account: &AccountData,
        common: &Map<String, Value>,
    ) -> Result<Option<Existing>, Box<ResultLine>> {
        self.bind("Get-RemoteMailbox", common)?;
        let existing = self.find_remote(account);
        let error = existing
            .is_none()
            .then_some("ManagementObjectNotFoundException");
        self.record("Get-RemoteMailbox", common.clone(), error);
        Ok(existing)
    }

    fn find_remote(&self, account: &AccountData) -> Option<Existing> {
        let st = self.state.lock();
        st.find(&account.identity)
            .filter(|i| st.accounts[*i].recipient == Recipient::Remote)
            .map(|index| {
                let a = &st.accounts[index];
                Existing {
                    index,
                    remote_routing_address: a.remote_routing_address.clone(),
                    hidden: a.hidden,
                    archive: a.msExchArchiveGUID.is_some(),
                    remote_type: a.remote_type(),
                }
            })
    }

    /// A cmdlet that fails with an injected fault (or Exchange's spent budget): the first
    /// cmdlet the template would run is recorded with the error, and nothing changes.
    pub(super) fn injected(
        &self,
        account: &AccountData,
        template: Template,
        fault: &crate::faults::CmdletError,
    ) -> ResultLine {
        let dc = account
            .domain_controller
            .as_deref()
            .unwrap_or("dc1.corp.example");
        let cmdlet = first_cmdlet(template, account).0;
        self.failed_call(account, template, fault.render(cmdlet, account, dc))
    }

    /// The template's first cmdlet, recorded as failing with `r`, as Get-MailboxdError
    /// reports it: PowerShell's own id when it raised the error, else Exchange's task id
    /// with its routing prefix.
    pub(super) fn failed_call(
        &self,
        account: &AccountData,
        template: Template,
        r: crate::faults::Rendered,
    ) -> ResultLine {
        let (cmdlet, task) = first_cmdlet(template, account);
        self.record(cmdlet, Self::common(account), Some(&r.reason));
        match r.error_id {
            Some(id) => ResultLine {
                status: ResultStatus::Error,
                category: Some(r.category),
                reason: Some(r.reason),
                error_id: Some(id),
                message: Some(r.message),
                ..ResultLine::default()
            },
            None => error(&r.reason, &r.category, task, "0", r.message),
        }
    }

    /// hide-remote-mailbox.ps1, step by step: one Set-RemoteMailbox that converts a user
    /// mailbox to shared (`to_shared`), hides it (unless `keep_visible` for a user or shared
    /// one), or both.
    pub(super) fn hide(&self, account: &AccountData) -> ResultLine {
        let common = Self::common(account);
        let existing = match self.get_remote_mailbox(account, &common) {
            Ok(existing) => existing,
            Err(e) => return *e,
        };
        let Some(existing) = existing else {
            let mut r = Self::not_found("GetRemoteMailbox", account);
            r.status = ResultStatus::NotRemote;
            return r;
        };
        let kind = existing.remote_type;
        let convert = account.to_shared && kind == RemoteType::Regular;
        let keep_visible = account.keep_visible && !kind.is_resource();
        let hide = !keep_visible && !existing.hidden;
        if !convert && !hide {
            return status(ResultStatus::Already);
        }
        let mut p = common;
        if convert {
            p.insert("Type".into(), json!(RemoteType::Shared.type_value()));
        }
        if hide {
            p.insert("HiddenFromAddressListsEnabled".into(), json!(true));
        }
        if let Err(e) = self
            .bind("Set-RemoteMailbox", &p)
            .and_then(|()| self.write_refused("Set-RemoteMailbox", "SetRemoteMailbox", &p, account))
        {
            return *e;
        }
        self.record("Set-RemoteMailbox", p, None);
        let mut st = self.state.lock();
        let target = &mut st.accounts[existing.index];
        if convert {
            target.set_remote_type(RemoteType::Shared);
        }
        if hide {
            target.set_hidden(true);
        }
        status(if convert {
            ResultStatus::Shared
        } else {
            ResultStatus::Hidden
        })
    }
}
