//! `[graph]` settings pointing at the lab's Microsoft Graph stand-in.

use std::path::{Path, PathBuf};

use lab::Lab;
use lab::graph::{AppCertificate, LAB_TENANT_ID};
use mailboxd::config::Graph;
use secrecy::ExposeSecret;

/// `[graph]` for app `client_id` signing with `cert` (its certificate written into `dir`),
/// trusting the lab's CA in `ca`, both endpoints the lab's HTTPS listener.
pub fn settings(
    lab: &Lab,
    client_id: &str,
    cert: &AppCertificate,
    dir: &Path,
    ca: PathBuf,
) -> Graph {
    let cert_file = dir.join("app.pem");
    std::fs::write(&cert_file, &cert.certificate_pem).expect("write certificate");
    let base = lab.https_url().expect("the lab serves HTTPS");
    Graph {
        tenant_id: Some(LAB_TENANT_ID.into()),
        client_id: Some(client_id.into()),
        certificate_file: Some(cert_file),
        private_key: Some(cert.private_key_pem.expose_secret().to_owned().into()),
        ca_file: Some(ca),
        authority_url: base.clone(),
        graph_url: base,
        ..Graph::default()
    }
}
