//! Modify requests: one account changed, all changes or none, with the attributes that
//! move together in AD (msExchRecipientTypeDetails and the recipient kind, targetAddress and
//! the routing address) kept together.

use ldap3_proto::proto::{
    LdapModifyRequest, LdapModifyType, LdapPartialAttribute, LdapResult, LdapResultCode,
};
use uuid::Uuid;

use super::result;
use crate::directory::{
    LabAccount, RECIPIENT_TYPE_REMOTE_USER_MAILBOX, RECIPIENT_TYPE_USER_MAILBOX, Recipient,
};
use crate::exchange::SharedState;

/// Applies a modify request to one account, all changes or none (as AD does).
pub(super) fn modify(req: &LdapModifyRequest, state: &SharedState) -> LdapResult {
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
    st.reindex(i);
    result(LdapResultCode::Success, "")
}

/// One change of a modify request, with its values as text.
struct Change<'a> {
    op: &'a LdapModifyType,
    attr: &'a str,
    values: Vec<String>,
}

impl Change<'_> {
    /// The one value of a single-valued attribute (`None`: deleted).
    fn single(&self) -> Result<Option<&str>, LdapResult> {
        match (self.op, self.values.as_slice()) {
            (LdapModifyType::Delete, _) => Ok(None),
            (_, [v]) => Ok(Some(v.as_str())),
            _ => Err(result(
                LdapResultCode::ConstraintViolation,
                &format!("{} is single-valued", self.attr),
            )),
        }
    }

    /// The value of a single-valued integer attribute.
    fn int(&self) -> Result<Option<i64>, LdapResult> {
        self.single()?
            .map(|s| {
                s.parse::<i64>().map_err(|_| {
                    result(
                        LdapResultCode::InvalidAttributeSyntax,
                        &format!("{} takes an integer", self.attr),
                    )
                })
            })
            .transpose()
    }

    fn owned(&self) -> Result<Option<String>, LdapResult> {
        Ok(self.single()?.map(str::to_owned))
    }
}

/// Applies one change to the account (a copy: `modify` keeps it only if every change applies).
fn apply(
    a: &mut LabAccount,
    op: &LdapModifyType,
    m: &LdapPartialAttribute,
) -> Result<(), LdapResult> {
    let c = Change {
        op,
        attr: &m.atype,
        values: m
            .vals
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect(),
    };
    match m.atype.to_lowercase().as_str() {
        "useraccountcontrol" => {
            let v = c.int()?.ok_or_else(|| {
                result(
                    LdapResultCode::UnwillingToPerform,
                    "userAccountControl cannot be removed",
                )
            })?;
            a.disabled = v & 0x2 != 0;
        }
        "msexchrecipienttypedetails" => set_recipient_type(a, c.int()?),
        "msexchremoterecipienttype" => a.msExchRemoteRecipientType = c.int()?,
        "msexchrecipientdisplaytype" => a.msExchRecipientDisplayType = c.int()?,
        "msexchhidefromaddresslists" => {
            a.msExchHideFromAddressLists = c.single()?.map(|v| v.eq_ignore_ascii_case("TRUE"));
            a.hidden = a.msExchHideFromAddressLists == Some(true);
        }
        "targetaddress" => {
            a.targetAddress = c.owned()?;
            a.remote_routing_address = a.targetAddress.as_deref().map(strip_smtp);
        }
        "mailnickname" => {
            a.mailNickname = c.owned()?;
            a.alias = a.mailNickname.clone();
        }
        "mail" => a.primary_smtp_address = c.owned()?,
        "userprincipalname" => a.user_principal_name = c.owned()?.unwrap_or_default(),
        "proxyaddresses" => change_proxy_addresses(a, c)?,
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

/// msExchRecipientTypeDetails decides what kind of recipient the account is.
fn set_recipient_type(a: &mut LabAccount, v: Option<i64>) {
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

/// proxyAddresses is multi-valued: replaced, added to, or values (or all) deleted.
fn change_proxy_addresses(a: &mut LabAccount, c: Change<'_>) -> Result<(), LdapResult> {
    match c.op {
        LdapModifyType::Replace => a.proxy_addresses = c.values,
        LdapModifyType::Add => a.proxy_addresses.extend(c.values),
        LdapModifyType::Delete if c.values.is_empty() => a.proxy_addresses.clear(),
        LdapModifyType::Delete => a
            .proxy_addresses
            .retain(|p| !c.values.iter().any(|v| v.eq_ignore_ascii_case(p))),
        LdapModifyType::Increment => {
            return Err(result(
                LdapResultCode::ConstraintViolation,
                "proxyAddresses cannot be incremented",
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
