//! What every request on the admin listener passes through, before and after its handler:
//! the client's address (the peer, or `X-Forwarded-For` from a trusted proxy), a refusal
//! of state-changing requests another site's page sent (checked on `Sec-Fetch-Site`, then
//! `Origin`, as Go's `CrossOriginProtection`), the security headers of every answer, and a
//! log line for every 401 and 403.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

/// The client a request came from, as the guard worked it out (handlers read it from the
/// request's extensions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub IpAddr);

/// Why a handler refused a request (a response extension): the guard's log line says it.
#[derive(Debug, Clone)]
pub(crate) struct RefusedBecause(pub String);

/// What the guard needs to know about the listener.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub trusted_proxies: Arc<Vec<IpNet>>,
    /// The listener serves HTTPS itself: answers carry HSTS.
    pub tls: bool,
    /// `admin.public_url`'s origin (`https://mailboxd.corp.example`): accepted as `Origin`
    /// even when a proxy rewrote `Host`.
    pub public_origin: Option<String>,
}

/// Only files from this origin, no inline code, never in a frame, forms only to here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const HSTS: &str = "max-age=31536000";

/// A request's origin from its `scheme://host[:port]` form (what `Origin` holds).
fn authority(origin: &str) -> Option<&str> {
    origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
}

/// `Err(why)` when a state-changing request came from another site's page. Browsers say
/// where a request comes from in `Sec-Fetch-Site` (and, older ones, `Origin`); a client
/// that sends neither is no browser (curl, the CLI, automation with a token) and is not a
/// cross-site forgery.
pub(crate) fn same_origin(headers: &HeaderMap, public_origin: Option<&str>) -> Result<(), String> {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match get("sec-fetch-site") {
        Some("same-origin" | "none") => return Ok(()),
        Some(site) => return Err(format!("Sec-Fetch-Site: {site}")),
        None => {}
    }
    let Some(origin) = get("origin") else {
        return Ok(());
    };
    let host = get("host");
    let ok = public_origin.is_some_and(|p| p.eq_ignore_ascii_case(origin.trim_end_matches('/')))
        || matches!((authority(origin), host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Origin {origin} is not this site ({})",
            host.unwrap_or("no Host")
        ))
    }
}

fn safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware: see the module's description.
pub(crate) async fn guard(
    State(g): State<Guard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let client = crate::signin::client_address(peer, &forwarded, &g.trusted_proxies);
    req.extensions_mut().insert(ClientAddr(client));
    let request = format!("{} {}", req.method(), req.uri().path());
    let mut resp = if safe(req.method()) {
        next.run(req).await
    } else {
        match same_origin(req.headers(), g.public_origin.as_deref()) {
            Ok(()) => next.run(req).await,
            Err(why) => {
                let mut r = (
                    StatusCode::FORBIDDEN,
                    "Refused: this request came from another site's page (cross-site request forgery protection).\n",
                )
                    .into_response();
                r.extensions_mut()
                    .insert(RefusedBecause(format!("cross-site request: {why}")));
                r
            }
        }
    };
    let status = resp.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        let why = resp
            .extensions()
            .get::<RefusedBecause>()
            .map_or("", |r| r.0.as_str());
        crate::audit::refused(status.as_u16(), &request, "-", client, why);
    }
    secure_headers(resp.headers_mut(), g.tls);
    resp
}

fn secure_headers(h: &mut HeaderMap, tls: bool) {
    let set = |h: &mut HeaderMap, name, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        h,
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    if tls {
        set(h, header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn another_sites_page_cannot_post_and_clients_that_are_no_browser_can() {
        let ok = |p: &[(&'static str, &'static str)]| same_origin(&headers(p), None).is_ok();
        assert!(ok(&[("sec-fetch-site", "same-origin")]));
        assert!(!ok(&[("sec-fetch-site", "cross-site")]));
        assert!(
            !ok(&[("sec-fetch-site", "same-site")]),
            "a sibling host is another site"
        );
        assert!(ok(&[]), "curl, the CLI, automation: no browser, no forgery");
        assert!(ok(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ]));
        assert!(!ok(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8080")
        ]));
        assert!(!ok(&[("origin", "null"), ("host", "127.0.0.1:8080")]));
        let behind_proxy = headers(&[
            ("origin", "https://mbx.corp.example"),
            ("host", "10.0.0.5:8080"),
        ]);
        assert!(same_origin(&behind_proxy, Some("https://mbx.corp.example")).is_ok());
        assert!(same_origin(&behind_proxy, None).is_err());
    }
}
