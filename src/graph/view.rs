//! Graph's user and mailboxSettings answers, read into what mailboxd wants to know: is there
//! an Exchange Online mailbox, and if not, why. Pure functions over the bytes Graph sent (the
//! fuzz target `graph_response` runs them).
//!
//! Sources (Microsoft Graph v1.0 reference): `user` (`id`, `userPrincipalName`, `mail`,
//! `proxyAddresses`, `assignedLicenses`, `provisionedPlans`, `serviceProvisioningErrors`),
//! `provisionedPlan` (`service` "exchange", `provisioningStatus` "Success"/…, `capabilityStatus`),
//! `serviceProvisioningXmlError` (`errorDetail` XML, `isResolved`, `serviceInstance`,
//! `createdDateTime`), `mailboxSettings` (`userPurpose`).

use serde::Deserialize;

use crate::text_enum::text_enum;

/// The `$select` of the user read: exactly what the view needs.
pub const USER_SELECT: &str = "id,userPrincipalName,mail,proxyAddresses,provisionedPlans,serviceProvisioningErrors,assignedLicenses";

/// The most of one provisioning error's text kept (it ends up in outcomes and alerts).
const MAX_ERROR_TEXT: usize = 1000;

text_enum! {
    /// Where a user's Exchange Online mailbox stands, as Graph shows it.
    pub enum CloudMailboxState as "cloud mailbox state" {
        /// The mailbox exists (mailboxSettings answers).
        Exists = "exists",
        /// Licensed, Exchange's plan not yet provisioned: wait.
        Pending = "pending",
        /// Exchange's provisioning failed ("Setting up" in the admin centre): the errors say why.
        SettingUp = "setting_up",
        /// The user has no Exchange Online plan: assign a licence that includes Exchange.
        NoExchangeLicence = "no_exchange_licence",
        /// Graph does not know the user: directory sync has not carried it up (yet).
        NotSynced = "not_synced",
    }
}

text_enum! {
    /// `mailboxSettings.userPurpose`.
    pub enum MailboxPurpose as "mailbox purpose" {
        User = "user",
        Linked = "linked",
        Shared = "shared",
        Room = "room",
        Equipment = "equipment",
        Others = "others",
    }
}

/// What Graph says about one user's cloud mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudMailboxView {
    pub state: CloudMailboxState,
    /// The user as Graph has it (absent when not synced).
    pub user: Option<CloudUser>,
    /// Exchange's unresolved provisioning errors, their text (for `SettingUp`).
    pub provisioning_errors: Vec<String>,
    /// The mailbox's purpose, when it exists.
    pub purpose: Option<MailboxPurpose>,
}

/// The user's identity and addresses in the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudUser {
    pub id: String,
    pub user_principal_name: String,
    pub mail: Option<String>,
    pub proxy_addresses: Vec<String>,
    /// How many licences are assigned: with `NoExchangeLicence`, 0 means none at all, more
    /// means a licence whose Exchange Online plan is disabled.
    pub assigned_licences: usize,
}

/// The user resource, as much of it as `USER_SELECT` asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphUser {
    pub id: String,
    #[serde(default)]
    pub user_principal_name: String,
    pub mail: Option<String>,
    #[serde(default)]
    pub proxy_addresses: Vec<String>,
    #[serde(default)]
    pub provisioned_plans: Vec<ProvisionedPlan>,
    #[serde(default)]
    pub service_provisioning_errors: Vec<ServiceProvisioningError>,
    #[serde(default)]
    pub assigned_licenses: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionedPlan {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub provisioning_status: String,
    #[serde(default)]
    pub capability_status: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProvisioningError {
    #[serde(default)]
    pub error_detail: String,
    #[serde(default)]
    pub is_resolved: bool,
    #[serde(default)]
    pub service_instance: String,
}

/// What the mailboxSettings read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxAnswer {
    /// 200: the mailbox exists, with this purpose (when Graph named a known one).
    Exists(Option<MailboxPurpose>),
    /// `MailboxNotEnabledForRESTAPI`: no Exchange Online mailbox.
    None,
}

/// A user answer's body.
pub fn parse_user(body: &[u8]) -> Result<GraphUser, String> {
    serde_json::from_slice(body).map_err(|e| format!("not a Graph user: {e}"))
}

/// A mailboxSettings answer's body: the purpose, if it names one.
pub fn parse_mailbox_settings(body: &[u8]) -> Result<Option<MailboxPurpose>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Settings {
        user_purpose: Option<String>,
    }
    let s: Settings =
        serde_json::from_slice(body).map_err(|e| format!("not Graph mailboxSettings: {e}"))?;
    Ok(s.user_purpose.as_deref().and_then(MailboxPurpose::parse))
}

