//! The real Active Directory of the tests: the Samba AD DC that `deploy/dev/samba-ad.sh`
//! provisions (its `ad.env` says where). Users are written over LDAPS as an administrator
//! would, with the Exchange attributes Exchange itself writes.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};
use mailboxd::config;
use secrecy::SecretString;
use uuid::Uuid;

pub struct TestAd {
    pub host: String,
    pub name: String,
    pub base_dn: String,
    pub bind_dn: String,
    pub password: String,
    pub ca_file: PathBuf,
}

/// How a test user looks in AD.
#[derive(Debug, Clone, Default)]
pub struct User {
    pub disabled: bool,
    /// msExchRecipientTypeDetails: None, 2147483648 (remote), 1 (on-prem mailbox)…
    pub type_details: Option<i64>,
    pub hidden: bool,
    pub target_address: Option<String>,
    /// mS-DS-ConsistencyGuid stamped (Entra Connect picked it up).
    pub synced: bool,
    pub upn: Option<String>,
    pub description: Option<String>,
}

impl User {
    /// A user with an on-premises mailbox (msExchRecipientTypeDetails 1).
    pub fn onprem() -> User {
        User {
            type_details: Some(1),
            ..User::default()
        }
    }

    /// A user with a remote mailbox whose routing address is `target`.
    pub fn remote(target: &str) -> User {
        User {
            type_details: Some(2_147_483_648),
            target_address: Some(format!("SMTP:{target}")),
            ..User::default()
        }
    }
}

/// Whether a mailbox shows in the address lists (`msExchHideFromAddressLists`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressLists {
    Shown,
    Hidden,
}

/// A value of `ad.env`, which `deploy/dev/samba-ad.sh start` writes for the running test DC.
pub fn ad_env(key: &str) -> String {
    let dir =
        std::env::var("MAILBOXD_TEST_AD_DIR").unwrap_or_else(|_| "/var/tmp/mailboxd-ad".into());
    let env = std::fs::read_to_string(format!("{dir}/ad.env")).unwrap_or_else(|e| {
        panic!(
            "no test AD in {dir} ({e}): run `bash deploy/dev/samba-ad.sh start` (tests/run.sh does)"
        )
    });
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| {
            panic!("{key} missing from {dir}/ad.env: run `bash deploy/dev/samba-ad.sh start`")
        })
        .to_owned()
}

/// The test DC as a Kerberos KDC: the lab's SPN and keytab, and a client account.
pub struct TestKdc {
    pub kdc: String,
    pub spn: String,
    pub keytab: std::path::PathBuf,
    pub user: String,
    pub password: String,
}

impl TestKdc {
    pub fn get() -> TestKdc {
        TestKdc {
            kdc: ad_env("MAILBOXD_TEST_KRB_KDC"),
            spn: ad_env("MAILBOXD_TEST_KRB_SPN"),
            keytab: ad_env("MAILBOXD_TEST_KRB_KEYTAB").into(),
            user: ad_env("MAILBOXD_TEST_KRB_USER"),
            password: std::fs::read_to_string(ad_env("MAILBOXD_TEST_KRB_PASSWORD_FILE"))
                .expect("Kerberos client password file")
                .trim_end()
                .to_owned(),
        }
    }

    /// The lab's Kerberos acceptance: the SPN's key from the keytab, `allowed` accounts.
    pub fn lab(&self, allowed: &[&str]) -> lab::wsman::LabKerberos {
        let data = std::fs::read(&self.keytab).expect("keytab");
        let entries = winrm::acceptor::read_keytab(&data).expect("keytab parses");
        lab::wsman::LabKerberos {
            spn: self.spn.clone(),
            key: winrm::acceptor::service_key(&entries, &self.spn).expect("an AES key for the SPN"),
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            service_logon: None,
        }
    }
}

