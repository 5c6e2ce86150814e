//! CredSSP (MS-CSSP) for WinRM, the client half and what both halves share.
//!
//! sspi's `CredSspClient` runs the TSRequest state machine (SPNEGO: Kerberos first when a KDC
//! is configured, as pyspnego's CredSSP does, else NTLM; the public-key
//! binding, the delegated TSCredentials); rustls runs CredSSP's own TLS session over in-memory
//! buffers, because in WinRM every TLS record travels base64-encoded in an
//! `Authorization: CredSSP` header during the handshake, and afterwards that same session
//! encrypts the messages (MS-WSMV 2.2.9.1.3). Research: /work/research/credssp.md.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, Connection, DigitallySignedStruct, SignatureScheme};
use secrecy::{ExposeSecret, SecretString};
use sha2::Digest;
use sspi::credssp::{ClientMode, ClientState, CredSspClient, CredSspMode, TsRequest};
use sspi::ntlm::NtlmConfig;
use sspi::{AuthIdentity, Credentials, KerberosConfig, NegotiateConfig, Username};

use crate::kerberos::TcpKdc;

/// STATUS_NTLM_BLOCKED (MS-ERREF 2.3.1: "The authentication failed because NTLM was
/// blocked."), which a host denying incoming NTLM puts in the TSRequest's errorCode
/// (MS-CSSP 2.2.1 carries a failed SPNEGO exchange's NTSTATUS there).
pub const STATUS_NTLM_BLOCKED: u32 = 0xC000_0418;

/// What went wrong in CredSSP, by what to look at next.
#[derive(Debug, thiserror::Error)]
pub enum CredSspError {
    #[error(
        "CredSSP's TLS handshake failed: {0} (the host must offer TLS 1.2 with ECDHE-RSA AES-GCM, as Server 2016 and later do; Server 2012 R2 offers only suites rustls lacks)"
    )]
    Tls(String),
    #[error(
        "the host's CredSSP certificate is not trusted: {0} (set winrm.credssp_cert_sha256 to the SHA-256 fingerprint of the host's CN=WSMAN-<host> certificate)"
    )]
    Untrusted(String),
    #[error("the host refused the credentials inside CredSSP{}", .0.map(|c| format!(" (status {c:#010x})")).unwrap_or_default())]
    Refused(Option<u32>),
    /// The KDC refused the Kerberos logon inside CredSSP (its text names the refusal).
    #[error("Kerberos inside CredSSP: {0}")]
    Kerberos(String),
    #[error("CredSSP protocol: {0}")]
    Protocol(String),
    #[error("CredSSP message encryption: {0}")]
    Encryption(String),
}

fn protocol(e: impl std::fmt::Display) -> CredSspError {
    CredSspError::Protocol(e.to_string())
}

// ---- TLS over in-memory buffers --------------------------------------------------------------

/// Feeds bytes from the peer into the TLS session; returns the plaintext they carried.
pub fn feed(conn: &mut Connection, mut input: &[u8]) -> Result<Vec<u8>, CredSspError> {
    let mut plain = Vec::new();
    while !input.is_empty() {
        let n = conn
            .read_tls(&mut input)
            .map_err(|e| CredSspError::Tls(e.to_string()))?;
        let state = conn.process_new_packets().map_err(tls_error)?;
        let want = state.plaintext_bytes_to_read();
        if want > 0 {
            let start = plain.len();
            plain.resize(start + want, 0);
            conn.reader()
                .read_exact(&mut plain[start..])
                .map_err(|e| CredSspError::Tls(e.to_string()))?;
        }
        if n == 0 {
            break;
        }
    }
    Ok(plain)
}

/// A certificate refusal is a trust question, anything else a TLS one.
fn tls_error(e: rustls::Error) -> CredSspError {
    match e {
        rustls::Error::InvalidCertificate(c) => CredSspError::Untrusted(format!("{c:?}")),
        other => CredSspError::Tls(other.to_string()),
    }
}

/// Everything the session wants to send now (handshake records, alerts, application data).
pub fn drain(conn: &mut Connection) -> Result<Vec<u8>, CredSspError> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)
            .map_err(|e| CredSspError::Tls(e.to_string()))?;
    }
    Ok(out)
}

