//! The Graph reads mailboxd makes, answered from the [`Tenant`] store with Graph's shapes:
//! `GET /v1.0/users` (`$top`, `$select`), `GET /v1.0/users/{id | upn}` (`$select`) and
//! `GET /v1.0/users/{id | upn}/mailboxSettings`. Each needs a bearer token the token endpoint
//! issued and the application permission the read needs; errors are Graph's error resource
//! (`{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}`).

use std::collections::HashMap;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{GraphCall, GraphUser, MAILBOX_SETTINGS_READ, Tenant, USER_READ_ALL};

const GRAPH: &str = "https://graph.microsoft.com/v1.0";
/// Any of these grants the user reads (Graph's permissions reference for "Get user").
const USER_ROLES: &[&str] = &[USER_READ_ALL, "User.ReadWrite.All", "Directory.Read.All"];
/// Any of these grants the mailboxSettings read ("Get mailboxSettings").
const MAILBOX_ROLES: &[&str] = &[MAILBOX_SETTINGS_READ, "MailboxSettings.ReadWrite"];

type Params = Query<HashMap<String, String>>;
/// A refusal, boxed: a `Response` is large.
type Refused = Box<Response>;

fn boxed(r: Response) -> Refused {
    Box::new(r)
}

pub(super) async fn list(
    State(tenant): State<Tenant>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let answer = authorize(&tenant, &headers, USER_ROLES).map(|()| {
        let top = q
            .get("$top")
            .and_then(|t| t.parse().ok())
            .unwrap_or(100usize);
        let st = tenant.state.lock();
        let value: Vec<Value> = st
            .users
            .values()
            .take(top)
            .map(|u| select(user_json(u), q.get("$select")))
            .collect();
        Json(json!({"@odata.context": format!("{GRAPH}/$metadata#users"), "value": value}))
            .into_response()
    });
    record(&tenant, "/v1.0/users".into(), answer)
}

pub(super) async fn user(
    State(tenant): State<Tenant>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let answer = authorize(&tenant, &headers, USER_ROLES).and_then(|()| {
        let u = find(&tenant, &id).ok_or_else(|| boxed(not_found(&id)))?;
        let mut body = select(user_json(&u), q.get("$select"));
        body["@odata.context"] = json!(format!("{GRAPH}/$metadata#users/$entity"));
        Ok(Json(body).into_response())
    });
    record(&tenant, format!("/v1.0/users/{id}"), answer)
}

pub(super) async fn mailbox_settings(
    State(tenant): State<Tenant>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let answer = authorize(&tenant, &headers, MAILBOX_ROLES).and_then(|()| {
        // Exchange answers for the mailbox: an unknown user is its ErrorInvalidUser (the
        // text as Graph returns it to practitioners; Microsoft's reference lists no text).
        let u = find(&tenant, &id).ok_or_else(|| {
            boxed(error(
                StatusCode::NOT_FOUND,
                "ErrorInvalidUser",
                &format!("The requested user '{id}' is invalid."),
            ))
        })?;
        let Some(purpose) = u.mailbox else {
            // The code is Graph's; the text is what it says with it (widely quoted; not in
            // Microsoft's reference).
            return Err(boxed(error(
                StatusCode::NOT_FOUND,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )));
        };
        Ok(Json(json!({
            "@odata.context": format!("{GRAPH}/$metadata#users('{}')/mailboxSettings", u.id),
            "archiveFolder": "",
            "timeZone": "UTC",
            "dateFormat": "M/d/yyyy",
            "timeFormat": "h:mm tt",
            "userPurpose": purpose,
            "delegateMeetingMessageDeliveryOptions": "sendToDelegateOnly",
            "language": {"locale": "en-US", "displayName": "English (United States)"},
        }))
        .into_response())
    });
    record(&tenant, format!("/v1.0/users/{id}/mailboxSettings"), answer)
}

