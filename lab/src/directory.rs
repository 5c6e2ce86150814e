//! The lab's in-memory directory: the AD accounts and the Exchange attributes that the
//! recipient cmdlets write on them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// msExchRecipientTypeDetails for a remote (cloud) user mailbox.
pub const RECIPIENT_TYPE_REMOTE_USER_MAILBOX: i64 = 2_147_483_648;
/// msExchRecipientTypeDetails for an on-premises user mailbox.
pub const RECIPIENT_TYPE_USER_MAILBOX: i64 = 1;
/// msExchRecipientDisplayType of a synced mailbox user.
pub const DISPLAY_TYPE_SYNCED_MAILBOX_USER: i64 = -2_147_483_642;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Recipient {
    #[default]
    None,
    Remote,
    Onprem,
}

/// The kind of a remote mailbox, as `Enable-RemoteMailbox -Room|-Equipment|-Shared` or
/// `Set-RemoteMailbox -Type Regular|Room|Equipment|Shared` stamps it
/// (https://learn.microsoft.com/powershell/module/exchange/set-remotemailbox). A leaver's mailbox converted to shared is
/// the common case: a rehire finds it so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RemoteType {
    #[default]
    Regular,
    Shared,
    Room,
    Equipment,
}

impl RemoteType {
    /// `-Type`'s value as Exchange binds it (ConvertibleRemoteMailboxSubType).
    pub fn parse(value: &str) -> Option<RemoteType> {
        [
            RemoteType::Regular,
            RemoteType::Shared,
            RemoteType::Room,
            RemoteType::Equipment,
        ]
        .into_iter()
        .find(|t| format!("{t:?}").eq_ignore_ascii_case(value))
    }

    /// The type a template asks for (the contract's name for the same four values).
    pub fn of(t: ps_templates::RemoteMailboxType) -> RemoteType {
        match t {
            ps_templates::RemoteMailboxType::Regular => RemoteType::Regular,
            ps_templates::RemoteMailboxType::Shared => RemoteType::Shared,
            ps_templates::RemoteMailboxType::Room => RemoteType::Room,
            ps_templates::RemoteMailboxType::Equipment => RemoteType::Equipment,
        }
    }

    /// `-Type`'s value for it.
    pub fn type_value(self) -> &'static str {
        match self {
            RemoteType::Regular => "Regular",
            RemoteType::Shared => "Shared",
            RemoteType::Room => "Room",
            RemoteType::Equipment => "Equipment",
        }
    }

    /// Enable-RemoteMailbox's switch for it: each is a parameter set of its own; a regular
    /// mailbox is the Default set, without one.
    pub fn switch(self) -> Option<&'static str> {
        (self != RemoteType::Regular).then(|| self.type_value())
    }

    /// A room or equipment mailbox.
    pub fn is_resource(self) -> bool {
        matches!(self, RemoteType::Room | RemoteType::Equipment)
    }

    /// Get-RemoteMailbox's RecipientTypeDetails.
    pub fn type_name(self) -> &'static str {
        match self {
            RemoteType::Regular => "RemoteUserMailbox",
            RemoteType::Shared => "RemoteSharedMailbox",
            RemoteType::Room => "RemoteRoomMailbox",
            RemoteType::Equipment => "RemoteEquipmentMailbox",
        }
    }

    /// msExchRecipientTypeDetails: RemoteUserMailbox 2147483648, RemoteRoomMailbox
    /// 8589934592, RemoteEquipmentMailbox 17179869184, RemoteSharedMailbox 34359738368
    /// (the RecipientTypeDetails enum, learn.microsoft.com ff344739(v=exchg.150); the
    /// PowerShell Gallery's S.DS.P 2.1.2 transform for msExchRecipientTypeDetails).
    pub fn type_details(self) -> i64 {
        match self {
            RemoteType::Regular => RECIPIENT_TYPE_REMOTE_USER_MAILBOX,
            RemoteType::Room => 8_589_934_592,
            RemoteType::Equipment => 17_179_869_184,
            RemoteType::Shared => 34_359_738_368,
        }
    }

    /// msExchRemoteRecipientType's kind bits: RoomMailbox 0x20, EquipmentMailbox 0x40,
    /// SharedMailbox both (RemoteRecipientType, learn.microsoft.com ff443320(v=exchg.150);
    /// the PowerShell Gallery's S.DS.P 2.1.6 transform for msExchRemoteRecipientType).
    fn kind_bits(self) -> i64 {
        match self {
            RemoteType::Regular => 0,
            RemoteType::Room => 0x20,
            RemoteType::Equipment => 0x40,
            RemoteType::Shared => 0x60,
        }
    }

    /// msExchRecipientDisplayType: Room -2147481850, Equipment -2147481594, else
    /// SyncedMailboxUser (the PowerShell Gallery's S.DS.P transform for it).
    fn display_type(self) -> i64 {
        match self {
            RemoteType::Room => -2_147_481_850,
            RemoteType::Equipment => -2_147_481_594,
            RemoteType::Regular | RemoteType::Shared => DISPLAY_TYPE_SYNCED_MAILBOX_USER,
        }
    }

    fn from_type_details(v: Option<i64>) -> RemoteType {
        [RemoteType::Shared, RemoteType::Room, RemoteType::Equipment]
            .into_iter()
            .find(|t| Some(t.type_details()) == v)
            .unwrap_or_default()
    }
}

