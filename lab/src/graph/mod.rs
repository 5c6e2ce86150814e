//! The lab's Microsoft Graph stand-in, served on the lab's HTTPS listener: the Microsoft
//! identity platform's token endpoint for the client-credentials grant with a certificate
//! (`token`: every check Microsoft documents, refusals with its AADSTS codes and texts) and
//! the Graph user reads mailboxd makes (`users`: bearer token, `$select`, the documented error
//! shapes, throttling with `Retry-After`).
//!
//! Its users live in [`Tenant`], a plain in-memory store with setters: whatever models the
//! cloud (sync, licences, provisioning) writes into it; the stand-in only answers from it.

mod token;
mod users;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use parking_lot::Mutex;

/// The lab tenant's ID.
pub const LAB_TENANT_ID: &str = "5f1b7c3e-1ab0-4c1d-9e2f-0123456789ab";
/// The Graph permission of the user reads (application).
pub const USER_READ_ALL: &str = "User.Read.All";
/// The Graph permission of the mailboxSettings read (application).
pub const MAILBOX_SETTINGS_READ: &str = "MailboxSettings.Read";
/// How long an issued token lasts (Microsoft's answer says 3599 s).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

/// One user as Graph would show it. `id` is the Entra object ID.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GraphUser {
    pub id: String,
    pub user_principal_name: String,
    pub mail: Option<String>,
    pub proxy_addresses: Vec<String>,
    /// SKU IDs of the licences assigned.
    pub licences: Vec<String>,
    /// The `provisioningStatus` of the user's `exchange` plan (`Success`, `PendingInput`,
    /// `Error`, …); `None`: no Exchange plan (no licence with Exchange in it).
    pub exchange_plan: Option<String>,
    /// Exchange's unresolved provisioning error ("Setting up"), its description.
    pub provisioning_error: Option<String>,
    /// The mailbox's `userPurpose` (`user`, `shared`, `room`, …); `None`: no cloud mailbox.
    pub mailbox: Option<String>,
}

/// An app registration: its client ID, the certificates uploaded to it (DER), and the
/// application permissions consented.
#[derive(Debug, Clone)]
pub struct RegisteredApp {
    pub client_id: String,
    pub certificates: Vec<Vec<u8>>,
    pub roles: Vec<String>,
}

/// A Graph call the stand-in answered: what was asked and the status it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphCall {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
}

struct IssuedToken {
    roles: Vec<String>,
    expires: Instant,
}

#[derive(Default)]
struct TenantState {
    apps: Vec<RegisteredApp>,
    users: BTreeMap<String, GraphUser>,
    tokens: HashMap<String, IssuedToken>,
    issued: usize,
    /// Seconds the tenant's clock is ahead of this host's (negative: behind).
    clock_skew: i64,
    /// Graph reads still to refuse with 429, and the wait they state.
    throttle: Option<(u32, Duration)>,
    calls: Vec<GraphCall>,
}

/// The lab tenant: apps, users, issued tokens. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Tenant {
    state: Arc<Mutex<TenantState>>,
}