/// Exchange's plans and errors, with the mailbox read, into one state.
pub(crate) fn view(user: GraphUser, mailbox: MailboxAnswer) -> CloudMailboxView {
    let provisioning_errors = exchange_errors(&user);
    let exchange: Vec<&ProvisionedPlan> = user
        .provisioned_plans
        .iter()
        .filter(|p| p.service.eq_ignore_ascii_case("exchange"))
        .collect();
    let state = match mailbox {
        MailboxAnswer::Exists(_) => CloudMailboxState::Exists,
        MailboxAnswer::None if !provisioning_errors.is_empty() => CloudMailboxState::SettingUp,
        MailboxAnswer::None if exchange.iter().any(|p| p.provisioning_status == "Error") => {
            CloudMailboxState::SettingUp
        }
        MailboxAnswer::None if exchange.is_empty() => CloudMailboxState::NoExchangeLicence,
        MailboxAnswer::None => CloudMailboxState::Pending,
    };
    let purpose = match mailbox {
        MailboxAnswer::Exists(p) => p,
        MailboxAnswer::None => None,
    };
    CloudMailboxView {
        state,
        user: Some(CloudUser {
            id: user.id,
            user_principal_name: user.user_principal_name,
            mail: user.mail,
            proxy_addresses: user.proxy_addresses,
            assigned_licences: user.assigned_licenses.len(),
        }),
        provisioning_errors,
        purpose,
    }
}

/// The view of a user Graph does not know.
pub(super) fn not_synced() -> CloudMailboxView {
    CloudMailboxView {
        state: CloudMailboxState::NotSynced,
        user: None,
        provisioning_errors: Vec::new(),
        purpose: None,
    }
}

/// The unresolved errors of Exchange's service instances, as text.
fn exchange_errors(user: &GraphUser) -> Vec<String> {
    user.service_provisioning_errors
        .iter()
        .filter(|e| !e.is_resolved)
        .filter(|e| {
            e.service_instance
                .to_ascii_lowercase()
                .starts_with("exchange")
        })
        .map(|e| error_text(&e.error_detail))
        .collect()
}

/// The `ErrorDescription`s inside an `errorDetail` XML (whatever its namespace), joined; the
/// raw text when it holds none or is no XML. Never more than `MAX_ERROR_TEXT` characters.
pub fn error_text(detail: &str) -> String {
    let described = xml::parse(detail).ok().map(|root| {
        let mut found = Vec::new();
        let mut pending = vec![&root];
        while let Some(e) = pending.pop() {
            if e.name == "ErrorDescription" && !e.trimmed_text().is_empty() {
                found.push(e.trimmed_text().to_owned());
            }
            pending.extend(e.children.iter().rev());
        }
        found.join(" ")
    });
    let text = match described {
        Some(t) if !t.is_empty() => t,
        _ => detail.trim().to_owned(),
    };
    text.chars().take(MAX_ERROR_TEXT).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(plans: &[(&str, &str)], errors: &[&str]) -> GraphUser {
        let plans: Vec<_> = plans
            .iter()
            .map(|(s, st)| serde_json::json!({"service": s, "provisioningStatus": st, "capabilityStatus": "Enabled"}))
            .collect();
        let errors: Vec<_> = errors
            .iter()
            .map(|d| serde_json::json!({"errorDetail": d, "isResolved": false, "serviceInstance": "exchange/eurprd01-001-01"}))
            .collect();
        let body = serde_json::json!({"id": "1", "userPrincipalName": "a@corp.example",
            "provisionedPlans": plans, "serviceProvisioningErrors": errors});
        parse_user(body.to_string().as_bytes()).expect("a user")
    }

    #[test]
    fn the_states_follow_exchange_plan_errors_and_mailbox() {
        let exists = MailboxAnswer::Exists(Some(MailboxPurpose::User));
        let cases = [
            (
                user(&[("exchange", "Success")], &[]),
                exists,
                CloudMailboxState::Exists,
            ),
            (
                user(&[("exchange", "PendingInput")], &[]),
                MailboxAnswer::None,
                CloudMailboxState::Pending,
            ),
            (
                user(&[("exchange", "Error")], &[]),
                MailboxAnswer::None,
                CloudMailboxState::SettingUp,
            ),
            (
                user(&[("exchange", "Success")], &["<x/>"]),
                MailboxAnswer::None,
                CloudMailboxState::SettingUp,
            ),
            (
                user(&[("SharePoint", "Success")], &[]),
                MailboxAnswer::None,
                CloudMailboxState::NoExchangeLicence,
            ),
            (
                user(&[], &[]),
                MailboxAnswer::None,
                CloudMailboxState::NoExchangeLicence,
            ),
        ];
        for (u, answer, want) in cases {
            assert_eq!(view(u, answer).state, want);
        }
    }

    #[test]
    fn a_provisioning_error_reads_as_its_description() {
        let xml = r#"<ServiceInstance xmlns="http://schemas.microsoft.com/online/directoryservices/exchange/2011/01"><ObjectErrors><ErrorRecord><ErrorCode>ExB10BE9</ErrorCode><ErrorDescription>The proxy address "SMTP:a@corp.example" is already being used.</ErrorDescription></ErrorRecord></ObjectErrors></ServiceInstance>"#;
        assert_eq!(
            error_text(xml),
            r#"The proxy address "SMTP:a@corp.example" is already being used."#
        );
        assert_eq!(error_text("plain words"), "plain words");
        assert_eq!(error_text(&"x".repeat(5000)).len(), MAX_ERROR_TEXT);
    }
}