/// One line of `--accounts-file` (JSON lines).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSeed {
    pub sam_account_name: String,
    #[serde(default)]
    pub user_principal_name: Option<String>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub object_guid: Option<Uuid>,
    #[serde(default)]
    pub recipient: Recipient,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub synced: bool,
    /// A remote mailbox that has its cloud archive already (`recipient: "remote"` only).
    #[serde(default)]
    pub archive: bool,
    /// givenName and sn: what the email address policy builds the primary address from.
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    /// A remote mailbox's kind (`recipient: "remote"` only): "shared" for a leaver's
    /// converted mailbox.
    #[serde(default)]
    pub remote_type: RemoteType,
    /// A remote mailbox moved from on premises by a move request (`recipient: "remote"`
    /// only): msExchRemoteRecipientType carries Migrated (4) instead of ProvisionMailbox (1).
    #[serde(default)]
    pub migrated: bool,
    /// Exchange's email address policy does not apply to it (EmailAddressPolicyEnabled
    /// false: msExchPoliciesExcluded holds every policy's GUID).
    #[serde(default)]
    pub policy_excluded: bool,
}

/// An account as `GET /lab/mailboxes` shows it, with the AD attributes Exchange wrote.
#[derive(Debug, Clone, Serialize)]
#[allow(non_snake_case)]
pub struct LabAccount {
    pub sam_account_name: String,
    pub user_principal_name: String,
    pub object_guid: Uuid,
    pub distinguished_name: String,
    pub disabled: bool,
    pub synced: bool,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub recipient: Recipient,
    pub hidden: bool,
    pub remote_routing_address: Option<String>,
    pub primary_smtp_address: Option<String>,
    pub alias: Option<String>,
    pub proxy_addresses: Vec<String>,
    pub msExchRecipientTypeDetails: Option<i64>,
    pub msExchRemoteRecipientType: Option<i64>,
    pub msExchRecipientDisplayType: Option<i64>,
    pub msExchHideFromAddressLists: Option<bool>,
    pub targetAddress: Option<String>,
    pub mailNickname: Option<String>,
    /// `Enable-RemoteMailbox -Archive` was used.
    pub archive: bool,
    /// What `-Archive` writes in AD: the archive's GUID and name.
    pub msExchArchiveGUID: Option<Uuid>,
    pub msExchArchiveName: Option<String>,
    /// What the cloud's hybrid writeback puts here (`cloud::sync_cycle`): 1 for an active
    /// archive.
    pub msExchArchiveStatus: Option<i64>,
    /// `{26491cfc-9e50-4857-861b-0cb8df22b5d7}` when EmailAddressPolicyEnabled is false.
    pub msExchPoliciesExcluded: Option<String>,
}

/// What msExchPoliciesExcluded holds for a recipient no email address policy applies to.
pub const ALL_POLICIES_EXCLUDED: &str = "{26491cfc-9e50-4857-861b-0cb8df22b5d7}";

/// The lab's AD domain.
pub const LAB_DOMAIN: &str = "corp.example";
pub const LAB_BASE_DN: &str = "DC=corp,DC=example";

