//! `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant with a certificate, checked
//! as Microsoft documents it ("v2-oauth2-client-creds-grant-flow", "certificate-credentials")
//! and refused with its error shape (`error`, `error_description` "AADSTS…: text" followed by
//! the trace and correlation IDs and a timestamp, `error_codes`, `timestamp`, `trace_id`,
//! `correlation_id`, `error_uri`; "reference-error-codes").
//!
//! The AADSTS texts are Microsoft's: the error-code reference
//! (entra/identity-platform/reference-error-codes) unless a comment names another source.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::Digest;

use super::{IssuedToken, LAB_TENANT_ID, TOKEN_LIFETIME, Tenant};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The clock skew allowed on `nbf`/`exp`. Microsoft publishes none for client assertions;
/// this is Microsoft.IdentityModel's documented default (`TokenValidationParameters.
/// DefaultClockSkew`, 300 seconds), which Entra's validation is built on.
const CLOCK_SKEW: u64 = 300;

/// A refusal: HTTP status, OAuth `error`, AADSTS code and text.
struct Refusal(StatusCode, &'static str, u32, String);

fn refuse(status: StatusCode, error: &'static str, code: u32, text: impl Into<String>) -> Refusal {
    Refusal(status, error, code, text.into())
}

fn missing(name: &str) -> Refusal {
    refuse(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

pub(super) async fn token(
    Path(tenant_in_path): Path<String>,
    State(tenant): State<Tenant>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let url = format!(
        "https://{}/{tenant_in_path}/oauth2/v2.0/token",
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
    );
    match grant(&tenant, &tenant_in_path, &url, &body) {
        Ok(access_token) => Json(serde_json::json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME.as_secs(),
            "ext_expires_in": TOKEN_LIFETIME.as_secs(),
            "access_token": access_token,
        }))
        .into_response(),
        Err(r) => refusal_response(r),
    }
}

/// Every check of the request, in order; the token on success.
fn grant(tenant: &Tenant, tenant_in_path: &str, url: &str, body: &[u8]) -> Result<String, Refusal> {
    if !tenant_in_path.eq_ignore_ascii_case(LAB_TENANT_ID) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            "The tenant name wasn't found in the data store. Check to make sure you have the correct tenant ID.",
        ));
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| {
        form.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing(name))
    };
    let grant_type = field("grant_type")?;
    if grant_type != "client_credentials" {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app returned an unsupported grant type.",
        ));
    }
    let client_id = field("client_id")?;
    let scope = field("scope")?;
    if scope != GRAPH_DEFAULT_SCOPE {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            format!(
                "The provided value for the input parameter 'scope' isn't valid. The scope {scope} isn't valid."
            ),
        ));
    }
    let app = tenant
        .state
        .lock()
        .apps
        .iter()
        .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
        .cloned()
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                "The application wasn't found in the directory/tenant. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have misconfigured the identifier value for the application or sent your authentication request to the wrong tenant.",
            )
        })?;
    let Some(assertion) = form.get("client_assertion").filter(|v| !v.is_empty()) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    };
    if field("client_assertion_type")? != ASSERTION_TYPE {
        // No specific text is public for a wrong assertion type: the reference's generic
        // "InvalidRequestParameter" entry.
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90100,
            "The parameter is empty or not valid.",
        ));
    }
    let now = tenant_now(tenant);
    check_assertion(assertion, &app, url, now)?;
    Ok(issue(tenant, app.roles))
}

/// The assertion's signature, thumbprint and claims.
fn check_assertion(
    assertion: &str,
    app: &super::RegisteredApp,
    url: &str,
    now: u64,
) -> Result<(), Refusal> {
    let signature_failed = || {
        refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700027,
            "Client assertion failed signature validation.",
        )
    };
    // The reference's entry for 50027 (InvalidJwtToken), for the reason that applies.
    let malformed = || {
        refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            "Invalid JWT token. Token format isn't proper.",
        )
    };
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| malformed())?;
    // Microsoft documents PS256 (and RS256 with the older SHA-1 `x5t`): nothing else verifies.
    if !matches!(
        header.alg,
        jsonwebtoken::Algorithm::PS256 | jsonwebtoken::Algorithm::RS256
    ) {
        return Err(signature_failed());
    }
    let cert = app
        .certificates
        .iter()
        .find(|der| thumbprint_matches(&header, der))
        .ok_or_else(signature_failed)?;
    let claims = verified_claims(assertion, header.alg, cert).ok_or_else(signature_failed)?;
    check_claims(&claims, &app.client_id, url, now)
}