impl Tenant {
    pub fn tenant_id(&self) -> &'static str {
        LAB_TENANT_ID
    }

    /// Registers an app with one certificate (DER) and its consented application permissions;
    /// registering the same client ID again adds the certificate and replaces the permissions.
    pub fn register_app(&self, client_id: &str, certificate_der: &[u8], roles: &[&str]) {
        let mut st = self.state.lock();
        let roles = roles.iter().map(|r| (*r).to_owned()).collect();
        match st.apps.iter_mut().find(|a| a.client_id == client_id) {
            Some(app) => {
                app.certificates.push(certificate_der.to_vec());
                app.roles = roles;
            }
            None => st.apps.push(RegisteredApp {
                client_id: client_id.to_owned(),
                certificates: vec![certificate_der.to_vec()],
                roles,
            }),
        }
    }

    /// Adds or replaces a user (by object ID).
    pub fn set_user(&self, user: GraphUser) {
        self.state
            .lock()
            .users
            .insert(user.id.to_ascii_lowercase(), user);
    }

    /// Removes a user: Graph answers 404 for it.
    pub fn remove_user(&self, id: &str) {
        self.state.lock().users.remove(&id.to_ascii_lowercase());
    }

    /// One user as it stands, by object ID.
    pub fn user(&self, id: &str) -> Option<GraphUser> {
        self.state
            .lock()
            .users
            .get(&id.to_ascii_lowercase())
            .cloned()
    }

    /// Changes one user in place (nothing when it does not exist): the other setters' base.
    pub fn update_user(&self, id: &str, change: impl FnOnce(&mut GraphUser)) {
        if let Some(u) = self.state.lock().users.get_mut(&id.to_ascii_lowercase()) {
            change(u);
        }
    }

    /// Assigns (or removes) an Exchange licence: the SKU and the exchange plan's status.
    pub fn set_licence(&self, id: &str, sku: Option<&str>, exchange_plan: Option<&str>) {
        self.update_user(id, |u| {
            u.licences = sku.map(|s| vec![s.to_owned()]).unwrap_or_default();
            u.exchange_plan = exchange_plan.map(str::to_owned);
        });
    }

    /// Sets (or clears) Exchange's provisioning error: the mailbox stays "Setting up".
    pub fn set_provisioning_error(&self, id: &str, description: Option<&str>) {
        self.update_user(id, |u| {
            u.provisioning_error = description.map(str::to_owned)
        });
    }

    /// Creates (with its `userPurpose`) or removes the user's cloud mailbox.
    pub fn set_mailbox(&self, id: &str, purpose: Option<&str>) {
        self.update_user(id, |u| u.mailbox = purpose.map(str::to_owned));
    }

    /// The tenant's clock runs `seconds` ahead of this host's (negative: behind), as a host
    /// with a wrong clock sees Microsoft's.
    pub fn set_clock_skew(&self, seconds: i64) {
        self.state.lock().clock_skew = seconds;
    }

    /// The next `requests` Graph reads are throttled: 429 with `Retry-After: wait`.
    pub fn throttle(&self, requests: u32, wait: Duration) {
        self.state.lock().throttle = Some((requests, wait));
    }

    /// Revokes every token issued so far (as an administrator revoking the app's sessions):
    /// Graph answers 401 to them.
    pub fn revoke_tokens(&self) {
        self.state.lock().tokens.clear();
    }

    /// Every Graph read answered so far (the token endpoint not included), in order.
    pub fn calls(&self) -> Vec<GraphCall> {
        self.state.lock().calls.clone()
    }

    /// Tokens issued so far (revoked ones included).
    pub fn tokens_issued(&self) -> usize {
        self.state.lock().issued
    }
}

/// The stand-in's routes, on whatever listener the lab serves them.
pub(crate) fn routes(tenant: Tenant) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token::token))
        .route("/v1.0/users", get(users::list))
        .route("/v1.0/users/{id}", get(users::user))
        .route(
            "/v1.0/users/{id}/mailboxSettings",
            get(users::mailbox_settings),
        )
        .with_state(tenant)
}

/// An app's certificate and private key, made for tests and the demo: RSA 2048 (Microsoft's
/// assertions are PS256; ring cannot generate RSA keys, the `rsa` crate does).
pub struct AppCertificate {
    pub certificate_der: Vec<u8>,
    pub certificate_pem: String,
    /// PKCS#8 PEM.
    pub private_key_pem: secrecy::SecretString,
}

impl AppCertificate {
    /// A fresh self-signed certificate `CN=<name>` (takes a moment: RSA key generation).
    pub fn generate(name: &str) -> Result<AppCertificate, String> {
        use rand_rsa::SeedableRng;
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let fail = |e: &dyn std::fmt::Display| format!("app certificate: {e}");
        let mut rng = rand_rsa::rngs::StdRng::try_from_rng(&mut rand_rsa::rngs::SysRng)
            .map_err(|e| fail(&e))?;
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| fail(&e))?;
        let pkcs8 = key.to_pkcs8_der().map_err(|e| fail(&e))?;
        let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| fail(&e))?;
        let pair = rcgen::KeyPair::try_from(pkcs8.as_bytes()).map_err(|e| fail(&e))?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(&e))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.to_owned());
        let cert = params.self_signed(&pair).map_err(|e| fail(&e))?;
        Ok(AppCertificate {
            certificate_der: cert.der().to_vec(),
            certificate_pem: cert.pem(),
            private_key_pem: pem.to_string().into(),
        })
    }
}