impl AccountSeed {
    /// A plain, enabled, synced AD user with no mailbox.
    pub fn user(sam: &str) -> AccountSeed {
        AccountSeed {
            sam_account_name: sam.to_owned(),
            user_principal_name: None,
            disabled: false,
            object_guid: None,
            recipient: Recipient::None,
            hidden: false,
            synced: true,
            archive: false,
            given_name: None,
            surname: None,
            remote_type: RemoteType::Regular,
            migrated: false,
            policy_excluded: false,
        }
    }

    /// A plain user with a given name and surname (for the email address policy).
    pub fn person(sam: &str, given_name: &str, surname: &str) -> AccountSeed {
        AccountSeed {
            given_name: Some(given_name.to_owned()),
            surname: Some(surname.to_owned()),
            ..AccountSeed::user(sam)
        }
    }

    /// An enabled user with a remote mailbox, shown in the address lists; `.disabled()` and
    /// `.hidden()` say otherwise at the call site.
    pub fn remote(sam: &str) -> AccountSeed {
        AccountSeed {
            recipient: Recipient::Remote,
            ..AccountSeed::user(sam)
        }
    }

    /// A user with an on-premises mailbox (a joiner for it cannot get a remote one).
    pub fn onprem(sam: &str) -> AccountSeed {
        AccountSeed {
            recipient: Recipient::Onprem,
            ..AccountSeed::user(sam)
        }
    }

    /// The account disabled in AD (a leaver).
    #[must_use]
    pub fn disabled(self) -> AccountSeed {
        AccountSeed {
            disabled: true,
            ..self
        }
    }

    /// The remote mailbox converted (`Set-RemoteMailbox -Type …`), e.g. a leaver's to shared.
    #[must_use]
    pub fn converted(self, remote_type: RemoteType) -> AccountSeed {
        AccountSeed {
            remote_type,
            ..self
        }
    }

    /// The remote mailbox migrated from on premises (a move request), not provisioned by
    /// Enable-RemoteMailbox.
    #[must_use]
    pub fn migrated(self) -> AccountSeed {
        AccountSeed {
            migrated: true,
            ..self
        }
    }

    /// Exchange's email address policy turned off for it (EmailAddressPolicyEnabled false).
    #[must_use]
    pub fn without_address_policy(self) -> AccountSeed {
        AccountSeed {
            policy_excluded: true,
            ..self
        }
    }

    /// The mailbox hidden from the address lists.
    pub fn hidden(self) -> AccountSeed {
        AccountSeed {
            hidden: true,
            ..self
        }
    }
}

impl LabAccount {
    pub fn from_seed(seed: AccountSeed) -> LabAccount {
        let upn = seed
            .user_principal_name
            .unwrap_or_else(|| format!("{}@{LAB_DOMAIN}", seed.sam_account_name));
        let dn = format!(
            "CN={},CN=Users,{LAB_BASE_DN}",
            escape_dn_value(&seed.sam_account_name)
        );
        let mut a = LabAccount {
            sam_account_name: seed.sam_account_name.clone(),
            user_principal_name: upn,
            object_guid: seed.object_guid.unwrap_or_else(Uuid::new_v4),
            distinguished_name: dn,
            disabled: seed.disabled,
            synced: seed.synced,
            given_name: seed.given_name.clone(),
            surname: seed.surname.clone(),
            recipient: Recipient::None,
            hidden: false,
            remote_routing_address: None,
            primary_smtp_address: None,
            alias: None,
            proxy_addresses: Vec::new(),
            msExchRecipientTypeDetails: None,
            msExchRemoteRecipientType: None,
            msExchRecipientDisplayType: None,
            msExchHideFromAddressLists: None,
            targetAddress: None,
            mailNickname: None,
            archive: false,
            msExchArchiveGUID: None,
            msExchArchiveName: None,
            msExchArchiveStatus: None,
            msExchPoliciesExcluded: None,
        };
        let alias = default_alias(&a);
        match seed.recipient {
            Recipient::None => {}
            Recipient::Remote => {
                let rra = format!("{alias}@tenant.mail.onmicrosoft.com");
                let primary = format!("{alias}@{LAB_DOMAIN}");
                a.make_remote(&rra, &alias, &primary);
                if seed.archive {
                    a.enable_archive();
                }
                if seed.migrated {
                    a.mark_migrated();
                }
                a.set_remote_type(seed.remote_type);
            }
            Recipient::Onprem => {
                a.recipient = Recipient::Onprem;
                a.alias = Some(alias.clone());
                a.mailNickname = Some(alias.clone());
                let primary = format!("{alias}@{LAB_DOMAIN}");
                a.proxy_addresses = vec![format!("SMTP:{primary}")];
                a.primary_smtp_address = Some(primary);
                a.msExchRecipientTypeDetails = Some(RECIPIENT_TYPE_USER_MAILBOX);
                a.msExchRecipientDisplayType = Some(0);
            }
        }
        if seed.hidden {
            a.set_hidden(true);
        }
        a.set_address_policy(!seed.policy_excluded);
        a
    }

