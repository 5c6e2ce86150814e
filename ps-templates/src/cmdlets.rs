//! How many Exchange cmdlets a batch runs, read off the templates: what Exchange's cmdlet
//! budget (PowerShellMaxCmdlets per PowerShellMaxCmdletsTimePeriod) counts. The daemon takes
//! the most a batch may run from the budget before it runs, and gives back what it did not
//! run once the results say which path each account took.

use crate::{AccountData, ExchangeMode, ResultStatus, SessionData, Template};

/// Cmdlets Exchange runs to set up one remote session: `Import-PSSession` asks the session
/// for its commands and their formatting (`Get-Command`, `Get-FormatData`). Not documented
/// either way, so counted: over-counting only paces a little slower.
const IMPORT_CMDLETS: u32 = 2;

/// The most cmdlets any one account of any template may run (an enable with its archive).
pub const MAX_CMDLETS_PER_ACCOUNT: u32 = 5;

impl Template {
    /// The most cmdlets one account of this template may run.
    ///
    /// - enable-remote-mailbox: `Enable-RemoteMailbox`; on RecipientTaskException
    ///   `Get-RemoteMailbox`, then `Set-RemoteMailbox -Type Regular` for a converted shared
    ///   one and `Set-RemoteMailbox` for a hidden one (a rehire, or a start date's step) or,
    ///   with `hidden` (a start date ahead), one to hide it; plus
    ///   `Enable-RemoteMailbox -Archive` when an archive is asked for. A start date's step
    ///   (`make_visible`): `Get-RemoteMailbox`, then `Set-RemoteMailbox` if it is hidden.
    /// - hide-remote-mailbox: `Get-RemoteMailbox`, then one `Set-RemoteMailbox` (hiding,
    ///   converting to shared, or both in one call).
    /// - rename-remote-mailbox: `Get-RemoteMailbox`, one `Set-RemoteMailbox`, and with the
    ///   address policy disabled a second one that adds the new remote routing address.
    pub fn max_cmdlets(self, account: &AccountData) -> u32 {
        match self {
            Template::EnableRemoteMailbox if account.make_visible => 2,
            Template::EnableRemoteMailbox => 4 + u32::from(account.archive),
            Template::HideRemoteMailbox => 2,
            Template::RenameRemoteMailbox => 3,
        }
    }

    /// The cmdlets one account ran, from the status its result line reported; `None` for a
    /// status that does not say (an error: counted as the most it may have run).
    pub fn cmdlets_ran(self, account: &AccountData, status: ResultStatus) -> Option<u32> {
        use ResultStatus::*;
        // The archive call is made unless Get-RemoteMailbox showed one: "enabled" never
        // looked, the others may have seen one, so they count it too.
        let archive = u32::from(account.archive);
        if self == Template::EnableRemoteMailbox && account.make_visible {
            // Get-RemoteMailbox, and Set-RemoteMailbox if it was hidden.
            return match status {
                Already => Some(1),
                Unhidden => Some(2),
                _ => None,
            };
        }
        match (self, status) {
            (Template::EnableRemoteMailbox, Enabled) => {
                Some(1 + u32::from(account.hidden) + archive)
            }
            // An existing visible mailbox hidden until the start date.
            (Template::EnableRemoteMailbox, Hidden) => Some(3 + archive),
            (Template::EnableRemoteMailbox, Already) => Some(2 + archive),
            (Template::EnableRemoteMailbox, Unhidden) => Some(3 + archive),
            // Converted, and unhidden only if it was hidden: counted as if it was.
            (Template::EnableRemoteMailbox, Converted) => Some(4 + archive),
            (Template::HideRemoteMailbox, Already | NotRemote) => Some(1),
            (Template::HideRemoteMailbox, Hidden | Shared) => Some(2),
            (Template::RenameRemoteMailbox, Already | NotRemote) => Some(1),
            _ => None,
        }
    }