impl TestAd {
    /// Reads `ad.env` of the running test DC; panics with what to run when it is missing.
    pub fn get() -> TestAd {
        let get = ad_env;
        let password = std::fs::read_to_string(get("MAILBOXD_TEST_AD_PASSWORD_FILE"))
            .expect("admin password file")
            .trim_end()
            .to_owned();
        TestAd {
            host: get("MAILBOXD_TEST_AD_HOST"),
            name: get("MAILBOXD_TEST_AD_NAME"),
            base_dn: get("MAILBOXD_TEST_AD_BASE_DN"),
            bind_dn: get("MAILBOXD_TEST_AD_BIND_DN"),
            password,
            ca_file: get("MAILBOXD_TEST_AD_CA_FILE").into(),
        }
    }

    /// mailboxd's `[ldap]` settings for this DC over LDAPS.
    pub fn settings(&self) -> config::Ldap {
        config::Ldap {
            urls: vec![format!("ldaps://{}", self.host)],
            base_dn: self.base_dn.clone(),
            bind_dn: self.bind_dn.clone(),
            ca_file: Some(self.ca_file.clone()),
            password: Some(SecretString::from(self.password.clone())),
            timeout: Duration::from_secs(5),
            ..config::Ldap::default()
        }
    }

    async fn admin(&self) -> ldap3::Ldap {
        winrm::tls::install_provider();
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&self.ca_file).expect("CA file");
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.expect("PEM")).expect("CA cert");
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let settings = LdapConnSettings::new().set_config(Arc::new(tls));
        let (conn, mut ldap) =
            LdapConnAsync::with_settings(settings, &format!("ldaps://{}", self.host))
                .await
                .expect("LDAPS connect to the test DC");
        ldap3::drive!(conn);
        ldap.simple_bind(&self.bind_dn, &self.password)
            .await
            .and_then(|r| r.success())
            .expect("admin bind");
        ldap
    }

    /// Creates an organizational unit directly under the domain; returns its DN.
    pub async fn add_ou(&self, name: &str) -> String {
        let mut ldap = self.admin().await;
        let dn = format!("OU={name},{}", self.base_dn);
        ldap.add(
            &dn,
            vec![
                ("objectClass", HashSet::from(["top", "organizationalUnit"])),
                ("ou", HashSet::from([name])),
            ],
        )
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("add {dn}: {e}"));
        dn
    }

    /// Creates a user whose sAMAccountName is `sam` (any name AD allows) under CN=Users,
    /// with a plain CN made from `cn`; returns its DN and objectGUID.
    pub async fn add_user(&self, cn: &str, sam: &str, u: &User) -> (String, Uuid) {
        let users = format!("CN=Users,{}", self.base_dn);
        self.add_user_at(&users, cn, sam, u).await
    }

    /// A plain user under CN=Users (no Exchange attributes), or `false` when the DC refuses
    /// it (a constraint of the DC's, such as a unique userPrincipalName).
    pub async fn try_add_user(&self, cn: &str, sam: &str, u: &User) -> bool {
        let mut ldap = self.admin().await;
        let dn = format!("CN={cn},CN=Users,{}", self.base_dn);
        let uac = if u.disabled { "546" } else { "544" };
        let upn = u
            .upn
            .clone()
            .unwrap_or_else(|| format!("{sam}@corp.example"));
        let attrs: Vec<(&str, HashSet<&str>)> = vec![
            (
                "objectClass",
                HashSet::from(["top", "person", "organizationalPerson", "user"]),
            ),
            ("sAMAccountName", HashSet::from([sam])),
            ("userPrincipalName", HashSet::from([upn.as_str()])),
            ("userAccountControl", HashSet::from([uac])),
        ];
        ldap.add(&dn, attrs).await.and_then(|r| r.success()).is_ok()
    }

    /// `add_user` in the container `parent`.
    pub async fn add_user_at(&self, parent: &str, cn: &str, sam: &str, u: &User) -> (String, Uuid) {
        let mut ldap = self.admin().await;
        let dn = format!("CN={cn},{parent}");
        // 0x200 normal account + 0x20 no password required (test users have none).
        let uac = if u.disabled { 0x222 } else { 0x220 };
        let upn = u
            .upn
            .clone()
            .unwrap_or_else(|| format!("{cn}@corp.example"));
        let uac = uac.to_string();
        let attrs: Vec<(&str, HashSet<&str>)> = vec![
            (
                "objectClass",
                HashSet::from(["top", "person", "organizationalPerson", "user"]),
            ),
            ("sAMAccountName", HashSet::from([sam])),
            ("userPrincipalName", HashSet::from([upn.as_str()])),
            ("userAccountControl", HashSet::from([uac.as_str()])),
        ];
        ldap.add(&dn, attrs)
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("add {dn}: {e}"));
        let guid = self.guid(&mut ldap, &dn).await;
        let mut mods: Vec<Mod<String>> = Vec::new();
        let set = |k: &str, v: String| Mod::Replace(k.to_owned(), HashSet::from([v]));
        if let Some(t) = u.type_details {
            mods.push(set("msExchRecipientTypeDetails", t.to_string()));
            if t == 2_147_483_648 {
                mods.push(set("msExchRemoteRecipientType", "1".into()));
            }
        }
        if u.hidden {
            mods.push(set("msExchHideFromAddressLists", "TRUE".into()));
        }
        if let Some(t) = &u.target_address {
            mods.push(set("targetAddress", t.clone()));
        }
        if let Some(d) = &u.description {
            mods.push(set("description", d.clone()));
        }
        if !mods.is_empty() {
            ldap.modify(&dn, mods)
                .await
                .and_then(|r| r.success())
                .unwrap_or_else(|e| panic!("modify {dn}: {e}"));
        }
        if u.synced {
            self.stamp_synced(&dn, guid).await;
        }
        (dn, guid)
    }

    async fn guid(&self, ldap: &mut ldap3::Ldap, dn: &str) -> Uuid {
        let (entries, _) = ldap
            .search(dn, Scope::Base, "(objectClass=*)", vec!["objectGUID"])
            .await
            .and_then(|r| r.success())
            .expect("read back the new user");
        let e = SearchEntry::construct(entries.into_iter().next().expect("the user"));
        let raw = e
            .bin_attrs
            .get("objectGUID")
            .and_then(|v| v.first().cloned())
            .or_else(|| {
                e.attrs
                    .get("objectGUID")
                    .and_then(|v| v.first())
                    .map(|s| s.clone().into_bytes())
            })
            .expect("objectGUID");
        Uuid::from_bytes_le(raw.try_into().expect("16 bytes"))
    }

    /// What Entra Connect does first: writes the objectGUID into mS-DS-ConsistencyGuid.
    pub async fn stamp_synced(&self, dn: &str, guid: Uuid) {
        let mut ldap = self.admin().await;
        let v = guid.to_bytes_le().to_vec();
        ldap.modify(
            dn,
            vec![Mod::Replace(
                b"mS-DS-ConsistencyGuid".to_vec(),
                HashSet::from([v]),
            )],
        )
        .await
        .and_then(|r| r.success())
        .expect("stamp mS-DS-ConsistencyGuid");
    }

    /// Writes what Enable-RemoteMailbox writes on the account (and Disable-…'s hiding).
    pub async fn stamp_remote(&self, dn: &str, target: &str, lists: AddressLists) {
        let mut ldap = self.admin().await;
        let set = |k: &str, v: &str| Mod::Replace(k.to_owned(), HashSet::from([v.to_owned()]));
        let mut mods = vec![
            set("msExchRecipientTypeDetails", "2147483648"),
            set("msExchRemoteRecipientType", "1"),
            set("targetAddress", &format!("SMTP:{target}")),
        ];
        mods.push(set(
            "msExchHideFromAddressLists",
            match lists {
                AddressLists::Shown => "FALSE",
                AddressLists::Hidden => "TRUE",
            },
        ));
        ldap.modify(dn, mods)
            .await
            .and_then(|r| r.success())
            .expect("stamp Exchange attributes");
    }

    /// A service account holding `spn` with AES keys only (as samba-ad.sh makes the lab's):
    /// a user `sam` with `password`; returns its DN.
    pub async fn add_service_account(&self, sam: &str, password: &str, spn: &str) -> String {
        let (dn, _) = self.add_user(sam, sam, &User::onprem()).await;
        self.set_password(&dn, password).await;
        let mut ldap = self.admin().await;
        ldap.modify(
            &dn,
            vec![
                Mod::Replace("servicePrincipalName", HashSet::from([spn])),
                Mod::Replace("msDS-SupportedEncryptionTypes", HashSet::from(["24"])),
            ],
        )
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("SPN {spn} on {dn}: {e}"));
        dn
    }

    /// Creates a (global security) group under CN=Users; returns its DN.
    pub async fn add_group(&self, cn: &str) -> String {
        let mut ldap = self.admin().await;
        let dn = format!("CN={cn},CN=Users,{}", self.base_dn);
        ldap.add(
            &dn,
            vec![
                ("objectClass", HashSet::from(["top", "group"])),
                ("sAMAccountName", HashSet::from([cn])),
            ],
        )
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("add group {dn}: {e}"));
        dn
    }

    /// The group `cn` under CN=Users, made unless it exists (a domain-wide name several
    /// tests share, such as "Recipient Management EMT"); returns its DN.
    pub async fn ensure_group(&self, cn: &str) -> String {
        let mut ldap = self.admin().await;
        let dn = format!("CN={cn},CN=Users,{}", self.base_dn);
        let r = ldap
            .add(
                &dn,
                vec![
                    ("objectClass", HashSet::from(["top", "group"])),
                    ("sAMAccountName", HashSet::from([cn])),
                ],
            )
            .await
            .expect("add group");
        // 68 entryAlreadyExists: another test made it.
        assert!([0, 68].contains(&r.rc), "add group {dn}: {r:?}");
        dn
    }

    /// Adds `member` (a DN) to `group`.
    pub async fn add_member(&self, group: &str, member: &str) {
        let values = HashSet::from([member.to_owned()]);
        self.modify_member(group, Mod::Add("member".to_owned(), values))
            .await;
    }

    /// Takes `member` (a DN) out of `group`.
    pub async fn remove_member(&self, group: &str, member: &str) {
        let values = HashSet::from([member.to_owned()]);
        self.modify_member(group, Mod::Delete("member".to_owned(), values))
            .await;
    }

    async fn modify_member(&self, group: &str, m: Mod<String>) {
        let mut ldap = self.admin().await;
        ldap.modify(group, vec![m])
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("member of {group}: {e}"));
    }

    /// Sets a user's password as an administrator does (unicodePwd over LDAPS), not to be
    /// changed at the next logon.
    pub async fn set_password(&self, dn: &str, password: &str) {
        let mut ldap = self.admin().await;
        let quoted: Vec<u8> = format!("\"{password}\"")
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        ldap.modify(
            dn,
            vec![
                Mod::Replace(b"unicodePwd".to_vec(), HashSet::from([quoted])),
                Mod::Replace(b"pwdLastSet".to_vec(), HashSet::from([b"-1".to_vec()])),
            ],
        )
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("set the password of {dn}: {e}"));
    }

    /// Locks the account out the way AD does: a fine-grained password policy (PSO) with a
    /// lockout threshold of 2 applied to it, then two binds with a wrong password.
    pub async fn lock_out(&self, dn: &str, upn: &str) {
        self.lockout_policy(dn, 2).await;
        for _ in 0..2 {
            assert!(
                !self.can_bind(upn, "not-the-password").await,
                "a wrong password is refused"
            );
        }
    }

    /// Applies a fine-grained password policy (PSO) to `dn` that locks it out after
    /// `threshold` wrong passwords within 30 minutes, as a domain's policy would.
    pub async fn lockout_policy(&self, dn: &str, threshold: u32) {
        let mut ldap = self.admin().await;
        let cn = format!("pso-{}", Uuid::new_v4().simple());
        let pso = format!(
            "CN={cn},CN=Password Settings Container,CN=System,{}",
            self.base_dn
        );
        let threshold = threshold.to_string();
        let attrs: Vec<(&str, HashSet<&str>)> = vec![
            ("objectClass", HashSet::from(["msDS-PasswordSettings"])),
            ("msDS-PasswordSettingsPrecedence", HashSet::from(["1"])),
            (
                "msDS-PasswordReversibleEncryptionEnabled",
                HashSet::from(["FALSE"]),
            ),
            ("msDS-PasswordHistoryLength", HashSet::from(["0"])),
            ("msDS-PasswordComplexityEnabled", HashSet::from(["FALSE"])),
            ("msDS-MinimumPasswordLength", HashSet::from(["1"])),
            ("msDS-MinimumPasswordAge", HashSet::from(["0"])),
            (
                "msDS-MaximumPasswordAge",
                HashSet::from(["-36288000000000"]),
            ),
            ("msDS-LockoutThreshold", HashSet::from([threshold.as_str()])),
            (
                "msDS-LockoutObservationWindow",
                HashSet::from(["-18000000000"]),
            ),
            ("msDS-LockoutDuration", HashSet::from(["-18000000000"])),
            ("msDS-PSOAppliesTo", HashSet::from([dn])),
        ];
        ldap.add(&pso, attrs)
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("add {pso}: {e}"));
    }

    /// Whether a simple bind as `who` (a UPN or DN) with `password` succeeds: what the
    /// person's own workstation would find.
    pub async fn can_bind(&self, who: &str, password: &str) -> bool {
        let mut ldap = self.admin().await;
        let r = ldap
            .simple_bind(who, password)
            .await
            .expect("bind answered");
        r.rc == 0
    }

    /// One attribute of `dn` as the DC shows it now (`badPwdCount`, `lockoutTime`,
    /// `msDS-User-Account-Control-Computed`, …).
    pub async fn attribute(&self, dn: &str, name: &str) -> Option<String> {
        let mut ldap = self.admin().await;
        let (entries, _) = ldap
            .search(dn, Scope::Base, "(objectClass=*)", vec![name])
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("read {name} of {dn}: {e}"));
        let e = SearchEntry::construct(entries.into_iter().next()?);
        e.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first().cloned())
    }

    /// The account's badPwdCount on this DC: the bad passwords AD counts toward its lockout
    /// (a Kerberos pre-authentication failure counts like a failed bind).
    pub async fn bad_pwd_count(&self, dn: &str) -> u32 {
        let mut ldap = self.admin().await;
        let (entries, _) = ldap
            .search(
                dn,
                ldap3::Scope::Base,
                "(objectClass=*)",
                vec!["badPwdCount"],
            )
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("read badPwdCount of {dn}: {e}"));
        entries
            .into_iter()
            .next()
            .map(ldap3::SearchEntry::construct)
            .and_then(|e| e.attrs.get("badPwdCount").and_then(|v| v.first().cloned()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Sets the ACCOUNTDISABLE bit (546: a normal account, no password required, disabled).
    pub async fn disable(&self, dn: &str) {
        let mut ldap = self.admin().await;
        ldap.modify(
            dn,
            vec![Mod::Replace(
                "userAccountControl".to_owned(),
                HashSet::from(["546".to_owned()]),
            )],
        )
        .await
        .and_then(|r| r.success())
        .expect("set userAccountControl");
    }
}
