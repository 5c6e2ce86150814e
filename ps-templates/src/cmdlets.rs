//! How many Exchange cmdlets a batch runs, read off the templates: what Exchange's cmdlet
//! budget (PowerShellMaxCmdlets per PowerShellMaxCmdletsTimePeriod) counts. The daemon takes
//! what a batch is expected to run — the path the directory predicts for each account
//! ([`Template::expected_cmdlets`]), the most it may run ([`Template::max_cmdlets`]) where
//! nothing was read — before it runs, and settles what really ran once the results say
//! which path each account took.

use crate::{AccountData, ExchangeMode, ResultStatus, SessionData, Template};

/// Cmdlets Exchange runs to set up one remote session: `Import-PSSession` asks the session
/// for its commands and their formatting (`Get-Command`, `Get-FormatData`). Not documented
/// either way, so counted: over-counting only paces a little slower.
const IMPORT_CMDLETS: u32 = 2;

/// The most cmdlets any one account of any template may run (an enable with its archive).
pub const MAX_CMDLETS_PER_ACCOUNT: u32 = 5;

/// The fewest cmdlets an account that runs costs: a new joiner's Enable-RemoteMailbox (a
/// mover's Get-RemoteMailbox that finds no remote mailbox).
pub const LEAST_CMDLETS_PER_ACCOUNT: u32 = 1;

