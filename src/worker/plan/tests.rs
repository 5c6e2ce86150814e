//! The plan's decisions, one account state at a time.

use super::*;

fn state(a: Option<Account>) -> AccountState {
    AccountState {
        domain_controller: "dc1.corp.example".into(),
        url: "ldaps://dc1.corp.example".into(),
        account: a,
    }
}

/// An enabled, visible account synced to the cloud, with this recipient type; the
/// `Seed` methods change one thing each.
fn acct(recipient: RecipientType) -> Account {
    let (disabled, hidden, synced) = (false, false, true);
    Account {
        distinguished_name: "CN=j,CN=Users,DC=corp,DC=example".into(),
        sam_account_name: "j".into(),
        user_principal_name: None,
        object_guid: None,
        user_account_control: if disabled { 514 } else { 512 },
        disabled,
        recipient,
        recipient_type_details: match recipient {
            RecipientType::RemoteMailbox => Some(2_147_483_648),
            RecipientType::OnPremMailbox => Some(1),
            RecipientType::MailUser => Some(128),
            RecipientType::Other => Some(64),
            RecipientType::None => None,
        },
        remote_recipient_type: None,
        hidden,
        target_address: (recipient == RecipientType::RemoteMailbox)
            .then(|| "SMTP:j@t.mail.onmicrosoft.com".into()),
        mail: None,
        proxy_addresses: Vec::new(),
        alias: None,
        cloud_synced: synced,
        archive_guid: None,
        archive_name: None,
        archive_status: None,
        external_directory_object_id: None,
        address_policy_enabled: true,
    }
}

trait Seed {
    fn disabled(self) -> Self;
    fn hidden(self) -> Self;
    fn not_synced(self) -> Self;
}

impl Seed for Account {
    fn disabled(mut self) -> Account {
        self.disabled = true;
        self.user_account_control = 514;
        self
    }
    fn hidden(mut self) -> Account {
        self.hidden = true;
        self
    }
    fn not_synced(mut self) -> Account {
        self.cloud_synced = false;
        self
    }
}

/// A plan without its text, to compare decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Run,
    Done(JobEffect),
    Cancel,
    Wait,
    Fail(ErrorClass),
}

fn shape(p: &Plan) -> Shape {
    match p {
        Plan::Run => Shape::Run,
        Plan::Done(o) => Shape::Done(*o),
        Plan::Cancel(_) => Shape::Cancel,
        Plan::WaitForSync(_) => Shape::Wait,
        Plan::Fail(class, _) => Shape::Fail(*class),
    }
}

/// What `plan` decides for an account AD shows like this (the sync required or not),
/// the event asking for the usual remote routing address.
fn decide(kind: EventKind, a: Option<Account>, require_sync: bool) -> Shape {
    let wanted = Wanted {
        remote_routing_address: Some("j@t.mail.onmicrosoft.com"),
        ..Wanted::default()
    };
    shape(&plan(kind, "j", &state(a), wanted, require_sync))
}

/// docs/decisions.md, "What the directory decides before Exchange is asked": a joiner.
#[test]
fn a_joiner_runs_only_where_the_directory_says_it_should() {
    use RecipientType::*;
    let (fail, done) = (Shape::Fail, Shape::Done);
    let rows = [
        (Option::None, false, fail(ErrorClass::Transient)),
        (Some(acct(None)), false, Shape::Run),
        (Some(acct(MailUser)), false, Shape::Run),
        (Some(acct(RemoteMailbox)), false, done(JobEffect::Already)),
        (Some(acct(RemoteMailbox).hidden()), false, Shape::Run),
        (
            Some(acct(RemoteMailbox).disabled().hidden()),
            false,
            Shape::Cancel,
        ),
        (
            Some(acct(OnPremMailbox)),
            false,
            fail(ErrorClass::Permanent),
        ),
        (Some(acct(Other)), false, fail(ErrorClass::Permanent)),
        (Some(acct(None).not_synced()), true, Shape::Wait),
        (Some(acct(None).not_synced()), false, Shape::Run),
    ];
    for (a, require_sync, want) in rows {
        let desc = format!("{a:?} sync={require_sync}");
        assert_eq!(decide(EventKind::Joiner, a, require_sync), want, "{desc}");
    }
}