    /// The cmdlets a batch of `accounts` ran, from each one's last result line: what its
    /// status says, the most it may have run where it does not say (an error, no line).
    pub fn batch_cmdlets_ran(self, accounts: &[AccountData], output: &crate::ParsedOutput) -> u32 {
        // Each job's last status: a later line (a second run's) replaces an earlier one.
        let last: std::collections::HashMap<uuid::Uuid, ResultStatus> = output
            .results
            .iter()
            .filter_map(|r| Some((r.job_id.as_deref()?.parse().ok()?, r.status)))
            .collect();
        accounts
            .iter()
            .map(|a| {
                last.get(&a.job_id)
                    .and_then(|status| self.cmdlets_ran(a, *status))
                    .unwrap_or_else(|| self.max_cmdlets(a))
            })
            .sum()
    }
}

/// Cmdlets opening the session costs in Exchange: the import in remote mode, and
/// `Set-ADServerSettings` when the whole forest is viewed. The snap-in and `none` modes run
/// no Exchange session, so nothing of Exchange's budget.
pub fn session_cmdlets(session: &SessionData) -> u32 {
    match session.mode {
        ExchangeMode::Remote => IMPORT_CMDLETS + u32::from(session.view_entire_forest),
        ExchangeMode::Snapin | ExchangeMode::None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(archive: bool) -> AccountData {
        AccountData {
            job_id: uuid::Uuid::nil(),
            identity: "jdoe".into(),
            sam_account_name: "jdoe".into(),
            domain_controller: None,
            remote_routing_address: None,
            alias: None,
            primary_smtp_address: None,
            archive,
            ..AccountData::default()
        }
    }

    #[test]
    fn what_ran_never_exceeds_the_most_counted() {
        let statuses = [
            ResultStatus::Enabled,
            ResultStatus::Already,
            ResultStatus::Unhidden,
            ResultStatus::Hidden,
            ResultStatus::Shared,
            ResultStatus::NotRemote,
            ResultStatus::Error,
        ];
        for t in Template::ALL {
            for archive in [false, true] {
                let a = account(archive);
                for s in statuses {
                    let ran = t.cmdlets_ran(&a, s).unwrap_or(t.max_cmdlets(&a));
                    assert!(ran <= t.max_cmdlets(&a), "{t:?} {s:?} archive={archive}");
                    assert!(t.max_cmdlets(&a) <= MAX_CMDLETS_PER_ACCOUNT);
                }
            }
        }
    }

    #[test]
    fn a_new_joiner_runs_one_cmdlet_and_one_more_for_its_archive() {
        let t = Template::EnableRemoteMailbox;
        assert_eq!(
            t.cmdlets_ran(&account(false), ResultStatus::Enabled),
            Some(1)
        );
        assert_eq!(
            t.cmdlets_ran(&account(true), ResultStatus::Enabled),
            Some(2)
        );
        assert_eq!(t.cmdlets_ran(&account(false), ResultStatus::Error), None);
    }

    #[test]
    fn a_batch_counts_each_accounts_last_status_and_the_most_where_none() {
        let (new, again, silent) = (account(true), account(false), account(false));
        let mut again = again;
        again.job_id = uuid::Uuid::from_u128(1);
        let mut silent = silent;
        silent.job_id = uuid::Uuid::from_u128(2);
        let line = |a: &AccountData, s: &str| {
            format!(
                "MAILBOXD-RESULT {{\"job_id\":\"{}\",\"status\":\"{s}\"}}\n",
                a.job_id
            )
        };
        let stdout = [
            line(&new, "enabled"),
            line(&again, "error"),
            line(&again, "already"),
        ]
        .concat();
        let t = Template::EnableRemoteMailbox;
        let ran = t.batch_cmdlets_ran(&[new, again, silent.clone()], &crate::parse_stdout(&stdout));
        assert_eq!(ran, 2 + 2 + t.max_cmdlets(&silent));
    }

    #[test]
    fn only_a_remote_session_costs_cmdlets() {
        // From JSON, as the host reads it: fields added later keep their defaults.
        let mut s: SessionData = serde_json::from_value(serde_json::json!({
            "mode": "remote", "connection_uris": [], "view_entire_forest": true
        }))
        .expect("a session document");
        assert_eq!(session_cmdlets(&s), 3);
        s.mode = ExchangeMode::Snapin;
        assert_eq!(session_cmdlets(&s), 0);
    }
}