/// Encrypts `plain` into TLS application-data records.
pub fn seal_records(conn: &mut Connection, plain: &[u8]) -> Result<Vec<u8>, CredSspError> {
    conn.writer()
        .write_all(plain)
        .map_err(|e| CredSspError::Tls(e.to_string()))?;
    drain(conn)
}

/// The subjectPublicKey BIT STRING contents of a certificate: what MS-CSSP v5+ hashes into
/// pubKeyAuth (for RSA the PKCS#1 RSAPublicKey, which is what pyspnego computes).
pub fn subject_public_key(cert_der: &[u8]) -> Result<Vec<u8>, CredSspError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| protocol(format!("the CredSSP certificate: {e}")))?;
    Ok(cert
        .tbs_certificate
        .subject_pki
        .subject_public_key
        .data
        .to_vec())
}

/// Encodes a TSRequest and encrypts it into the TLS session.
pub fn send_ts(conn: &mut Connection, ts: &TsRequest) -> Result<Vec<u8>, CredSspError> {
    let mut bytes = Vec::new();
    ts.encode_ts_request(&mut bytes).map_err(protocol)?;
    seal_records(conn, &bytes)
}

// ---- Trust in the host's CredSSP certificate -------------------------------------------------

/// How the client trusts CredSSP's inner TLS certificate. Windows' WinRM uses a self-signed
/// `CN=WSMAN-<host>` certificate no CA vouches for, so the default is a pinned fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredSspTrust {
    /// SHA-256 of the certificate's DER: one of these must match.
    Pinned(Vec<[u8; 32]>),
    /// No certificate check (explicit `winrm.credssp_skip_cert_check`, logged at start-up):
    /// the handshake signature is still verified and pubKeyAuth binds the session to the key
    /// the NTLM-authenticated host proved, but a host impersonated with the right password
    /// hash would not be noticed.
    Unverified,
}

/// Parses `AB:CD:…` or `abcd…` (64 hex digits) as a SHA-256 fingerprint.
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':' && *c != ' ').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 fingerprint of a certificate, as `parse_sha256` reads it.
pub fn sha256_fingerprint(cert_der: &[u8]) -> String {
    sha2::Sha256::digest(cert_der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Checks the pin, then the handshake signatures: without the signature check a MITM could
/// show the real host's certificate and read the traffic only this TLS session protects.
/// RSA keys of 1024..2047 bits (seen in `CN=WSMAN-<host>` certificates, refused by webpki)
/// are verified with ring's legacy PKCS#1 algorithms; no PSS is offered then (ring has none
/// at 1024 bits).
#[derive(Debug)]
struct PinnedCert {
    trust: CredSspTrust,
    algs: WebPkiSupportedAlgorithms,
}

impl PinnedCert {
    fn legacy(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Option<HandshakeSignatureValid> {
        use ring::signature as sig;
        let alg: &dyn sig::VerificationAlgorithm = match dss.scheme {
            SignatureScheme::RSA_PKCS1_SHA256 => {
                &sig::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY
            }
            SignatureScheme::RSA_PKCS1_SHA512 => {
                &sig::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY
            }
            SignatureScheme::RSA_PKCS1_SHA1 => &sig::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
            _ => return None,
        };
        let pk = subject_public_key(cert.as_ref()).ok()?;
        sig::UnparsedPublicKey::new(alg, pk)
            .verify(message, dss.signature())
            .ok()
            .map(|()| HandshakeSignatureValid::assertion())
    }
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            CredSspTrust::Unverified => Ok(ServerCertVerified::assertion()),
            CredSspTrust::Pinned(pins) => {
                let got: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
                if pins.contains(&got) {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::Other(rustls::OtherError(Arc::new(Unpinned(
                            sha256_fingerprint(end_entity.as_ref()),
                        )))),
                    ))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
            .or_else(|e| self.legacy(message, cert, dss).ok_or(e))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let mut v: Vec<_> = self
            .algs
            .supported_schemes()
            .into_iter()
            .filter(|s| {
                !matches!(
                    s,
                    SignatureScheme::RSA_PSS_SHA256
                        | SignatureScheme::RSA_PSS_SHA384
                        | SignatureScheme::RSA_PSS_SHA512
                        | SignatureScheme::RSA_PKCS1_SHA384
                )
            })
            .collect();
        v.push(SignatureScheme::RSA_PKCS1_SHA1);
        v
    }
}

#[derive(Debug)]
struct Unpinned(String);

impl std::fmt::Display for Unpinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "its SHA-256 fingerprint {} is not pinned", self.0)
    }
}