/// docs/decisions.md, "What the directory decides before Exchange is asked": a leaver.
#[test]
fn a_leaver_runs_only_where_the_directory_says_it_should() {
    use RecipientType::*;
    let rows = [
        (Option::None, Shape::Done(JobEffect::Gone)),
        (Some(acct(RemoteMailbox)), Shape::Cancel),
        (
            Some(acct(None).disabled()),
            Shape::Done(JobEffect::NotRemote),
        ),
        (
            Some(acct(RemoteMailbox).disabled().hidden()),
            Shape::Done(JobEffect::Already),
        ),
        (Some(acct(RemoteMailbox).disabled()), Shape::Run),
    ];
    for (a, want) in rows {
        let desc = format!("{a:?}");
        assert_eq!(decide(EventKind::Leaver, a, false), want, "{desc}");
    }
}

/// A remote mailbox routed elsewhere is a conflict for a person, not a no-op.
#[test]
fn a_joiner_whose_remote_mailbox_routes_elsewhere_fails_for_a_person() {
    let p = plan(
        EventKind::Joiner,
        "j",
        &state(Some(acct(RecipientType::RemoteMailbox))),
        Wanted {
            remote_routing_address: Some("other@t.mail.onmicrosoft.com"),
            ..Wanted::default()
        },
        false,
    );
    assert_eq!(shape(&p), Shape::Fail(ErrorClass::Permanent));
}

#[test]
fn a_joiner_with_an_archive_runs_until_the_archive_is_there() {
    let wanted = Wanted {
        remote_routing_address: Some("j@t.mail.onmicrosoft.com"),
        archive: true,
        ..Wanted::default()
    };
    let mut a = acct(RecipientType::RemoteMailbox);
    let p = plan(
        EventKind::Joiner,
        "j",
        &state(Some(a.clone())),
        wanted,
        false,
    );
    assert_eq!(shape(&p), Shape::Run, "the mailbox has no archive yet");
    assert!(
        verified(
            EventKind::Joiner,
            JobEffect::Already,
            &state(Some(a.clone())),
            wanted
        )
        .is_err()
    );
    a.archive_guid = Some(uuid::Uuid::new_v4());
    let p = plan(
        EventKind::Joiner,
        "j",
        &state(Some(a.clone())),
        wanted,
        false,
    );
    assert_eq!(shape(&p), Shape::Done(JobEffect::Already));
    assert!(
        verified(
            EventKind::Joiner,
            JobEffect::Enabled,
            &state(Some(a)),
            wanted
        )
        .is_ok()
    );
}

#[test]
fn a_joiner_on_a_converted_shared_mailbox_runs_and_counts_once_it_is_a_user_mailbox() {
    let mut a = acct(RecipientType::RemoteMailbox);
    a.recipient_type_details = Some(34_359_738_368);
    let p = plan(
        EventKind::Joiner,
        "j",
        &state(Some(a.clone())),
        Wanted::default(),
        false,
    );
    assert_eq!(shape(&p), Shape::Run, "shared is not already done");
    let still_shared = state(Some(a.clone()));
    assert!(
        verified(
            EventKind::Joiner,
            JobEffect::Converted,
            &still_shared,
            Wanted::default()
        )
        .is_err()
    );
    a.recipient_type_details = Some(2_147_483_648);
    let user = state(Some(a));
    assert!(
        verified(
            EventKind::Joiner,
            JobEffect::Converted,
            &user,
            Wanted::default()
        )
        .is_ok()
    );
}

