//! TLS client settings for every outbound connection that is not built by its own crate
//! (LDAP, WinRM with NTLM): the system roots plus an optional CA file, checks always on.

use std::path::Path;
use std::sync::Arc;

/// A rustls client configuration trusting the system roots and the PEM certificates of `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    install_provider();
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in pem_certs(&pem) {
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "ca_file {} holds no PEM certificate",
                path.display()
            ));
        }
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// `builder` trusting the PEM certificates of `path` as well as the system roots (the setting
/// `key` named in the error: `cannot read <key> …`, `<key> … is not PEM`).
pub fn trust_ca_file(
    mut builder: reqwest::ClientBuilder,
    key: &str,
    path: &Path,
) -> Result<reqwest::ClientBuilder, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read {key} {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{key} {} is not PEM: {e}", path.display()))?;
    for c in certs {
        builder = builder.add_root_certificate(c);
    }
    Ok(builder)
}

/// The certificates of a PEM bundle (other blocks are skipped).
pub fn pem_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// Makes ring the process's TLS crypto provider (once; later calls do nothing). One provider
/// for every client: aws-lc would add minutes to every clean build.
pub fn install_provider() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        // Err only means another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
