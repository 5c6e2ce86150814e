//! Search: the rootDSE anonymously, then (bound) the accounts a base and scope name, with
//! size limits and simple paged results (RFC 2696).

use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::{
    LdapMsg, LdapOp, LdapResult, LdapResultCode, LdapSearchRequest, LdapSearchScope,
};
use uuid::Uuid;

use super::entry::{entry, root_dse, select};
use super::filter::{matches, required_equality};
use super::{operations_error_unbound, reply, result};
use crate::directory::{LAB_BASE_DN, LabAccount};
use crate::exchange::{LabState, SharedState};

/// AD's answer to a base outside the domain.
const NO_SUCH_OBJECT: &str =
    "0000208D: NameErr: DSID-03100241, problem 2001 (NO_OBJECT), data 0, best match of:\n\t''\n";

fn done(id: i32, res: LdapResult, ctrl: Vec<LdapControl>) -> LdapMsg {
    LdapMsg {
        msgid: id,
        op: LdapOp::SearchResultDone(res),
        ctrl,
    }
}

/// Every reply to one search request: its entries, then the done message.
pub(super) fn search(
    id: i32,
    req: &LdapSearchRequest,
    ctrl: &[LdapControl],
    bound: bool,
    state: &SharedState,
) -> Vec<LdapMsg> {
    // The rootDSE is readable anonymously, as on AD.
    if req.base.is_empty() && req.scope == LdapSearchScope::Base {
        return search_root_dse(id, req);
    }
    if !bound {
        return vec![done(id, operations_error_unbound(), Vec::new())];
    }
    let st = state.lock();
    let candidates = match in_scope(req, &st) {
        Ok(c) => c,
        Err(res) => return vec![done(id, res, Vec::new())],
    };
    let paging = Paging::asked(ctrl);
    let mut out = Vec::new();
    let sent = match send_entries(id, req, &st, &candidates, paging.as_ref(), &mut out) {
        Sent::All(next) => next,
        Sent::SizeLimitExceeded => {
            out.push(done(
                id,
                result(LdapResultCode::SizeLimitExceeded, "Size limit exceeded"),
                Vec::new(),
            ));
            return out;
        }
    };
    let total = candidates.len();
    drop(st);
    let ctrl = paging.map_or_else(Vec::new, |_| vec![Paging::reply(sent, total)]);
    out.push(done(id, result(LdapResultCode::Success, ""), ctrl));
    out
}

fn search_root_dse(id: i32, req: &LdapSearchRequest) -> Vec<LdapMsg> {
    let entry = root_dse();
    let mut out = Vec::new();
    if matches(&req.filter, &entry) {
        out.push(reply(
            id,
            LdapOp::SearchResultEntry(select(&entry, &req.attrs, req.typesonly)),
        ));
    }
    out.push(done(id, result(LdapResultCode::Success, ""), Vec::new()));
    out
}