impl std::error::Error for Unpinned {}

/// The client's TLS settings for CredSSP: TLS 1.2 only (what Windows' listeners speak, and
/// the one version every peer agrees on the trailer length for), no resumption (MS-CSSP 3.1.5).
pub fn client_tls_config(trust: CredSspTrust) -> Result<Arc<ClientConfig>, CredSspError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(|e| CredSspError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert { trust, algs }))
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

// ---- The client --------------------------------------------------------------------------------

enum Phase {
    /// The TLS handshake; the identity waits for the TSRequests.
    Tls(Box<AuthIdentity>),
    Auth(Box<CredSspClient>),
    Done,
}

/// The client half of one CredSSP context (= one TCP connection).
pub struct CredSspInitiator {
    tls: Connection,
    phase: Phase,
    spn: String,
    /// Kerberos first (the KDC, `tcp://dc:88`), NTLM only when the KDC cannot be reached;
    /// `None`: NTLM.
    kerberos: Option<CredSspKerberos>,
}

/// Where CredSSP's SPNEGO gets Kerberos tickets: the KDC and the host's SPN.
#[derive(Clone, Debug)]
pub struct CredSspKerberos {
    pub kdc: String,
    pub spn: String,
    pub timeout: std::time::Duration,
}

impl CredSspInitiator {
    /// A context for `user` (`DOMAIN\user`, `user@domain` or `user`) at `host`; returns it
    /// and the first token (the TLS ClientHello). With `kerberos`, the legs after the TLS
    /// handshake may talk to the KDC: run `step` off the async runtime then.
    pub fn start(
        user: &str,
        password: &SecretString,
        host: &str,
        tls: Arc<ClientConfig>,
        kerberos: Option<CredSspKerberos>,
    ) -> Result<(CredSspInitiator, Vec<u8>), CredSspError> {
        let name = ServerName::try_from(host.to_owned()).map_err(protocol)?;
        let conn: Connection = ClientConnection::new(tls, name)
            .map_err(|e| CredSspError::Tls(e.to_string()))?
            .into();
        let username = match user.split_once('\\') {
            Some((d, u)) => Username::new(u, Some(d)),
            None => Username::parse(user),
        }
        .map_err(protocol)?;
        let identity = AuthIdentity {
            username,
            password: password.expose_secret().to_owned().into(),
        };
        let spn = match &kerberos {
            Some(k) => k.spn.clone(),
            None => format!("HTTP/{host}"),
        };
        let mut me = CredSspInitiator {
            tls: conn,
            phase: Phase::Tls(Box::new(identity)),
            spn,
            kerberos,
        };
        let hello = drain(&mut me.tls)?;
        Ok((me, hello))
    }

    /// True once the leg carrying the delegated credentials went out: the host answers 200.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// One leg: the host's token in, the next `Authorization: CredSSP` token out.
    pub fn step(&mut self, input: &[u8]) -> Result<Vec<u8>, CredSspError> {
        let plain = feed(&mut self.tls, input)?;
        if matches!(self.phase, Phase::Tls(_)) {
            // Handshake records travel alone in their leg.
            let out = drain(&mut self.tls)?;
            if self.tls.is_handshaking() || !out.is_empty() {
                return Ok(out);
            }
            return self.begin_auth();
        }
        let Phase::Auth(client) = &mut self.phase else {
            return Err(protocol("the handshake is already complete"));
        };
        if plain.is_empty() {
            return Err(protocol("the host's leg carried no TSRequest"));
        }
        let ts = TsRequest::from_buffer(&plain).map_err(protocol)?;
        if let Some(code) = ts.error_code {
            return Err(CredSspError::Refused(Some(code.0)));
        }
        let state = resolve(self.kerberos.as_ref(), client.process(ts))?;
        self.emit(state)
    }
}