fn thumbprint_matches(header: &jsonwebtoken::Header, der: &[u8]) -> bool {
    let b64 = |d: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d);
    header.x5t_s256.as_deref() == Some(b64(&sha2::Sha256::digest(der)).as_str())
        || header.x5t.as_deref() == Some(b64(&sha1_smol(der)).as_str())
}

/// The signature checked with the certificate's key; the claims when it holds.
fn verified_claims(
    assertion: &str,
    alg: jsonwebtoken::Algorithm,
    cert_der: &[u8],
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let key = jsonwebtoken::DecodingKey::from_rsa_der(&cert.public_key().subject_public_key.data);
    let mut v = jsonwebtoken::Validation::new(alg);
    // The claims are checked below, each with its own AADSTS code.
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    jsonwebtoken::decode(assertion, &key, &v)
        .ok()
        .map(|d| d.claims)
}

fn check_claims(
    claims: &serde_json::Map<String, serde_json::Value>,
    client_id: &str,
    url: &str,
    now: u64,
) -> Result<(), Refusal> {
    let text = |k: &str| claims.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let (iss, sub) = (text("iss"), text("sub"));
    if iss != sub {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            50048,
            "Subject mismatches Issuer claim in the client assertion.",
        ));
    }
    if !iss.eq_ignore_ascii_case(client_id) {
        // Text: the Azure SDK for Java troubleshooting page (ClientAssertionCredential).
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    if text("aud") != url {
        // Code and text: the Azure SDK for Java troubleshooting page (ClientAssertionCredential);
        // the error-code reference lists 700023 for a scope error instead.
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700023,
            "Client assertion audience claim does not match Realm issuer.",
        ));
    }
    let time = |k: &str| claims.get(k).and_then(serde_json::Value::as_u64);
    let (Some(nbf), Some(exp)) = (time("nbf").or(time("iat")), time("exp")) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            "Invalid JWT token. Token format isn't proper.",
        ));
    };
    // Microsoft places no limit on the lifetime ("doesn't place restrictions on the exp time
    // currently"): only the window is checked, with the skew.
    if now + CLOCK_SKEW < nbf || now >= exp + CLOCK_SKEW {
        // Text: what the token endpoint answers (quoted in Azure/azure-cli#28708).
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .",
                iso(now),
                iso(nbf),
                iso(exp)
            ),
        ));
    }
    Ok(())
}

/// A fresh opaque token for the app's permissions.
fn issue(tenant: &Tenant, roles: Vec<String>) -> String {
    let token = format!("lab-graph-{}", uuid::Uuid::new_v4().simple());
    let mut st = tenant.state.lock();
    st.issued += 1;
    st.tokens.insert(
        token.clone(),
        IssuedToken {
            roles,
            expires: Instant::now() + TOKEN_LIFETIME,
        },
    );
    token
}

/// The tenant's clock, in Unix seconds.
fn tenant_now(tenant: &Tenant) -> u64 {
    let skew = tenant.state.lock().clock_skew;
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    host.saturating_add_signed(skew)
}

fn iso(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S.0000000Z").to_string())
        .unwrap_or_default()
}

fn refusal_response(Refusal(status, error, code, text): Refusal) -> Response {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let timestamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let body = serde_json::json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {text}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status, Json(body)).into_response()
}

/// SHA-1 for the older `x5t` header (RFC 7515 §4.1.7), which Microsoft still accepts.
fn sha1_smol(data: &[u8]) -> [u8; 20] {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    let mut out = [0u8; 20];
    out.copy_from_slice(digest.as_ref());
    out
}