#[test]
fn success_counts_only_when_the_directory_shows_it() {
    use EventKind::{Joiner, Leaver};
    let hidden = state(Some(acct(RecipientType::RemoteMailbox).disabled().hidden()));
    let visible = state(Some(acct(RecipientType::RemoteMailbox)));
    let plain = state(Some(acct(RecipientType::None).disabled()));
    let shows =
        |kind, effect, st: &AccountState| verified(kind, effect, st, Wanted::default()).is_ok();
    assert!(shows(Leaver, JobEffect::Hidden, &hidden));
    assert!(!shows(Leaver, JobEffect::Hidden, &visible));
    assert!(shows(Leaver, JobEffect::NotRemote, &plain));
    assert!(shows(Joiner, JobEffect::Enabled, &visible));
    assert!(!shows(Joiner, JobEffect::Enabled, &hidden));
    assert!(!shows(Joiner, JobEffect::Enabled, &state(None)));
}

/// A start date: the joiner ahead of it wants the mailbox hidden (a disabled starter is
/// not a stale rehire), its step wants it visible even while the account is disabled,
/// and each succeeds only when AD shows it so.
#[test]
fn a_start_date_keeps_the_mailbox_hidden_until_its_step_makes_it_visible() {
    use RecipientType::RemoteMailbox;
    let ahead = Wanted {
        hidden: true,
        ..Wanted::default()
    };
    let step = Wanted {
        scheduled: true,
        ..Wanted::default()
    };
    let decide = |a: Account, w| shape(&plan(EventKind::Joiner, "j", &state(Some(a)), w, false));
    let starter = || acct(RemoteMailbox).disabled();
    assert_eq!(
        decide(starter().hidden(), ahead),
        Shape::Done(JobEffect::Already)
    );
    assert_eq!(decide(acct(RemoteMailbox), ahead), Shape::Run);
    assert_eq!(decide(starter().hidden(), step), Shape::Run);
    assert_eq!(
        decide(acct(RemoteMailbox), step),
        Shape::Done(JobEffect::Already)
    );
    let gone = acct(RecipientType::MailUser);
    assert_eq!(decide(gone, step), Shape::Fail(ErrorClass::Permanent));
    // Without a start date, hidden and disabled is a leaver's mailbox: stale.
    assert_eq!(decide(starter().hidden(), Wanted::default()), Shape::Cancel);
    let shows =
        |a: Account, w| verified(EventKind::Joiner, JobEffect::Enabled, &state(Some(a)), w).is_ok();
    assert!(shows(starter().hidden(), ahead));
    assert!(!shows(starter(), ahead));
    assert!(shows(starter(), step));
    assert!(!shows(starter().hidden(), step));
}

/// msExchRecipientTypeDetails of each remote type (MailboxType::from_type_details).
fn typed(kind: MailboxType) -> Account {
    let mut a = acct(RecipientType::RemoteMailbox);
    a.recipient_type_details = Some(match kind {
        MailboxType::User => 2_147_483_648,
        MailboxType::Room => 8_589_934_592,
        MailboxType::Equipment => 17_179_869_184,
        MailboxType::Shared => 34_359_738_368,
    });
    a
}