/// Runs one sspi step to its end, with the KDC when Kerberos is on (blocking).
fn resolve(
    kerberos: Option<&CredSspKerberos>,
    mut step: sspi::generator::Generator<
        '_,
        sspi::NetworkRequest,
        sspi::Result<Vec<u8>>,
        sspi::Result<ClientState>,
    >,
) -> Result<ClientState, CredSspError> {
    let result = match kerberos {
        Some(k) => step.resolve_with_client(&TcpKdc { timeout: k.timeout }),
        None => step.resolve_to_result(),
    };
    result.map_err(|e| match e.nstatus {
        Some(s) => CredSspError::Refused(Some(s.0)),
        None if crate::error::KdcRefusal::recognise(&e.to_string()).is_some() => {
            CredSspError::Kerberos(e.to_string())
        }
        None => protocol(e),
    })
}

impl CredSspInitiator {
    /// TLS is up: binds the host's certificate key and sends the first TSRequest: SPNEGO
    /// with Kerberos first when a KDC is configured (pyspnego's CredSSP does the same;
    /// sspi falls back to NTLM only when the KDC cannot be reached or does not know the
    /// account, never after the KDC refused the password), else with NTLM as pywinrm does.
    fn begin_auth(&mut self) -> Result<Vec<u8>, CredSspError> {
        let Phase::Tls(identity) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return Err(protocol("the TLS handshake finished twice"));
        };
        let cert = self
            .tls
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| protocol("the host sent no CredSSP certificate"))?;
        let public_key = subject_public_key(cert.as_ref())?;
        let mode = ClientMode::Negotiate(match &self.kerberos {
            Some(k) => NegotiateConfig::new(
                Box::new(KerberosConfig::new_with_kdc_url(&k.kdc, "mailboxd".into())),
                Some("kerberos,ntlm".into()),
                "mailboxd".into(),
            ),
            None => NegotiateConfig::new(
                Box::new(NtlmConfig::default()),
                Some("ntlm".into()),
                "mailboxd".into(),
            ),
        });
        let mut client = Box::new(
            CredSspClient::new(
                public_key,
                Credentials::AuthIdentity(*identity),
                CredSspMode::WithCredentials,
                mode,
                self.spn.clone(),
            )
            .map_err(protocol)?,
        );
        let state = resolve(self.kerberos.as_ref(), client.process(TsRequest::default()))?;
        self.phase = Phase::Auth(client);
        self.emit(state)
    }

    fn emit(&mut self, state: ClientState) -> Result<Vec<u8>, CredSspError> {
        let (ts, last) = match state {
            ClientState::ReplyNeeded(ts) => (ts, false),
            ClientState::FinalMessage(ts) => (ts, true),
        };
        let out = send_ts(&mut self.tls, &ts)?;
        if last {
            // The sspi client (and the password it holds) goes with the last leg.
            self.phase = Phase::Done;
        }
        Ok(out)
    }

    /// Encrypts one envelope for plain HTTP: the body and its Content-Type.
    pub fn wrap(&mut self, plain: &[u8]) -> Result<(Vec<u8>, String), CredSspError> {
        Ok((
            seal_message(&mut self.tls, plain)?,
            content_type(plain.len()),
        ))
    }

    /// Decrypts a reply body.
    pub fn unwrap(&mut self, body: &[u8]) -> Result<Vec<u8>, CredSspError> {
        unseal_message(&mut self.tls, body)
    }
}

// ---- WinRM message encryption with the CredSSP session (MS-WSMV 2.2.9.1.3) ------------------

pub const PROTOCOL: &str = "application/HTTP-CredSSP-session-encrypted";
const BOUNDARY: &[u8] = b"--Encrypted Boundary";
/// Plaintext above 16 KiB goes in 16384-byte chunks, as `multipart/x-multi-encrypted`.
pub const CHUNK: usize = 16384;