/// The bearer token (issued, unexpired), one of `roles` in it, and the throttle.
fn authorize(tenant: &Tenant, headers: &HeaderMap, roles: &[&str]) -> Result<(), Refused> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty());
    let mut st = tenant.state.lock();
    let Some(token) = bearer else {
        return Err(boxed(error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        )));
    };
    let Some(issued) = st.tokens.get(token) else {
        // The message Graph gives a token it cannot validate (as practitioners quote it).
        return Err(boxed(error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure.",
        )));
    };
    if Instant::now() >= issued.expires {
        return Err(boxed(error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Lifetime validation failed, the token is expired.",
        )));
    }
    if !issued.roles.iter().any(|r| roles.contains(&r.as_str())) {
        return Err(boxed(if roles == MAILBOX_ROLES {
            error(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            )
        } else {
            error(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        }));
    }
    if let Some((left, wait)) = st.throttle.as_mut() {
        let wait = *wait;
        *left -= 1;
        if *left == 0 {
            st.throttle = None;
        }
        return Err(boxed(throttled(wait)));
    }
    Ok(())
}

/// 429 as Graph's throttling guidance shows it: `Retry-After` in seconds, `TooManyRequests`.
fn throttled(wait: std::time::Duration) -> Response {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "Please retry again later.",
    );
    let secs = format!("{:.3}", wait.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&secs) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// A user by object ID or UPN (both compared as Entra does, without case).
fn find(tenant: &Tenant, key: &str) -> Option<GraphUser> {
    let st = tenant.state.lock();
    st.users
        .get(&key.to_ascii_lowercase())
        .cloned()
        .or_else(|| {
            st.users
                .values()
                .find(|u| u.user_principal_name.eq_ignore_ascii_case(key))
                .cloned()
        })
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// The user resource with the properties mailboxd selects.
fn user_json(u: &GraphUser) -> Value {
    let plans: Vec<Value> = u
        .exchange_plan
        .iter()
        .map(|status| json!({"capabilityStatus": "Enabled", "provisioningStatus": status, "service": "exchange"}))
        .collect();
    let errors: Vec<Value> = u
        .provisioning_error
        .iter()
        .map(|d| {
            json!({
                "@odata.type": "#microsoft.graph.serviceProvisioningXmlError",
                "createdDateTime": chrono::Utc::now().to_rfc3339(),
                "isResolved": false,
                "serviceInstance": "exchange/lab-001-01",
                "errorDetail": error_detail(d),
            })
        })
        .collect();
    let licences: Vec<Value> = u
        .licences
        .iter()
        .map(|sku| json!({"disabledPlans": [], "skuId": sku}))
        .collect();
    json!({
        "id": u.id,
        "userPrincipalName": u.user_principal_name,
        "mail": u.mail,
        "proxyAddresses": u.proxy_addresses,
        "assignedLicenses": licences,
        "provisionedPlans": plans,
        "serviceProvisioningErrors": errors,
    })
}

/// `errorDetail` as Exchange writes it. Graph documents the property only as XML; this is the
/// shape administrators print from a user's provisioning errors (ErrorRecord/ErrorDescription).
fn error_detail(description: &str) -> String {
    let escaped = description
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<ServiceInstance xmlns=\"http://schemas.microsoft.com/online/directoryservices/exchange/2011/01\"><ObjectErrors><ErrorRecord><ErrorCode>ExB10BE9</ErrorCode><ErrorDescription>{escaped}</ErrorDescription></ErrorRecord></ObjectErrors></ServiceInstance>"
    )
}

/// Only the `$select`ed properties (all when there is none), `id` always.
fn select(full: Value, selected: Option<&String>) -> Value {
    let (Some(sel), Value::Object(map)) = (selected, &full) else {
        return full;
    };
    let wanted: Vec<&str> = sel.split(',').map(str::trim).collect();
    let kept = map
        .iter()
        .filter(|(k, _)| *k == "id" || wanted.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(kept)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"error": {"code": code, "message": message, "innerError": {
        "date": now, "request-id": id, "client-request-id": id}}});
    (status, Json(body)).into_response()
}

fn record(tenant: &Tenant, path: String, answer: Result<Response, Refused>) -> Response {
    let r = answer.unwrap_or_else(|e| *e);
    tenant.state.lock().calls.push(GraphCall {
        method: "GET",
        path,
        status: r.status().as_u16(),
    });
    r
}
