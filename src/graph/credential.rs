//! The app's certificate credential and the client assertion signed with it, as Microsoft's
//! "certificate credentials" page specifies (entra/identity-platform/certificate-credentials):
//! header `alg` PS256, `typ` JWT, `x5t#S256` = base64url SHA-256 of the certificate's DER;
//! claims `aud` = the token endpoint, `iss` = `sub` = the client ID, a fresh `jti`, `nbf`,
//! `iat`, `exp` a few minutes after `nbf` ("5-10 minutes after nbf at most").

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Digest;

use super::GraphError;

/// How long an assertion is valid: Microsoft asks for 5-10 minutes at most.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// The private key (never logged: it has no `Debug` of its contents) and the thumbprint of
/// the certificate it belongs to.
pub struct AppCredential {
    client_id: String,
    key: jsonwebtoken::EncodingKey,
    thumbprint_s256: String,
}

impl std::fmt::Debug for AppCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredential")
            .field("client_id", &self.client_id)
            .field("x5t#S256", &self.thumbprint_s256)
            .finish_non_exhaustive()
    }
}

/// The claims of a client assertion (RFC 7523 as Microsoft profiles it).
#[derive(Debug, Clone, Serialize)]
pub struct AssertionClaims {
    pub aud: String,
    pub iss: String,
    pub sub: String,
    pub jti: String,
    pub nbf: u64,
    pub iat: u64,
    pub exp: u64,
}

impl AssertionClaims {
    /// The claims Microsoft documents for `client_id` at `token_url`, valid from `now`.
    pub fn new(client_id: &str, token_url: &str, now: SystemTime) -> AssertionClaims {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        AssertionClaims {
            aud: token_url.to_owned(),
            iss: client_id.to_owned(),
            sub: client_id.to_owned(),
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: secs,
            iat: secs,
            exp: secs + ASSERTION_LIFETIME.as_secs(),
        }
    }
}

impl AppCredential {
    /// Reads the certificate (PEM) and its private key (PEM, PKCS#8 or PKCS#1) and checks that
    /// they belong together: a mismatch would only show as AADSTS700027 at the token endpoint.
    pub fn load(
        client_id: &str,
        certificate_file: &Path,
        private_key: &SecretString,
    ) -> Result<AppCredential, GraphError> {
        let config = |m: String| GraphError::Config(m);
        let cert = CertificateDer::from_pem_file(certificate_file).map_err(|e| {
            config(format!(
                "graph.certificate_file {}: not a PEM certificate ({e})",
                certificate_file.display()
            ))
        })?;
        Self::from_parts(client_id, cert.as_ref(), private_key)
    }

    /// The same from the certificate's DER and the key's PEM.
    pub fn from_parts(
        client_id: &str,
        certificate_der: &[u8],
        private_key: &SecretString,
    ) -> Result<AppCredential, GraphError> {
        let config = |m: &str| GraphError::Config(m.to_owned());
        let pem = private_key.expose_secret().as_bytes();
        // Neither error names the key's bytes: only what is wrong with them.
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
            config("graph.private_key_file: no PEM private key in it (PKCS#8 or PKCS#1 RSA)")
        })?;
        let public = rsa_public_key(&der).ok_or_else(|| {
            config("graph.private_key_file: not an RSA key (Microsoft's assertions are PS256)")
        })?;
        if certificate_public_key(certificate_der).as_deref() != Some(public.as_slice()) {
            return Err(config(
                "graph.private_key_file is not the key of graph.certificate_file: the token endpoint would refuse every assertion (AADSTS700027)",
            ));
        }
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem)
            .map_err(|_| config("graph.private_key_file: the RSA key cannot sign"))?;
        Ok(AppCredential {
            client_id: client_id.to_owned(),
            key,
            thumbprint_s256: thumbprint_s256(certificate_der),
        })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// `x5t#S256` of the certificate.
    pub fn thumbprint_s256(&self) -> &str {
        &self.thumbprint_s256
    }

    /// A client assertion for `token_url`, valid from `now`.
    pub fn assertion(&self, token_url: &str, now: SystemTime) -> Result<String, GraphError> {
        self.sign(&AssertionClaims::new(&self.client_id, token_url, now))
    }

    /// Signs any claims with the app's key (PS256, `x5t#S256`): the claims are the caller's.
    pub fn sign(&self, claims: &AssertionClaims) -> Result<String, GraphError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
        header.typ = Some("JWT".into());
        header.x5t_s256 = Some(self.thumbprint_s256.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| GraphError::Config(format!("cannot sign the client assertion: {e}")))
    }
}

/// Base64url (no padding) of the SHA-256 of a certificate's DER: `x5t#S256` (RFC 7515 §4.1.8).
pub fn thumbprint_s256(certificate_der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(certificate_der))
}

/// The RSAPublicKey (PKCS#1 DER) inside a certificate, when it holds an RSA key.
pub fn certificate_public_key(certificate_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(certificate_der).ok()?;
    Some(cert.public_key().subject_public_key.data.to_vec())
}

/// The RSAPublicKey (PKCS#1 DER) of an RSA private key.
fn rsa_public_key(der: &PrivateKeyDer<'_>) -> Option<Vec<u8>> {
    use ring::signature::KeyPair;
    let pair = match der {
        PrivateKeyDer::Pkcs8(k) => ring::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => ring::signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => return None,
    };
    pair.ok().map(|p| p.public_key().as_ref().to_vec())
}
