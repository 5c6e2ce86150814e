//! The lab's domain controller, checked with an independent client (OpenLDAP's ldapsearch
//! and ldapmodify) and with mailboxd's own directory client.

use crate::common;

use std::process::Command;

use common::{LAB_PASSWORD, remote, seed, start_lab};
use lab::{self, Lab};
use mailboxd::directory::{Directory, Lookup, RecipientType};
use secrecy::SecretString;

async fn lab_with_accounts() -> Lab {
    let disabled = seed("gone01").disabled();
    let mut unsynced = seed("fresh01");
    unsynced.synced = false;
    start_lab(
        vec![
            seed("user00001"),
            seed("user00002"),
            seed("user00003"),
            disabled,
            unsynced,
            remote("remote01"),
            remote("hidden01").disabled().hidden(),
            seed("o'brien$"),
            seed("x)(y"),
        ],
        lab::Latency::default(),
        30,
    )
    .await
}

/// Runs an OpenLDAP tool against the lab, bound as the lab's user.
fn ldap_tool(tool: &str, lab: &Lab, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let url = lab.ldap_url().expect("the lab serves LDAP");
    let mut cmd = Command::new(tool);
    cmd.args([
        "-x",
        "-H",
        &url,
        "-D",
        "mailboxd@corp.example",
        "-w",
        LAB_PASSWORD,
    ])
    .args(args)
    .env("LDAPTLS_REQCERT", "demand");
    let out = if let Some(input) = stdin {
        use std::io::Write;
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool} (Debian ldap-utils) runs: {e}"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    } else {
        cmd.output()
            .unwrap_or_else(|e| panic!("{tool} (Debian ldap-utils) runs: {e}"))
    };
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn dns(output: &str) -> Vec<String> {
    let mut v: Vec<String> = output
        .lines()
        .filter_map(|l| l.strip_prefix("dn: "))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

fn search(lab: &Lab, filter: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["-LLL", "-b", "DC=corp,DC=example"];
    args.extend_from_slice(extra);
    args.push(filter);
    args.push("sAMAccountName");
    ldap_tool("ldapsearch", lab, &args, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldapsearch_reads_the_lab_like_active_directory() {
    let lab = lab_with_accounts().await;
    then_the_root_dse_answers_anonymously(&lab);
    then_one_account_reads_the_way_ad_shows_it(&lab);
    then_filters_select_as_ad_selects(&lab);
    then_scopes_size_limits_and_pages_work(&lab);
    then_a_wrong_password_is_refused_the_way_ad_refuses_it(&lab);
    lab.stop();
}

/// rootDSE, anonymously.
fn then_the_root_dse_answers_anonymously(lab: &Lab) {
    let url = lab.ldap_url().unwrap();
    let out = Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-H",
            &url,
            "-b",
            "",
            "-s",
            "base",
            "dnsHostName",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dnsHostName: lab-dc1.corp.example"), "{text}");
}

/// One account, the way AD shows it.
fn then_one_account_reads_the_way_ad_shows_it(lab: &Lab) {
    let (code, out) = ldap_tool(
        "ldapsearch",
        lab,
        &[
            "-LLL",
            "-b",
            "DC=corp,DC=example",
            "(sAMAccountName=remote01)",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dn: CN=remote01,CN=Users,DC=corp,DC=example"),
        "{out}"
    );
    assert!(
        out.contains("objectGUID:: "),
        "binary GUID as base64: {out}"
    );
    assert!(out.contains("userAccountControl: 512"), "{out}");
    assert!(
        out.contains("msExchRecipientTypeDetails: 2147483648"),
        "{out}"
    );
    assert!(
        out.contains("targetAddress: SMTP:remote01@tenant.mail.onmicrosoft.com"),
        "{out}"
    );
    assert!(out.contains("mS-DS-ConsistencyGuid:: "), "{out}");
}

/// Filters: presence, and/or/not, substring, AD's bitwise-AND matching rule; an escaped
/// filter value is a literal, never syntax.
fn then_filters_select_as_ad_selects(lab: &Lab) {
    let (_, out) = search(lab, "(msExchRecipientTypeDetails=*)", &[]);
    assert_eq!(
        dns(&out),
        vec![
            "CN=hidden01,CN=Users,DC=corp,DC=example",
            "CN=remote01,CN=Users,DC=corp,DC=example"
        ]
    );
    let (_, out) = search(lab, "(userAccountControl:1.2.840.113556.1.4.803:=2)", &[]);
    assert_eq!(
        dns(&out),
        vec![
            "CN=gone01,CN=Users,DC=corp,DC=example",
            "CN=hidden01,CN=Users,DC=corp,DC=example"
        ]
    );
    let (_, out) = search(
        lab,
        "(&(objectCategory=person)(sAMAccountName=user0000*)(!(sAMAccountName=*2)))",
        &[],
    );
    assert_eq!(dns(&out).len(), 2, "{out}");
    let (_, out) = search(
        lab,
        "(|(sAMAccountName=fresh01)(sAMAccountName=gone01))",
        &[],
    );
    assert_eq!(dns(&out).len(), 2, "{out}");
    let (_, out) = search(
        lab,
        "(&(objectClass=user)(!(mS-DS-ConsistencyGuid=*)))",
        &[],
    );
    assert_eq!(dns(&out), vec!["CN=fresh01,CN=Users,DC=corp,DC=example"]);
    // An escaped filter value is a literal, never syntax.
    let (_, out) = search(lab, r"(sAMAccountName=x\29\28y)", &[]);
    assert_eq!(dns(&out), vec![r"CN=x)(y,CN=Users,DC=corp,DC=example"]);
    let (_, out) = search(lab, r"(sAMAccountName=\2a)", &[]);
    assert!(dns(&out).is_empty(), "{out}");
}

/// Scopes; a size limit, and simple paged results bringing everything in pages of 2.
fn then_scopes_size_limits_and_pages_work(lab: &Lab) {
    let (_, out) = ldap_tool(
        "ldapsearch",
        lab,
        &[
            "-LLL",
            "-b",
            "CN=gone01,CN=Users,DC=corp,DC=example",
            "-s",
            "base",
            "(objectClass=*)",
            "cn",
        ],
        None,
    );
    assert_eq!(dns(&out), vec!["CN=gone01,CN=Users,DC=corp,DC=example"]);
    let (_, out) = ldap_tool(
        "ldapsearch",
        lab,
        &[
            "-LLL",
            "-b",
            "CN=Users,DC=corp,DC=example",
            "-s",
            "one",
            "(objectClass=user)",
            "cn",
        ],
        None,
    );
    assert_eq!(dns(&out).len(), 9, "{out}");

    // Size limit, and simple paged results bringing everything in pages of 2.
    let (code, out) = search(lab, "(objectClass=user)", &["-z", "3"]);
    assert_eq!(code, 4, "sizeLimitExceeded: {out}");
    assert_eq!(dns(&out).len(), 3);
    let (code, out) = search(lab, "(objectClass=user)", &["-E", "pr=2/noprompt"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(dns(&out).len(), 9, "{out}");
}

/// A wrong password is refused the way AD refuses it.
fn then_a_wrong_password_is_refused_the_way_ad_refuses_it(lab: &Lab) {
    let url = lab.ldap_url().unwrap();
    let out = Command::new("ldapsearch")
        .args([
            "-x",
            "-H",
            &url,
            "-D",
            "mailboxd@corp.example",
            "-w",
            "wrong",
            "-b",
            "",
            "-s",
            "base",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(49), "{text}");
    assert!(text.contains("data 52e"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldapmodify_changes_what_the_lab_shows() {
    let lab = lab_with_accounts().await;
    let ldif = "dn: CN=remote01,CN=Users,DC=corp,DC=example\nchangetype: modify\nreplace: msExchHideFromAddressLists\nmsExchHideFromAddressLists: TRUE\n-\nreplace: userAccountControl\nuserAccountControl: 514\n-\n";
    let (code, out) = ldap_tool("ldapmodify", &lab, &[], Some(ldif));
    assert_eq!(code, 0, "{out}");
    let a = lab.account("remote01").unwrap();
    assert!(a.hidden && a.disabled);

    // All or nothing: one bad change leaves the entry as it was.
    let bad = "dn: CN=user00001,CN=Users,DC=corp,DC=example\nchangetype: modify\nreplace: mailNickname\nmailNickname: u1\n-\nreplace: noSuchThing\nnoSuchThing: 1\n-\n";
    let (code, out) = ldap_tool("ldapmodify", &lab, &[], Some(bad));
    assert_ne!(code, 0, "{out}");
    let a = lab.account("user00001").unwrap();
    assert_eq!(a.mailNickname, None);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxds_directory_client_reads_the_lab() {
    let lab = lab_with_accounts().await;
    let cfg = mailboxd::tools::lab_setup::ldap_settings(
        &lab,
        lab::DEFAULT_USER,
        SecretString::from(LAB_PASSWORD),
    )
    .unwrap();
    let dir = Directory::from_config(&cfg).unwrap().unwrap();
    let st = dir
        .read(&Lookup::Sam("hidden01".into()), None)
        .await
        .unwrap();
    assert_eq!(st.domain_controller, "lab-dc1.corp.example");
    let a = st.account.unwrap();
    assert!(a.disabled && a.hidden && a.cloud_synced);
    assert_eq!(a.recipient, RecipientType::RemoteMailbox);
    let guid = a.object_guid.unwrap();
    let again = dir.read(&Lookup::Guid(guid), None).await.unwrap();
    assert_eq!(again.account.unwrap().sam_account_name, "hidden01");

    for name in ["o'brien$", "x)(y"] {
        let st = dir.read(&Lookup::Sam(name.into()), None).await.unwrap();
        assert_eq!(st.account.unwrap().sam_account_name, name);
    }
    let st = dir.read(&Lookup::Sam("*".into()), None).await.unwrap();
    assert_eq!(st.account, None);
    let st = dir
        .read(&Lookup::Sam("fresh01".into()), None)
        .await
        .unwrap();
    assert!(!st.account.unwrap().cloud_synced);
    lab.stop();
}