/// The accounts the request's base and scope cover (a `<GUID=…>` base names one), leaving
/// out those still replicating; or the error AD gives for the base.
fn in_scope<'a>(
    req: &LdapSearchRequest,
    st: &'a LabState,
) -> Result<Vec<&'a LabAccount>, LdapResult> {
    let visible = |a: &&LabAccount| !st.faults.lagging(&a.sam_account_name);
    let base = req.base.trim();
    if let Some(guid) = base
        .strip_prefix("<GUID=")
        .and_then(|r| r.strip_suffix('>'))
    {
        let g = Uuid::parse_str(guid.trim_matches(|c| c == '{' || c == '}'))
            .map_err(|_| result(LdapResultCode::InvalidDNSyntax, "malformed <GUID=…> base"))?;
        return Ok(st
            .index
            .guid(&st.accounts, g)
            .map(|i| &st.accounts[i])
            .into_iter()
            .filter(visible)
            .collect());
    }
    let base_lc = base.to_lowercase();
    let domain_lc = LAB_BASE_DN.to_lowercase();
    let users_lc = format!("cn=users,{domain_lc}");
    let in_domain = base_lc == domain_lc || base_lc.ends_with(&format!(",{domain_lc}"));
    if !in_domain {
        return Err(result(LdapResultCode::NoSuchObject, NO_SUCH_OBJECT));
    }
    let covers = |dn: &str| match req.scope {
        LdapSearchScope::Base => dn == base_lc,
        LdapSearchScope::OneLevel => base_lc == users_lc,
        LdapSearchScope::Subtree => base_lc == domain_lc || base_lc == users_lc || dn == base_lc,
        LdapSearchScope::Children => base_lc == domain_lc || base_lc == users_lc,
    };
    // Most searches name one account: its index entry is the only candidate.
    if let Some(sam) = required_equality(&req.filter, "sAMAccountName") {
        return Ok(st
            .index
            .sam(&st.accounts, sam)
            .map(|i| &st.accounts[i])
            .into_iter()
            .filter(visible)
            .filter(|a| covers(&a.distinguished_name.to_lowercase()))
            .collect());
    }
    Ok(st
        .accounts
        .iter()
        .filter(visible)
        .filter(|a| covers(&a.distinguished_name.to_lowercase()))
        .collect())
}

/// How sending the entries ended.
enum Sent {
    /// Every match (of this page) went out; the candidate index the next page starts at.
    All(usize),
    /// More matches than the request's size limit.
    SizeLimitExceeded,
}

/// Pushes the entries of `candidates` that match the filter onto `out`, one page of them
/// when the client pages.
fn send_entries(
    id: i32,
    req: &LdapSearchRequest,
    st: &LabState,
    candidates: &[&LabAccount],
    paging: Option<&Paging>,
    out: &mut Vec<LdapMsg>,
) -> Sent {
    let (start, page) = paging.map_or((0, usize::MAX), |p| (p.start, p.size));
    let limit = usize::try_from(req.sizelimit).unwrap_or(0);
    // Most searches name one account: skip the others without building their entries.
    let wanted_sam = required_equality(&req.filter, "sAMAccountName");
    let mut sent = 0usize;
    for (i, a) in candidates.iter().enumerate().skip(start) {
        if sent == page {
            return Sent::All(i);
        }
        if wanted_sam.is_some_and(|w| !w.eq_ignore_ascii_case(&a.sam_account_name)) {
            continue;
        }
        let e = entry(a, a.synced && !st.faults.unsynced(&a.sam_account_name));
        if !matches(&req.filter, &e) {
            continue;
        }
        if limit > 0 && sent == limit {
            return Sent::SizeLimitExceeded;
        }
        out.push(reply(
            id,
            LdapOp::SearchResultEntry(select(&e, &req.attrs, req.typesonly)),
        ));
        sent += 1;
    }
    Sent::All(candidates.len())
}

/// Simple paged results (RFC 2696): the cookie is the candidate index to resume from, so
/// paging through a large directory costs one pass, not one pass per page.
struct Paging {
    start: usize,
    size: usize,
}

impl Paging {
    /// The page the client's control asks for, if it sent one.
    fn asked(ctrl: &[LdapControl]) -> Option<Paging> {
        ctrl.iter().find_map(|c| match c {
            LdapControl::SimplePagedResults { size, cookie } => Some(Paging {
                start: std::str::from_utf8(cookie)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(0),
                size: usize::try_from(*size).unwrap_or(0).max(1),
            }),
            _ => None,
        })
    }

    /// The control on the done message: where the next page starts (empty: no more).
    fn reply(next: usize, total: usize) -> LdapControl {
        let cookie = if next < total {
            next.to_string().into_bytes()
        } else {
            Vec::new()
        };
        // The size estimate may count non-matching candidates; RFC 2696 allows that.
        LdapControl::SimplePagedResults {
            size: i64::try_from(total).unwrap_or(i64::MAX),
            cookie,
        }
    }
}