    /// EmailAddressPolicyEnabled: msExchPoliciesExcluded does not hold every policy.
    pub fn address_policy_enabled(&self) -> bool {
        self.msExchPoliciesExcluded.is_none()
    }

    /// What `-EmailAddressPolicyEnabled` writes: msExchPoliciesExcluded set to every
    /// policy's GUID when false, cleared when true.
    pub fn set_address_policy(&mut self, enabled: bool) {
        self.msExchPoliciesExcluded = (!enabled).then(|| ALL_POLICIES_EXCLUDED.to_owned());
    }

    /// What Enable-RemoteMailbox writes: it mail-enables the existing user as a remote
    /// mailbox, on-premises AD only (the cloud mailbox comes with the sync).
    pub fn make_remote(&mut self, rra: &str, alias: &str, primary: &str) {
        self.recipient = Recipient::Remote;
        self.remote_routing_address = Some(rra.to_owned());
        self.alias = Some(alias.to_owned());
        self.mailNickname = Some(alias.to_owned());
        self.primary_smtp_address = Some(primary.to_owned());
        self.proxy_addresses = vec![format!("SMTP:{primary}"), format!("smtp:{rra}")];
        self.targetAddress = Some(format!("SMTP:{rra}"));
        self.msExchRecipientTypeDetails = Some(RECIPIENT_TYPE_REMOTE_USER_MAILBOX);
        self.msExchRemoteRecipientType = Some(1);
        self.msExchRecipientDisplayType = Some(DISPLAY_TYPE_SYNCED_MAILBOX_USER);
    }

    /// What `Enable-RemoteMailbox -Archive` writes: the archive's GUID and name, and
    /// msExchRemoteRecipientType 3 (ProvisionMailbox | ProvisionArchive). The value 3 and the
    /// name's "In-Place Archive - <name>" shape are from memory of real tenants, not from a
    /// published source.
    pub fn enable_archive(&mut self) {
        self.archive = true;
        self.msExchArchiveGUID = Some(Uuid::new_v4());
        self.msExchArchiveName = Some(format!("In-Place Archive - {}", self.sam_account_name));
        self.msExchRemoteRecipientType = Some(3);
    }

    /// What a completed move to Exchange Online leaves in msExchRemoteRecipientType: the
    /// Migrated flag (4) in place of ProvisionMailbox (1), the archive bit kept (the values
    /// 4, 6 and 20 practitioners list for moved mailboxes: identitydude.com 2015-03-26,
    /// connectioncloudsupport.zendesk.com "Recipient Type Values in Hybrid Environment").
    pub fn mark_migrated(&mut self) {
        let flags = self.msExchRemoteRecipientType.unwrap_or(1) & !0x1;
        self.msExchRemoteRecipientType = Some(flags | 0x4);
    }

    /// What `Set-RemoteMailbox -Type` writes: the three msExch type attributes, the
    /// archive and migration bits of msExchRemoteRecipientType kept.
    pub fn set_remote_type(&mut self, t: RemoteType) {
        let flags = self.msExchRemoteRecipientType.unwrap_or(1) & !0x60;
        self.msExchRemoteRecipientType = Some(flags | t.kind_bits());
        self.msExchRecipientTypeDetails = Some(t.type_details());
        self.msExchRecipientDisplayType = Some(t.display_type());
    }

    /// The remote mailbox's kind, read off msExchRecipientTypeDetails.
    pub fn remote_type(&self) -> RemoteType {
        RemoteType::from_type_details(self.msExchRecipientTypeDetails)
    }

    pub fn set_hidden(&mut self, hidden: bool) {
        self.hidden = hidden;
        self.msExchHideFromAddressLists = Some(hidden);
    }

