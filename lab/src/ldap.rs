//! The lab's domain controller: an LDAP server (ldap3_proto's codec) over the lab's
//! accounts, showing them the way Active Directory does — the attributes Exchange writes,
//! objectGUID as 16 raw bytes, userAccountControl, the cloud-sync attributes — so the real
//! directory client runs against it in demos and benchmarks. What Exchange does in the lab
//! is visible here at once, as it is on the DC that Exchange was told to use.
//!
//! Supported: simple bind, rootDSE, search (equality, presence, substring, >=, <=, and/or/not,
//! the bitwise-AND matching rule on userAccountControl) in base/one/sub scope under the
//! domain, `<GUID=…>` bases, size limits, simple paged results, modify. Plain LDAP only: the
//! client must be told so explicitly (`allow_plaintext`).

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use ldap3_proto::proto::{
    LdapBindCred, LdapFilter, LdapModifyRequest, LdapModifyType, LdapMsg, LdapOp,
    LdapPartialAttribute, LdapResult, LdapResultCode, LdapSearchRequest, LdapSearchResultEntry,
    LdapSearchScope,
};
use ldap3_proto::{LdapCodec, control::LdapControl};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use uuid::Uuid;

use super::directory::{
    LAB_BASE_DN, LAB_DOMAIN, LabAccount, RECIPIENT_TYPE_REMOTE_USER_MAILBOX,
    RECIPIENT_TYPE_USER_MAILBOX, Recipient,
};
use super::exchange::SharedState;

/// The lab DC's DNS name: what mailboxd passes to Exchange as -DomainController.
pub const LAB_DC: &str = "lab-dc1.corp.example";
const OBJECT_CATEGORY_PERSON: &str = "CN=Person,CN=Schema,CN=Configuration,DC=corp,DC=example";
/// AD's diagnostic text for a wrong password (the `data 52e` part is what clients read).
const INVALID_CREDENTIALS: &str =
    "80090308: LdapErr: DSID-0C090569, comment: AcceptSecurityContext error, data 52e, v4563";
const MATCH_BIT_AND: &str = "1.2.840.113556.1.4.803";
const MATCH_BIT_OR: &str = "1.2.840.113556.1.4.804";

/// Who may bind: the lab's one service account, by any of the names AD accepts for it.
pub struct LdapAuth {
    pub user: String,
    pub password: SecretString,
}

impl LdapAuth {
    fn accepts(&self, dn: &str, pw: &str) -> bool {
        let u = self.user.to_lowercase();
        let names = [
            u.clone(),
            format!("{u}@{LAB_DOMAIN}"),
            format!("corp\\{u}"),
            format!("cn={u},cn=users,{}", LAB_BASE_DN.to_lowercase()),
        ];
        names.contains(&dn.to_lowercase())
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                pw.as_bytes(),
                self.password.expose_secret().as_bytes(),
            ))
    }
}

