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
//!
//! `search` finds and pages accounts, `entry` shows one as AD does, `filter` matches
//! RFC 4515 filters against it, `modify` changes it.

mod entry;
mod filter;
mod modify;
mod search;

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use ldap3_proto::LdapCodec;
use ldap3_proto::proto::{
    LdapBindCred, LdapBindRequest, LdapBindResponse, LdapExtendedResponse, LdapMsg, LdapOp,
    LdapResult, LdapResultCode,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use super::directory::{LAB_BASE_DN, LAB_DOMAIN};
use super::exchange::SharedState;

/// The lab DC's DNS name: what mailboxd passes to Exchange as -DomainController.
pub const LAB_DC: &str = "lab-dc1.corp.example";
/// AD's diagnostic text for a wrong password (the `data 52e` part is what clients read).
const INVALID_CREDENTIALS: &str =
    "80090308: LdapErr: DSID-0C090569, comment: AcceptSecurityContext error, data 52e, v4563";

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

/// One client connection: each request answered in turn until it unbinds or hangs up.
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
        let replies = match msg.op {
            LdapOp::BindRequest(req) => {
                let (res, now_bound) = bind(&req, &auth, bound);
                bound = now_bound;
                vec![reply(
                    id,
                    LdapOp::BindResponse(LdapBindResponse {
                        res,
                        saslcreds: None,
                    }),
                )]
            }
            LdapOp::UnbindRequest => return Ok(()),
            LdapOp::SearchRequest(req) => search::search(id, &req, &msg.ctrl, bound, &state),
            LdapOp::ModifyRequest(req) => {
                let res = if bound {
                    modify::modify(&req, &state)
                } else {
                    operations_error_unbound()
                };
                vec![reply(id, LdapOp::ModifyResponse(res))]
            }
            LdapOp::AbandonRequest(_) => Vec::new(),
            other => vec![refuse(id, other)],
        };
        for r in replies {
            framed.send(r).await?;
        }
    }
    Ok(())
}

/// A simple bind's result, and whether the connection is bound afterwards (an anonymous
/// bind unbinds; a failed one too, as on AD).
fn bind(req: &LdapBindRequest, auth: &LdapAuth, bound: bool) -> (LdapResult, bool) {
    match (&req.cred, req.version) {
        (_, v) if v != 3 => (result(LdapResultCode::ProtocolError, "LDAPv3 only"), bound),
        (LdapBindCred::Simple(pw), _) if req.dn.is_empty() && pw.is_empty() => {
            (result(LdapResultCode::Success, ""), false)
        }
        (LdapBindCred::Simple(pw), _) if auth.accepts(&req.dn, pw) => {
            (result(LdapResultCode::Success, ""), true)
        }
        (LdapBindCred::Simple(_), _) => (
            result(LdapResultCode::InvalidCredentials, INVALID_CREDENTIALS),
            false,
        ),
        _ => (
            result(
                LdapResultCode::AuthMethodNotSupported,
                "the lab accepts simple binds only",
            ),
            bound,
        ),
    }
}

/// The answer to an operation the lab does not offer.
fn refuse(id: i32, op: LdapOp) -> LdapMsg {
    let not_offered = || result(LdapResultCode::UnwillingToPerform, "not offered");
    match op {
        LdapOp::ExtendedRequest(req) => reply(
            id,
            LdapOp::ExtendedResponse(LdapExtendedResponse {
                res: result(
                    LdapResultCode::ProtocolError,
                    &format!("extended operation {} is not offered by the lab", req.name),
                ),
                name: None,
                value: None,
            }),
        ),
        LdapOp::AddRequest(_) => reply(
            id,
            LdapOp::AddResponse(result(
                LdapResultCode::UnwillingToPerform,
                "the lab's accounts come from --accounts/--accounts-file",
            )),
        ),
        LdapOp::DelRequest(_) => reply(id, LdapOp::DelResponse(not_offered())),
        LdapOp::ModifyDNRequest(_) => reply(id, LdapOp::ModifyDNResponse(not_offered())),
        LdapOp::CompareRequest(_) => reply(id, LdapOp::CompareResult(not_offered())),
        // A response where a request belongs: the notice of disconnection (RFC 4511 4.4.1).
        _ => reply(
            0,
            LdapOp::ExtendedResponse(LdapExtendedResponse {
                res: result(LdapResultCode::ProtocolError, "unexpected operation"),
                name: Some("1.3.6.1.4.1.1466.20036".into()),
                value: None,
            }),
        ),
    }
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