/// docs/decisions.md, "A rehire of a migrated mailbox": a hidden user mailbox AD says was
/// migrated (msExchRemoteRecipientType with the Migrated flag, 4) fails for good before
/// Exchange; one Enable-RemoteMailbox provisioned (1), a visible one, a stale (disabled)
/// joiner and a migrated shared mailbox go on as before.
#[test]
fn a_rehire_of_a_migrated_user_mailbox_fails_with_what_to_do() {
    use MailboxType::*;
    let joiner = |a: Account| {
        let p = plan(
            EventKind::Joiner,
            "j",
            &state(Some(a)),
            Wanted::default(),
            false,
        );
        (shape(&p), p)
    };
    let with = |mut a: Account, flags: i64| {
        a.remote_recipient_type = Some(flags);
        a
    };
    // 4 Migrated, 6 with a cloud archive, 20 with the archive deprovisioned.
    for flags in [4, 6, 20] {
        let (got, p) = joiner(with(typed(User).hidden(), flags));
        assert_eq!(got, Shape::Fail(ErrorClass::Permanent), "{flags}");
        let Plan::Fail(_, text) = p else {
            unreachable!()
        };
        assert!(
            text.contains(&format!("msExchRemoteRecipientType={flags}")),
            "{text}"
        );
        assert!(text.contains("Get-Mailbox"), "{text}");
        assert!(
            text.contains("-HiddenFromAddressListsEnabled $false"),
            "{text}"
        );
    }
    assert_eq!(joiner(with(typed(User).hidden(), 1)).0, Shape::Run);
    let visible = joiner(with(typed(User), 4)).0;
    assert_eq!(visible, Shape::Done(JobEffect::Already));
    let stale = joiner(with(typed(User).disabled().hidden(), 4)).0;
    assert_eq!(stale, Shape::Cancel);
    // 100: a migrated mailbox converted to shared needs no licence, so it was not purged.
    assert_eq!(joiner(with(typed(Shared).hidden(), 100)).0, Shape::Run);
}

/// docs/decisions.md, "Mailbox types": a remote mailbox of another type than the joiner
/// asks for is converted, unless it is a resource; an unknown remote type fails.
#[test]
fn a_joiner_converts_a_user_or_shared_mailbox_but_never_a_resource() {
    use MailboxType::*;
    let fail = Shape::Fail(ErrorClass::Permanent);
    let rows = [
        (Shared, User, Shape::Run),
        (User, Shared, Shape::Run),
        (User, Room, Shape::Run),
        (Room, Room, Shape::Done(JobEffect::Already)),
        (Room, User, fail),
        (Room, Equipment, fail),
        (Equipment, Shared, fail),
    ];
    for (current, kind, want) in rows {
        let wanted = Wanted {
            kind,
            ..Wanted::default()
        };
        let p = plan(
            EventKind::Joiner,
            "j",
            &state(Some(typed(current))),
            wanted,
            false,
        );
        assert_eq!(shape(&p), want, "{current} asked as {kind}");
    }
    let mut team = acct(RecipientType::RemoteMailbox);
    team.recipient_type_details = Some(137_438_953_472);
    let p = plan(
        EventKind::Joiner,
        "j",
        &state(Some(team)),
        Wanted::default(),
        false,
    );
    assert_eq!(shape(&p), fail, "a type mailboxd does not manage");
    // A room's account is disabled as a rule: hidden and disabled is not a stale joiner.
    let room = state(Some(typed(Room).disabled().hidden()));
    let asked = Wanted {
        kind: Room,
        ..Wanted::default()
    };
    assert_eq!(
        shape(&plan(EventKind::Joiner, "j", &room, asked, false)),
        Shape::Run
    );
    assert!(
        verified(
            EventKind::Joiner,
            JobEffect::Enabled,
            &state(Some(typed(Room))),
            asked
        )
        .is_ok()
    );
    assert!(
        verified(
            EventKind::Joiner,
            JobEffect::Enabled,
            &state(Some(typed(User))),
            asked
        )
        .is_err()
    );
}