/// What the directory showed of an account just before its batch: which path the template
/// will take, and so how many cmdlets it will run. The daemon fills it from the account it
/// read in AD; the template decides from Exchange's answers, which agree unless AD changed
/// in between (then the batch runs more or fewer, and settles what it ran).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// The account is a remote mailbox already: Enable-RemoteMailbox fails with
    /// RecipientTaskException and Get-RemoteMailbox reads it.
    pub remote_mailbox: bool,
    /// Its remote mailbox is hidden from the address lists.
    pub hidden: bool,
    /// Its remote mailbox is of another type than the one asked (converted with
    /// `Set-RemoteMailbox -Type`).
    pub other_type: bool,
    /// Its remote mailbox has a cloud archive already.
    pub archive: bool,
    /// A mover: the second `Set-RemoteMailbox` is needed — no email address policy applies,
    /// the remote routing address changes and is not among its proxy addresses yet.
    pub adds_routing_address: bool,
}

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

    /// The cmdlets one account will run on the path the directory predicts (`seen`), never
    /// more than [`Template::max_cmdlets`]:
    ///
    /// - enable-remote-mailbox, no remote mailbox yet: `Enable-RemoteMailbox`, one
    ///   `Set-RemoteMailbox` to hide it when the start date is ahead, the archive's call.
    ///   A remote mailbox already: the failed `Enable-RemoteMailbox` and `Get-RemoteMailbox`,
    ///   then one call each to convert its type, to unhide it (a rehire) or hide it (a
    ///   start date ahead), and to add the archive it lacks. A start date's step:
    ///   `Get-RemoteMailbox`, and `Set-RemoteMailbox` if it is hidden.
    /// - hide-remote-mailbox: `Get-RemoteMailbox` and the one `Set-RemoteMailbox` (the
    ///   directory check sends only a leaver with something to change).
    /// - rename-remote-mailbox: `Get-RemoteMailbox`, `Set-RemoteMailbox`, and the second one
    ///   when it adds the routing address.
    pub fn expected_cmdlets(self, account: &AccountData, seen: &Seen) -> u32 {
        let n = u32::from;
        let expected = match self {
            Template::EnableRemoteMailbox if account.make_visible => 1 + n(seen.hidden),
            Template::EnableRemoteMailbox if !seen.remote_mailbox => {
                1 + n(account.hidden) + n(account.archive)
            }
            Template::EnableRemoteMailbox => {
                2 + n(seen.other_type)
                    + n(seen.hidden != account.hidden)
                    + n(account.archive && !seen.archive)
            }
            Template::HideRemoteMailbox => 2,
            Template::RenameRemoteMailbox => 2 + n(seen.adds_routing_address),
        };
        expected.min(self.max_cmdlets(account))
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
    fn a_new_joiner_is_expected_to_run_one_cmdlet_plus_hiding_and_archive() {
        let t = Template::EnableRemoteMailbox;
        let none = Seen::default();
        assert_eq!(t.expected_cmdlets(&account(false), &none), 1);
        assert_eq!(t.expected_cmdlets(&account(true), &none), 2);
        let mut ahead = account(true);
        ahead.hidden = true;
        assert_eq!(t.expected_cmdlets(&ahead, &none), 3);
        // What it reports once it ran: the same.
        assert_eq!(t.cmdlets_ran(&ahead, ResultStatus::Enabled), Some(3));
    }

    #[test]
    fn an_existing_remote_mailbox_is_expected_to_take_the_get_and_each_change() {
        let t = Template::EnableRemoteMailbox;
        let remote = |hidden, other_type, archive| Seen {
            remote_mailbox: true,
            hidden,
            other_type,
            archive,
            ..Seen::default()
        };
        // A rehire: Enable fails, Get, Set to unhide.
        let rehire = remote(true, false, false);
        assert_eq!(t.expected_cmdlets(&account(false), &rehire), 3);
        assert_eq!(
            t.cmdlets_ran(&account(false), ResultStatus::Unhidden),
            Some(3)
        );
        // A leaver's shared mailbox hired again: converted and unhidden.
        assert_eq!(
            t.expected_cmdlets(&account(false), &remote(true, true, false)),
            4
        );
        // Only the archive missing: Enable fails, Get, the archive.
        assert_eq!(
            t.expected_cmdlets(&account(true), &remote(false, false, false)),
            3
        );
        assert_eq!(
            t.expected_cmdlets(&account(true), &remote(false, false, true)),
            2
        );
        // A visible mailbox whose start date is ahead: hidden.
        let mut ahead = account(false);
        ahead.hidden = true;
        assert_eq!(t.expected_cmdlets(&ahead, &remote(false, false, false)), 3);
        assert_eq!(t.cmdlets_ran(&ahead, ResultStatus::Hidden), Some(3));
        // Everything at once stays within the most.
        assert_eq!(
            t.expected_cmdlets(&account(true), &remote(true, true, false)),
            t.max_cmdlets(&account(true))
        );
    }

    #[test]
    fn a_start_dates_step_a_leaver_and_a_mover_are_expected_on_their_path() {
        let mut step = account(false);
        step.make_visible = true;
        let hidden = Seen {
            remote_mailbox: true,
            hidden: true,
            ..Seen::default()
        };
        let t = Template::EnableRemoteMailbox;
        assert_eq!(t.expected_cmdlets(&step, &hidden), 2);
        assert_eq!(t.expected_cmdlets(&step, &Seen::default()), 1);
        let leaver = Template::HideRemoteMailbox;
        assert_eq!(leaver.expected_cmdlets(&account(false), &hidden), 2);
        let mover = Template::RenameRemoteMailbox;
        assert_eq!(mover.expected_cmdlets(&account(false), &Seen::default()), 2);
        let unmanaged = Seen {
            adds_routing_address: true,
            ..Seen::default()
        };
        assert_eq!(mover.expected_cmdlets(&account(false), &unmanaged), 3);
    }

    #[test]
    fn the_expected_never_exceeds_the_most() {
        for t in Template::ALL {
            for bits in 0u8..64 {
                let b = |i: u8| bits & (1 << i) != 0;
                let mut a = account(b(0));
                a.hidden = b(1);
                let seen = Seen {
                    remote_mailbox: b(2),
                    hidden: b(3),
                    other_type: b(4),
                    archive: b(5),
                    adds_routing_address: b(4),
                };
                assert!(
                    t.expected_cmdlets(&a, &seen) <= t.max_cmdlets(&a),
                    "{t:?} {seen:?}"
                );
                assert!(t.expected_cmdlets(&a, &seen) >= 1);
            }
        }
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