    /// Whether `identity` names this account the way Exchange's UserIdParameter resolves it:
    /// objectGUID, distinguished name, UPN, `DOMAIN\sam` or the sAMAccountName.
    pub fn matches(&self, identity: &str) -> bool {
        let id = identity.trim();
        if let Ok(g) = Uuid::parse_str(id.trim_matches(|c| c == '{' || c == '}')) {
            return g == self.object_guid;
        }
        let sam = id.rsplit_once('\\').map_or(id, |(_, s)| s);
        sam.eq_ignore_ascii_case(&self.sam_account_name)
            || sam.to_lowercase() == self.sam_account_name.to_lowercase()
            || id.eq_ignore_ascii_case(&self.user_principal_name)
            || id.eq_ignore_ascii_case(&self.distinguished_name)
    }
}

/// The alias Exchange builds when none is given: the UPN's local part, else the sAMAccountName,
/// with characters an alias cannot hold dropped.
pub fn default_alias(a: &LabAccount) -> String {
    let base = a
        .user_principal_name
        .split('@')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(&a.sam_account_name);
    let alias: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(*c))
        .collect();
    if alias.is_empty() {
        "user".to_owned()
    } else {
        alias
    }
}

/// RFC 4514 escaping for a DN attribute value.
fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '));
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `--accounts N`: user00001 … plain users with no mailbox.
pub fn seeded(n: usize) -> Vec<AccountSeed> {
    (1..=n)
        .map(|i| AccountSeed::user(&format!("user{i:05}")))
        .collect()
}

/// Why AD would refuse to add an account, with the LDAP
/// diagnostic a domain controller returns for it. DSIDs vary by DC build; these are ones seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddRefused {
    /// LDAP 68; 0x524 = ERROR_USER_EXISTS (certipy/ldap-shell transcript).
    #[error(
        "sAMAccountName {0:?} is already in use: 00000524: UpdErr: DSID-031A11FA, problem 6005 (ENTRY_EXISTS), data 0"
    )]
    SamInUse(String),
    /// ERROR_DS_UPN_VALUE_NOT_UNIQUE_IN_FOREST (8648), text from learn.microsoft.com "SPN and
    /// UPN uniqueness"; the LDAP diagnostic string for it was not found, so none is shown.
    #[error(
        "userPrincipalName {0:?} is already in use: The operation failed because UPN value provided for addition/modification is not unique forest-wide."
    )]
    UpnInUse(String),
    /// The schema's rule for sAMAccountName; 0x523 = ERROR_INVALID_ACCOUNT_NAME. That a DC
    /// answers a bad character or a long name with this diagnostic is inferred (it was seen
    /// for a noPac-patched rename).
    #[error(
        "sAMAccountName {name:?} {why}: 00000523: SysErr: DSID-031A1256, problem 22 (Invalid argument), data 0"
    )]
    BadSam { name: String, why: &'static str },
}

/// The characters a sAMAccountName cannot hold (schema doc for sAMAccountName).
const SAM_FORBIDDEN: &str = "\"/\\[]:;|=,+*?<>";