/// docs/decisions.md, "The leaver policy": under `shared` a user mailbox is converted,
/// a shared one stays visible when configured, a resource is only hidden.
#[test]
fn a_leaver_under_the_shared_policy_converts_only_a_user_mailbox() {
    use MailboxType::*;
    let shared_hidden = Wanted {
        to_shared: true,
        ..Wanted::default()
    };
    let shared_visible = Wanted {
        keep_visible: true,
        ..shared_hidden
    };
    let rows = [
        (typed(User).disabled(), shared_hidden, (true, true)),
        (typed(User).disabled(), shared_visible, (true, false)),
        (
            typed(Shared).disabled().hidden(),
            shared_hidden,
            (false, false),
        ),
        (typed(Shared).disabled(), shared_visible, (false, false)),
        (typed(Room).disabled(), shared_visible, (false, true)),
        (typed(User).disabled(), Wanted::default(), (false, true)),
    ];
    for (a, wanted, (to_shared, hide)) in rows {
        let steps = leaver_steps(&a, wanted);
        assert_eq!(
            (steps.to_shared, steps.hide),
            (to_shared, hide),
            "{a:?} {wanted:?}"
        );
        let want = if to_shared || hide {
            Shape::Run
        } else {
            Shape::Done(JobEffect::Already)
        };
        assert_eq!(
            shape(&plan(
                EventKind::Leaver,
                "j",
                &state(Some(a)),
                wanted,
                false
            )),
            want
        );
    }
    let done = state(Some(typed(Shared).disabled().hidden()));
    let still_user = state(Some(typed(User).disabled().hidden()));
    assert!(verified(EventKind::Leaver, JobEffect::Shared, &done, shared_hidden).is_ok());
    assert!(
        verified(
            EventKind::Leaver,
            JobEffect::Shared,
            &still_user,
            shared_hidden
        )
        .is_err()
    );
}

/// The cmdlets a joiner's batch reserves for the path AD shows (`seen`, then the template's
/// `expected_cmdlets`), for every account the plan sends to Exchange.
fn expected_for_joiner(a: &Account, data: &AccountData, wanted: Wanted<'_>) -> u32 {
    crate::exchange::Template::EnableRemoteMailbox.expected_cmdlets(data, &seen(a, wanted))
}

#[test]
fn each_joiner_path_the_directory_shows_is_paced_at_what_it_runs() {
    use RecipientType::*;
    let data = |archive, hidden| AccountData {
        archive,
        hidden,
        ..AccountData::default()
    };
    let wanted = |d: &AccountData| Wanted {
        archive: d.archive,
        hidden: d.hidden,
        ..Wanted::default()
    };
    let plain = data(false, false);
    // No recipient yet: Enable-RemoteMailbox alone; a mail user the same.
    assert_eq!(expected_for_joiner(&acct(None), &plain, wanted(&plain)), 1);
    assert_eq!(
        expected_for_joiner(&acct(MailUser), &plain, wanted(&plain)),
        1
    );
    // With an archive, and hidden until a start date ahead: one call each more.
    let starter = data(true, true);
    assert_eq!(
        expected_for_joiner(&acct(None), &starter, wanted(&starter)),
        3
    );
    // A rehire: the hidden remote mailbox (Enable fails, Get, Set to unhide).
    let rehire = acct(RemoteMailbox).hidden();
    assert_eq!(expected_for_joiner(&rehire, &plain, wanted(&plain)), 3);
    // Its archive missing as well: one more.
    let with_archive = data(true, false);
    assert_eq!(
        expected_for_joiner(&rehire, &with_archive, wanted(&with_archive)),
        4
    );
    // A leaver's mailbox converted to shared, hired again: converted and unhidden.
    let mut shared = acct(RemoteMailbox).hidden();
    shared.recipient_type_details = Some(34_359_738_368);
    assert_eq!(expected_for_joiner(&shared, &plain, wanted(&plain)), 4);
    // The start date's step on the mailbox its joiner hid: Get, then Set.
    let step = AccountData {
        make_visible: true,
        ..AccountData::default()
    };
    let scheduled = Wanted {
        scheduled: true,
        ..Wanted::default()
    };
    assert_eq!(expected_for_joiner(&rehire, &step, scheduled), 2);
}

#[test]
fn a_leaver_is_paced_at_its_get_and_set() {
    let a = acct(RecipientType::RemoteMailbox).disabled();
    let t = crate::exchange::Template::HideRemoteMailbox;
    let data = AccountData::default();
    assert_eq!(t.expected_cmdlets(&data, &seen(&a, Wanted::default())), 2);
}