/// Serves LDAP on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, state: SharedState, auth: Arc<LdapAuth>) {
    // The sessions live in this set, so they end with the listener's task (a stopped lab).
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        while sessions.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, _)) => {
                let state = state.clone();
                let auth = auth.clone();
                sessions.spawn(async move {
                    if let Err(e) = session(stream, state, auth).await {
                        tracing::debug!(error = %e, "lab LDAP connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "lab LDAP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn session(
    stream: TcpStream,
    state: SharedState,
    auth: Arc<LdapAuth>,
) -> std::io::Result<()> {
    let mut framed = Framed::new(stream, LdapCodec::default());
    let mut bound = false;
    while let Some(msg) = framed.next().await {
        let msg = msg?;
        let id = msg.msgid;
        let replies: Vec<LdapMsg> = match msg.op {
            LdapOp::BindRequest(req) => {
                let (code, text) = match (&req.cred, req.version) {
                    (_, v) if v != 3 => (LdapResultCode::ProtocolError, "LDAPv3 only".into()),
                    (LdapBindCred::Simple(pw), _) if req.dn.is_empty() && pw.is_empty() => {
                        bound = false;
                        (LdapResultCode::Success, String::new())
                    }
                    (LdapBindCred::Simple(pw), _) if auth.accepts(&req.dn, pw) => {
                        bound = true;
                        (LdapResultCode::Success, String::new())
                    }
                    (LdapBindCred::Simple(_), _) => {
                        bound = false;
                        (
                            LdapResultCode::InvalidCredentials,
                            INVALID_CREDENTIALS.to_owned(),
                        )
                    }
                    _ => (
                        LdapResultCode::AuthMethodNotSupported,
                        "the lab accepts simple binds only".into(),
                    ),
                };
                vec![reply(
                    id,
                    LdapOp::BindResponse(ldap3_proto::proto::LdapBindResponse {
                        res: result(code, &text),
                        saslcreds: None,
                    }),
                )]
            }
            LdapOp::UnbindRequest => return Ok(()),
            LdapOp::SearchRequest(req) => search(id, &req, &msg.ctrl, bound, &state),
            LdapOp::ModifyRequest(req) => {
                let res = if bound {
                    modify(&req, &state)
                } else {
                    operations_error_unbound()
                };
                vec![reply(id, LdapOp::ModifyResponse(res))]
            }
            LdapOp::AbandonRequest(_) => Vec::new(),
            LdapOp::ExtendedRequest(req) => vec![reply(
                id,
                LdapOp::ExtendedResponse(ldap3_proto::proto::LdapExtendedResponse {
                    res: result(
                        LdapResultCode::ProtocolError,
                        &format!("extended operation {} is not offered by the lab", req.name),
                    ),
                    name: None,
                    value: None,
                }),
            )],
            LdapOp::AddRequest(_) => vec![reply(
                id,
                LdapOp::AddResponse(result(
                    LdapResultCode::UnwillingToPerform,
                    "the lab's accounts come from --accounts/--accounts-file",
                )),
            )],
            LdapOp::DelRequest(_) => vec![reply(
                id,
                LdapOp::DelResponse(result(LdapResultCode::UnwillingToPerform, "not offered")),
            )],
            LdapOp::ModifyDNRequest(_) => vec![reply(
                id,
                LdapOp::ModifyDNResponse(result(LdapResultCode::UnwillingToPerform, "not offered")),
            )],
            LdapOp::CompareRequest(_) => vec![reply(
                id,
                LdapOp::CompareResult(result(LdapResultCode::UnwillingToPerform, "not offered")),
            )],
            _ => vec![reply(
                0,
                LdapOp::ExtendedResponse(ldap3_proto::proto::LdapExtendedResponse {
                    res: result(LdapResultCode::ProtocolError, "unexpected operation"),
                    name: Some("1.3.6.1.4.1.1466.20036".into()),
                    value: None,
                }),
            )],
        };
        for r in replies {
            framed.send(r).await?;
        }
    }
    Ok(())
}

fn reply(msgid: i32, op: LdapOp) -> LdapMsg {
    LdapMsg {
        msgid,
        op,
        ctrl: Vec::new(),
    }
}

fn result(code: LdapResultCode, message: &str) -> LdapResult {
    LdapResult {
        code,
        matcheddn: String::new(),
        message: message.to_owned(),
        referral: Vec::new(),
    }
}

/// AD's answer to an operation before a successful bind.
fn operations_error_unbound() -> LdapResult {
    result(
        LdapResultCode::OperationsError,
        "000004DC: LdapErr: DSID-0C090A5C, comment: In order to perform this operation a successful bind must be completed on the connection., data 0, v4563",
    )
}

fn done(id: i32, res: LdapResult, ctrl: Vec<LdapControl>) -> LdapMsg {
    LdapMsg {
        msgid: id,
        op: LdapOp::SearchResultDone(res),
        ctrl,
    }
}

fn search(
    id: i32,
    req: &LdapSearchRequest,
    ctrl: &[LdapControl],
    bound: bool,
    state: &SharedState,
) -> Vec<LdapMsg> {
    // The rootDSE is readable anonymously, as on AD.
    if req.base.is_empty() && req.scope == LdapSearchScope::Base {
        let entry = root_dse();
        let mut out = Vec::new();
        if matches(&req.filter, &entry) {
            out.push(reply(
                id,
                LdapOp::SearchResultEntry(select(&entry, &req.attrs, req.typesonly)),
            ));
        }
        out.push(done(id, result(LdapResultCode::Success, ""), Vec::new()));
        return out;
    }
    if !bound {
        return vec![done(id, operations_error_unbound(), Vec::new())];
    }
    let base = req.base.trim();
    let guid_base = base
        .strip_prefix("<GUID=")
        .and_then(|r| r.strip_suffix('>'))
        .map(|g| Uuid::parse_str(g.trim_matches(|c| c == '{' || c == '}')));
    let base_lc = base.to_lowercase();
    let domain_lc = LAB_BASE_DN.to_lowercase();
    let st = state.lock();
    // Which accounts are in scope.
    let candidates: Vec<&LabAccount> = match guid_base {
        Some(Ok(g)) => st
            .accounts
            .iter()
            .filter(|a| a.object_guid == g && !st.faults.lagging(&a.sam_account_name))
            .collect(),
        Some(Err(_)) => {
            return vec![done(
                id,
                result(LdapResultCode::InvalidDNSyntax, "malformed <GUID=…> base"),
                Vec::new(),
            )];
        }
        None => {
            let users_lc = format!("cn=users,{domain_lc}");
            let in_domain = base_lc == domain_lc || base_lc.ends_with(&format!(",{domain_lc}"));
            if !in_domain {
                return vec![done(
                    id,
                    LdapResult {
                        code: LdapResultCode::NoSuchObject,
                        matcheddn: String::new(),
                        message: "0000208D: NameErr: DSID-03100241, problem 2001 (NO_OBJECT), data 0, best match of:\n\t''\n".to_owned(),
                        referral: Vec::new(),
                    },
                    Vec::new(),
                )];
            }
            st.accounts
                .iter()
                .filter(|a| !st.faults.lagging(&a.sam_account_name))
                .filter(|a| {
                    let dn = a.distinguished_name.to_lowercase();
                    match req.scope {
                        LdapSearchScope::Base => dn == base_lc,
                        LdapSearchScope::OneLevel => base_lc == users_lc,
                        LdapSearchScope::Subtree => {
                            base_lc == domain_lc || base_lc == users_lc || dn == base_lc
                        }
                        LdapSearchScope::Children => base_lc == domain_lc || base_lc == users_lc,
                    }
                })
                .collect()
        }
    };
    // Simple paged results (RFC 2696): the cookie is the candidate index to resume from, so
    // paging through a large directory costs one pass, not one pass per page.
    let paged = ctrl.iter().find_map(|c| match c {
        LdapControl::SimplePagedResults { size, cookie } => Some((*size, cookie.clone())),
        _ => None,
    });
    let (start, page) = match &paged {
        Some((size, cookie)) => {
            let start = std::str::from_utf8(cookie)
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0);
            (start, usize::try_from(*size).unwrap_or(0).max(1))
        }
        None => (0, usize::MAX),
    };
    let limit = usize::try_from(req.sizelimit).unwrap_or(0);
    let mut out = Vec::new();
    let mut sent = 0usize;
    let mut next = candidates.len();
    // Most searches name one account: skip the others without building their entries.
    let wanted_sam = required_equality(&req.filter, "sAMAccountName");
    for (i, a) in candidates.iter().enumerate().skip(start) {
        if sent == page {
            next = i;
            break;
        }
        if wanted_sam.is_some_and(|w| !w.eq_ignore_ascii_case(&a.sam_account_name)) {
            continue;
        }
        let e = entry(a, a.synced && !st.faults.unsynced(&a.sam_account_name));
        if !matches(&req.filter, &e) {
            continue;
        }
        if limit > 0 && sent == limit {
            out.push(done(
                id,
                result(LdapResultCode::SizeLimitExceeded, "Size limit exceeded"),
                Vec::new(),
            ));
            return out;
        }
        out.push(reply(
            id,
            LdapOp::SearchResultEntry(select(&e, &req.attrs, req.typesonly)),
        ));
        sent += 1;
    }
    let total = candidates.len();
    drop(st);
    let ctrl = match paged {
        Some(_) => {
            let cookie = if next < total {
                next.to_string().into_bytes()
            } else {
                Vec::new()
            };
            // The size estimate may count non-matching candidates; RFC 2696 allows that.
            vec![LdapControl::SimplePagedResults {
                size: i64::try_from(total).unwrap_or(i64::MAX),
                cookie,
            }]
        }
        None => Vec::new(),
    };
    out.push(done(id, result(LdapResultCode::Success, ""), ctrl));
    out
}

/// An entry as attribute name → values (names as AD spells them).
struct Entry {
    dn: String,
    attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl Entry {
    fn get(&self, name: &str) -> Option<&Vec<Vec<u8>>> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

fn text(v: impl Into<String>) -> Vec<Vec<u8>> {
    vec![v.into().into_bytes()]
}

fn root_dse() -> Entry {
    Entry {
        dn: String::new(),
        attrs: vec![
            ("dnsHostName".into(), text(LAB_DC)),
            ("defaultNamingContext".into(), text(LAB_BASE_DN)),
            ("rootDomainNamingContext".into(), text(LAB_BASE_DN)),
            (
                "serverName".into(),
                text(format!(
                    "CN=LAB-DC1,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,{LAB_BASE_DN}"
                )),
            ),
            ("supportedLDAPVersion".into(), text("3")),
            ("isSynchronized".into(), text("TRUE")),
            ("objectClass".into(), text("top")),
        ],
    }
}

/// The account as a domain controller shows it.
fn entry(a: &LabAccount, synced: bool) -> Entry {
    let mut attrs: Vec<(String, Vec<Vec<u8>>)> = vec![
        (
            "objectClass".into(),
            ["top", "person", "organizationalPerson", "user"]
                .iter()
                .map(|c| c.as_bytes().to_vec())
                .collect(),
        ),
        ("objectCategory".into(), text(OBJECT_CATEGORY_PERSON)),
        ("cn".into(), text(a.sam_account_name.clone())),
        (
            "distinguishedName".into(),
            text(a.distinguished_name.clone()),
        ),
        ("sAMAccountName".into(), text(a.sam_account_name.clone())),
        (
            "userPrincipalName".into(),
            text(a.user_principal_name.clone()),
        ),
        (
            "objectGUID".into(),
            vec![a.object_guid.to_bytes_le().to_vec()],
        ),
        (
            "userAccountControl".into(),
            text(if a.disabled { "514" } else { "512" }),
        ),
    ];
    let mut opt = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            attrs.push((name.into(), text(v)));
        }
    };
    opt(
        "msExchRecipientTypeDetails",
        a.msExchRecipientTypeDetails.map(|v| v.to_string()),
    );
    opt(
        "msExchRemoteRecipientType",
        a.msExchRemoteRecipientType.map(|v| v.to_string()),
    );
    opt(
        "msExchRecipientDisplayType",
        a.msExchRecipientDisplayType.map(|v| v.to_string()),
    );
    opt(
        "msExchHideFromAddressLists",
        a.msExchHideFromAddressLists
            .map(|h| if h { "TRUE" } else { "FALSE" }.to_owned()),
    );
    opt("targetAddress", a.targetAddress.clone());
    opt("mailNickname", a.mailNickname.clone());
    opt("mail", a.primary_smtp_address.clone());
    if !a.proxy_addresses.is_empty() {
        attrs.push((
            "proxyAddresses".into(),
            a.proxy_addresses
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
        ));
    }
    if synced {
        // What Entra Connect writes: the source anchor, and (hybrid writeback) the cloud id.
        attrs.push((
            "mS-DS-ConsistencyGuid".into(),
            vec![a.object_guid.to_bytes_le().to_vec()],
        ));
        attrs.push((
            "msDS-ExternalDirectoryObjectId".into(),
            text(format!("User_{}", cloud_id(a.object_guid))),
        ));
    }
    Entry {
        dn: a.distinguished_name.clone(),
        attrs,
    }
}

/// A stable stand-in for the Entra object id of a synced account.
fn cloud_id(g: Uuid) -> Uuid {
    let mut b = *g.as_bytes();
    b.reverse();
    Uuid::from_bytes(b)
}

fn select(e: &Entry, wanted: &[String], types_only: bool) -> LdapSearchResultEntry {
    let all = wanted.is_empty() || wanted.iter().any(|w| w == "*");
    let none = wanted.len() == 1 && wanted[0] == "1.1";
    let attributes = e
        .attrs
        .iter()
        .filter(|(k, _)| !none && (all || wanted.iter().any(|w| w.eq_ignore_ascii_case(k))))
        .map(|(k, v)| LdapPartialAttribute {
            atype: k.clone(),
            vals: if types_only { Vec::new() } else { v.clone() },
        })
        .collect();
    LdapSearchResultEntry {
        dn: e.dn.clone(),
        attributes,
    }
}

/// The value `attr` must equal for `f` to match (an equality at the top or inside a
/// top-level AND), if the filter says so.
fn required_equality<'a>(f: &'a LdapFilter, attr: &str) -> Option<&'a str> {
    match f {
        LdapFilter::Equality(a, v) if a.eq_ignore_ascii_case(attr) => Some(v.as_str()),
        LdapFilter::And(fs) => fs.iter().find_map(|f| required_equality(f, attr)),
        _ => None,
    }
}

fn eq_value(attr: &str, have: &[u8], want: &str) -> bool {
    if attr.eq_ignore_ascii_case("objectCategory") {
        // AD expands `objectCategory=person` to the class's defaultObjectCategory DN.
        let h = String::from_utf8_lossy(have);
        return h.eq_ignore_ascii_case(want)
            || h.to_lowercase()
                .starts_with(&format!("cn={},", want.to_lowercase()));
    }
    match std::str::from_utf8(have) {
        // Directory strings compare case-insensitively in AD.
        Ok(h) => h.to_lowercase() == want.to_lowercase(),
        Err(_) => have == want.as_bytes(),
    }
}

fn matches(f: &LdapFilter, e: &Entry) -> bool {
    match f {
        LdapFilter::And(fs) => fs.iter().all(|f| matches(f, e)),
        LdapFilter::Or(fs) => fs.iter().any(|f| matches(f, e)),
        LdapFilter::Not(f) => !matches(f, e),
        LdapFilter::Present(a) => a.eq_ignore_ascii_case("objectClass") || e.get(a).is_some(),
        LdapFilter::Equality(a, v) | LdapFilter::Approx(a, v) => e
            .get(a)
            .is_some_and(|vals| vals.iter().any(|h| eq_value(a, h, v))),
        LdapFilter::Substring(a, sub) => e.get(a).is_some_and(|vals| {
            vals.iter().any(|h| {
                let h = String::from_utf8_lossy(h).to_lowercase();
                let mut rest = h.as_str();
                if let Some(init) = &sub.initial {
                    let Some(r) = rest.strip_prefix(&init.to_lowercase()) else {
                        return false;
                    };
                    rest = r;
                }
                for any in &sub.any {
                    let any = any.to_lowercase();
                    let Some(i) = rest.find(&any) else {
                        return false;
                    };
                    rest = &rest[i + any.len()..];
                }
                sub.final_
                    .as_ref()
                    .is_none_or(|f| rest.ends_with(&f.to_lowercase()))
            })
        }),
        LdapFilter::GreaterOrEqual(a, v) => compare(e, a, v, |o| o.is_ge()),
        LdapFilter::LessOrEqual(a, v) => compare(e, a, v, |o| o.is_le()),
        LdapFilter::Extensible(m) => {
            let (Some(rule), Some(a)) = (&m.matching_rule, &m.type_) else {
                return false;
            };
            let Ok(mask) = m.match_value.parse::<i64>() else {
                return false;
            };
            e.get(a).is_some_and(|vals| {
                vals.iter().any(|h| {
                    let v = String::from_utf8_lossy(h).parse::<i64>().unwrap_or(0);
                    match rule.as_str() {
                        MATCH_BIT_AND => v & mask == mask,
                        MATCH_BIT_OR => v & mask != 0,
                        _ => false,
                    }
                })
            })
        }
    }
}

fn compare(e: &Entry, a: &str, want: &str, ok: impl Fn(std::cmp::Ordering) -> bool) -> bool {
    e.get(a).is_some_and(|vals| {
        vals.iter().any(|h| {
            let h = String::from_utf8_lossy(h);
            match (h.parse::<i64>(), want.parse::<i64>()) {
                (Ok(x), Ok(y)) => ok(x.cmp(&y)),
                _ => ok(h.to_lowercase().as_str().cmp(want.to_lowercase().as_str())),
            }
        })
    })
}

/// Applies a modify request to one account, all changes or none (as AD does).
fn modify(req: &LdapModifyRequest, state: &SharedState) -> LdapResult {
    let mut st = state.lock();
    let dn = req.dn.to_lowercase();
    let guid = req
        .dn
        .strip_prefix("<GUID=")
        .and_then(|r| r.strip_suffix('>'))
        .and_then(|g| Uuid::parse_str(g).ok());
    let Some(i) = st.accounts.iter().position(|a| {
        (a.distinguished_name.to_lowercase() == dn || Some(a.object_guid) == guid)
            && !st.faults.lagging(&a.sam_account_name)
    }) else {
        return result(
            LdapResultCode::NoSuchObject,
            "0000208D: NameErr: DSID-0310028D, problem 2001 (NO_OBJECT), data 0",
        );
    };
    let mut a = st.accounts[i].clone();
    for change in &req.changes {
        if let Err(why) = apply(&mut a, &change.operation, &change.modification) {
            return why;
        }
    }
    st.accounts[i] = a;
    result(LdapResultCode::Success, "")
}

fn apply(
    a: &mut LabAccount,
    op: &LdapModifyType,
    m: &LdapPartialAttribute,
) -> Result<(), LdapResult> {
    let values: Vec<String> = m
        .vals
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let removing = matches!(op, LdapModifyType::Delete) && values.is_empty();
    let single = || -> Result<Option<&str>, LdapResult> {
        match (op, values.as_slice()) {
            (LdapModifyType::Delete, _) => Ok(None),
            (_, [v]) => Ok(Some(v.as_str())),
            _ => Err(result(
                LdapResultCode::ConstraintViolation,
                &format!("{} is single-valued", m.atype),
            )),
        }
    };
    let int = |v: Option<&str>| -> Result<Option<i64>, LdapResult> {
        v.map(|s| {
            s.parse::<i64>().map_err(|_| {
                result(
                    LdapResultCode::InvalidAttributeSyntax,
                    &format!("{} takes an integer", m.atype),
                )
            })
        })
        .transpose()
    };
    match m.atype.to_lowercase().as_str() {
        "useraccountcontrol" => {
            let v = int(single()?)?.ok_or_else(|| {
                result(
                    LdapResultCode::UnwillingToPerform,
                    "userAccountControl cannot be removed",
                )
            })?;
            a.disabled = v & 0x2 != 0;
        }
        "msexchrecipienttypedetails" => {
            let v = int(single()?)?;
            a.msExchRecipientTypeDetails = v;
            a.recipient = match v {
                Some(t) if t & 0xE_8000_0000 != 0 => Recipient::Remote,
                Some(RECIPIENT_TYPE_USER_MAILBOX) => Recipient::Onprem,
                _ => Recipient::None,
            };
            if v == Some(RECIPIENT_TYPE_REMOTE_USER_MAILBOX) && a.remote_routing_address.is_none() {
                a.remote_routing_address = a.targetAddress.as_deref().map(strip_smtp);
            }
        }
        "msexchremoterecipienttype" => a.msExchRemoteRecipientType = int(single()?)?,
        "msexchrecipientdisplaytype" => a.msExchRecipientDisplayType = int(single()?)?,
        "msexchhidefromaddresslists" => {
            let v = single()?;
            a.msExchHideFromAddressLists = v.map(|v| v.eq_ignore_ascii_case("TRUE"));
            a.hidden = a.msExchHideFromAddressLists == Some(true);
        }
        "targetaddress" => {
            a.targetAddress = single()?.map(str::to_owned);
            a.remote_routing_address = a.targetAddress.as_deref().map(strip_smtp);
        }
        "mailnickname" => {
            a.mailNickname = single()?.map(str::to_owned);
            a.alias = a.mailNickname.clone();
        }
        "mail" => a.primary_smtp_address = single()?.map(str::to_owned),
        "userprincipalname" => {
            a.user_principal_name = single()?.map(str::to_owned).unwrap_or_default();
        }
        "proxyaddresses" => match op {
            LdapModifyType::Replace => a.proxy_addresses = values,
            LdapModifyType::Add => a.proxy_addresses.extend(values),
            LdapModifyType::Delete if removing => a.proxy_addresses.clear(),
            LdapModifyType::Delete => a
                .proxy_addresses
                .retain(|p| !values.iter().any(|v| v.eq_ignore_ascii_case(p))),
            LdapModifyType::Increment => {
                return Err(result(
                    LdapResultCode::ConstraintViolation,
                    "proxyAddresses cannot be incremented",
                ));
            }
        },
        "ms-ds-consistencyguid" => a.synced = !matches!(op, LdapModifyType::Delete),
        _ => {
            return Err(result(
                LdapResultCode::UndefinedAttributeType,
                &format!(
                    "00000057: LdapErr: DSID-0C090D8A, comment: the lab does not model {}, data 0",
                    m.atype
                ),
            ));
        }
    }
    Ok(())
}

fn strip_smtp(t: &str) -> String {
    t.strip_prefix("SMTP:")
        .or_else(|| t.strip_prefix("smtp:"))
        .unwrap_or(t)
        .to_owned()
}