/// Checks a sAMAccountName against AD's rules: at most 20 characters (SAM's limit for
/// earlier clients), none of `"/ \ [ ] : ; | = , + * ? < >`, not empty.
pub fn check_sam(name: &str) -> Result<(), AddRefused> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.chars().count() > 20 {
        Some("is longer than 20 characters")
    } else if name
        .chars()
        .any(|c| SAM_FORBIDDEN.contains(c) || c.is_control())
    {
        Some("contains a character AD does not allow (\" / \\ [ ] : ; | = , + * ? < >)")
    } else {
        None
    };
    match why {
        Some(why) => Err(AddRefused::BadSam {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// Checks that `seed` could be added beside `existing`: a valid sAMAccountName, unique
/// (case-insensitively, as AD compares), and a UPN not in use forest-wide.
pub fn check_new(existing: &[AccountSeed], seed: &AccountSeed) -> Result<(), AddRefused> {
    check_sam(&seed.sam_account_name)?;
    let upn = |s: &AccountSeed| {
        s.user_principal_name
            .clone()
            .unwrap_or_else(|| format!("{}@{LAB_DOMAIN}", s.sam_account_name))
    };
    let wanted_upn = upn(seed);
    for other in existing {
        if other.sam_account_name.to_lowercase() == seed.sam_account_name.to_lowercase() {
            return Err(AddRefused::SamInUse(seed.sam_account_name.clone()));
        }
        if upn(other).to_lowercase() == wanted_upn.to_lowercase() {
            return Err(AddRefused::UpnInUse(wanted_upn));
        }
    }
    Ok(())
}

/// Parses `--accounts-file` (one JSON object per line; blank lines and `#` comments skipped).
pub fn parse_accounts_file(text: &str) -> Result<Vec<AccountSeed>, String> {
    parse_accounts_file_beside(&[], text)
}

/// Parses `--accounts-file` for a directory that holds `existing` already (the `--accounts`
/// users): each line is refused as AD would refuse the add, naming the line.
pub fn parse_accounts_file_beside(
    existing: &[AccountSeed],
    text: &str,
) -> Result<Vec<AccountSeed>, String> {
    let mut all = existing.to_vec();
    let mut added = Vec::new();
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    for (i, line) in lines {
        let seed: AccountSeed =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        check_new(&all, &seed)
            .map_err(|e| format!("line {}: AD refuses the account: {e}", i + 1))?;
        all.push(seed.clone());
        added.push(seed);
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_file_takes_any_name_ad_allows() {
        let text = concat!(
            "# one account per line\n",
            r#"{"sam_account_name": "o'brien$", "recipient": "remote", "hidden": true}"#,
            "\n\n",
            r#"{"sam_account_name": "x`$(calc)", "disabled": true, "object_guid": "b1f0a2c3-d4e5-f607-1829-3a4b5c6d7e8f"}"#,
            "\n",
            r#"{"sam_account_name": "jürgen", "user_principal_name": "j@corp.example", "recipient": "onprem"}"#,
            "\n"
        );
        let seeds = parse_accounts_file(text).unwrap();
        assert_eq!(seeds.len(), 3);
        let a: Vec<LabAccount> = seeds.into_iter().map(LabAccount::from_seed).collect();
        assert_eq!(a[0].recipient, Recipient::Remote);
        assert_eq!(a[0].msExchHideFromAddressLists, Some(true));
        assert!(a[1].matches("b1f0a2c3-d4e5-f607-1829-3a4b5c6d7e8f"));
        assert!(a[1].matches("CORP\\x`$(calc)"));
        assert!(a[2].matches("j@corp.example") && a[2].matches("JÜRGEN"));
        assert_eq!(
            a[2].msExchRecipientTypeDetails,
            Some(RECIPIENT_TYPE_USER_MAILBOX)
        );
    }

    #[test]
    fn a_bad_accounts_file_line_is_named() {
        let err = parse_accounts_file("{\"sam_account_name\": \"a\"}\n{\"sam\": 1}\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn an_accounts_file_is_refused_where_ad_refuses_the_add() {
        let seeded = seeded(2);
        let refused = |line: &str| {
            parse_accounts_file_beside(
                &seeded,
                &format!("# c\n{{\"sam_account_name\": \"ok1\"}}\n{line}\n"),
            )
            .unwrap_err()
        };
        let dup = refused(r#"{"sam_account_name": "USER00001"}"#);
        assert_eq!(
            dup,
            "line 3: AD refuses the account: sAMAccountName \"USER00001\" is already in use: 00000524: UpdErr: DSID-031A11FA, problem 6005 (ENTRY_EXISTS), data 0"
        );
        let upn =
            refused(r#"{"sam_account_name": "other", "user_principal_name": "ok1@corp.example"}"#);
        assert!(
            upn.starts_with("line 3: ") && upn.contains("not unique forest-wide"),
            "{upn}"
        );
        for bad in [
            "a;b", "a:b", "a[1]", "a/b", "a=b", "a,b", "a+b", "a*b", "a?b", "a<b", "a|b",
        ] {
            let e = refused(&format!("{{\"sam_account_name\": {bad:?}}}"));
            assert!(
                e.starts_with("line 3: ") && e.contains("problem 22 (Invalid argument)"),
                "{bad}: {e}"
            );
        }
        let long = refused(r#"{"sam_account_name": "abcdefghijklmnopqrstu"}"#);
        assert!(long.contains("longer than 20 characters"), "{long}");
        // Twenty characters is still allowed, and so is a second file line with a new name.
        let ok = parse_accounts_file_beside(
            &seeded,
            "{\"sam_account_name\": \"abcdefghijklmnopqrst\"}\n",
        )
        .unwrap();
        assert_eq!(ok.len(), 1);
    }
}