/// The Content-Type of a sealed body of `plain_len` plaintext bytes.
pub fn content_type(plain_len: usize) -> String {
    let kind = if plain_len > CHUNK {
        "multipart/x-multi-encrypted"
    } else {
        "multipart/encrypted"
    };
    format!(r#"{kind};protocol="{PROTOCOL}";boundary="Encrypted Boundary""#)
}

/// Whether a Content-Type names CredSSP session encryption.
pub fn is_credssp_encrypted(content_type: &str) -> bool {
    content_type
        .to_ascii_lowercase()
        .contains("application/http-credssp-session-encrypted")
}

/// The Length-Field: the per-record bytes after the plaintext. TLS 1.2 AEAD (all rustls has):
/// the 16-byte tag; TLS 1.3 adds the inner content type. Receivers ignore it; send it right.
fn trailer_len(conn: &Connection) -> u32 {
    match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => 17,
        _ => 16,
    }
}

/// Seals one envelope into the multipart body, one TLS record per 16 KiB chunk.
pub fn seal_message(conn: &mut Connection, plain: &[u8]) -> Result<Vec<u8>, CredSspError> {
    let mut body = Vec::with_capacity(plain.len() + 256);
    for chunk in plain.chunks(CHUNK) {
        body.extend_from_slice(BOUNDARY);
        body.extend_from_slice(
            format!(
                "\r\n\tContent-Type: {PROTOCOL}\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={}\r\n",
                chunk.len()
            )
            .as_bytes(),
        );
        body.extend_from_slice(BOUNDARY);
        body.extend_from_slice(b"\r\n\tContent-Type: application/octet-stream\r\n");
        let records = seal_records(conn, chunk)?;
        body.extend_from_slice(&trailer_len(conn).to_le_bytes());
        body.extend_from_slice(&records);
    }
    body.extend_from_slice(BOUNDARY);
    body.extend_from_slice(b"--\r\n");
    Ok(body)
}

/// Unseals a multipart body: the TLS records after each Length-Field (whose value peers
/// disagree on, so it is not relied on), each part's `Length=` checked against its plaintext.
pub fn unseal_message(conn: &mut Connection, body: &[u8]) -> Result<Vec<u8>, CredSspError> {
    let bad = |m: &str| CredSspError::Encryption(m.to_owned());
    let marker = b"\tContent-Type: application/octet-stream\r\n";
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(len_at) = find(rest, b"Length=") {
        let digits: String = rest[len_at + 7..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|&b| b as char)
            .collect();
        let expected: usize = digits.parse().map_err(|_| bad("Length= is not a number"))?;
        let at = find(rest, marker).ok_or_else(|| bad("no octet-stream part"))? + marker.len();
        let part = rest
            .get(at + 4..)
            .ok_or_else(|| bad("truncated Length-Field"))?;
        let n = records_len(part);
        if n == 0 {
            return Err(bad("no complete TLS record in the part"));
        }
        let plain = feed(conn, &part[..n])?;
        if plain.len() != expected {
            return Err(CredSspError::Encryption(format!(
                "Length={expected} but {} bytes decrypted",
                plain.len()
            )));
        }
        out.extend(plain);
        rest = &part[n..];
    }
    if !rest.starts_with(b"--Encrypted Boundary--") {
        return Err(bad("no closing boundary"));
    }
    Ok(out)
}

/// The length of the complete TLS application-data records at the start of `p`.
fn records_len(p: &[u8]) -> usize {
    let mut n = 0;
    while let Some(h) = p.get(n..n + 5) {
        if h[0] != 0x17 || h[1] != 0x03 {
            break;
        }
        let len = 5 + u16::from_be_bytes([h[3], h[4]]) as usize;
        if n + len > p.len() {
            break;
        }
        n += len;
    }
    n
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_both_spellings() {
        let fp = sha256_fingerprint(b"cert");
        let pin = parse_sha256(&fp).expect("colon form");
        assert_eq!(parse_sha256(&fp.replace(':', "").to_lowercase()), Some(pin));
        assert_eq!(parse_sha256("AB:CD"), None);
    }

    #[test]
    fn large_bodies_are_multi_encrypted() {
        assert!(content_type(CHUNK).starts_with("multipart/encrypted;"));
        assert!(content_type(CHUNK + 1).starts_with("multipart/x-multi-encrypted;"));
        assert!(is_credssp_encrypted(&content_type(1)));
    }
}
