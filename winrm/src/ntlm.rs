//! NTLM for WinRM, both ends: the client's handshake, the lab's acceptor, and WinRM message
//! encryption (MS-WSMV 2.2.9.1: `multipart/encrypted`, the NTLM signature, then the RC4-sealed
//! envelope). The crypto is `sspi`'s; what lives here is the framing and the two checks sspi's
//! acceptor leaves to its caller (the account name and the NTProofStr: see `acceptor::ntlm`).

use secrecy::{ExposeSecret, SecretString};
use sspi::{
    AuthIdentity, AuthIdentityBuffers, BufferType, ClientRequestFlags, CredentialUse,
    DataRepresentation, EncryptionFlags, Ntlm, SecurityBuffer, SecurityBufferRef, SecurityStatus,
    Sspi, SspiImpl, Username,
};

/// `Content-Type` of an encrypted WinRM request or reply.
pub const ENCRYPTED_CONTENT_TYPE: &str = r#"multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="Encrypted Boundary""#;
const SIGNATURE_LEN: usize = 16;
const PROTOCOL: &str = "application/HTTP-SPNEGO-session-encrypted";

#[derive(Debug, thiserror::Error)]
pub enum NtlmError {
    #[error("security handshake: {0}")]
    Handshake(String),
    #[error("the credentials were refused: {0}")]
    Refused(String),
    #[error(
        "an encrypted WinRM message could not be unsealed: {0} (the connection's security context is out of step; it is re-established)"
    )]
    Seal(String),
    #[error("malformed encrypted WinRM body: {0}")]
    Framing(String),
}

pub(crate) fn sspi_err(e: sspi::Error) -> String {
    e.to_string()
}

/// A sealed message: the 16-byte NTLM signature and the ciphertext (same length as the plaintext).
pub struct Sealed {
    pub signature: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Seals `plain` with the context's outgoing key and sequence number; the header is as long
/// as the mechanism's security trailer (16 bytes for NTLM, 60 for Kerberos AES).
fn seal<S: Sspi>(ctx: &mut S, plain: &[u8]) -> Result<Sealed, NtlmError> {
    let trailer = ctx
        .query_context_sizes()
        .map(|s| s.security_trailer as usize)
        .unwrap_or(SIGNATURE_LEN);
    let mut signature = vec![0u8; trailer];
    let mut data = plain.to_vec();
    let mut bufs = [
        SecurityBufferRef::token_buf(&mut signature),
        SecurityBufferRef::data_buf(&mut data),
    ];
    ctx.encrypt_message(EncryptionFlags::empty(), &mut bufs)
        .map_err(|e| NtlmError::Seal(sspi_err(e)))?;
    let signature = bufs[0].data().to_vec();
    let ciphertext = bufs[1].data().to_vec();
    Ok(Sealed {
        signature,
        ciphertext,
    })
}

/// Unseals a message and checks its signature and sequence number.
fn unseal<S: Sspi>(ctx: &mut S, sealed: Sealed) -> Result<Vec<u8>, NtlmError> {
    let Sealed {
        mut signature,
        mut ciphertext,
    } = sealed;
    let mut bufs = [
        SecurityBufferRef::token_buf(&mut signature),
        SecurityBufferRef::data_buf(&mut ciphertext),
    ];
    ctx.decrypt_message(&mut bufs)
        .map_err(|e| NtlmError::Seal(sspi_err(e)))?;
    Ok(bufs[1].data().to_vec())
}

/// Seals one SOAP envelope into a multipart/encrypted body with any established context.
pub fn seal_with<S: Sspi>(ctx: &mut S, plain: &[u8]) -> Result<Vec<u8>, NtlmError> {
    let sealed = seal(ctx, plain)?;
    Ok(frame(&sealed, plain.len()))
}

/// Unseals a multipart/encrypted body with any established context.
pub fn unseal_with<S: Sspi>(ctx: &mut S, body: &[u8]) -> Result<Vec<u8>, NtlmError> {
    let (sealed, length) = unframe(body)?;
    let plain = unseal(ctx, sealed)?;
    if plain.len() != length {
        return Err(NtlmError::Framing(format!(
            "OriginalContent Length {length} but {} bytes unsealed",
            plain.len()
        )));
    }
    Ok(plain)
}

/// The multipart body MS-WSMV prescribes for one sealed SOAP envelope.
pub fn frame(sealed: &Sealed, plain_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed.ciphertext.len() + 256);
    out.extend_from_slice(
        format!(
            "--Encrypted Boundary\r\n\tContent-Type: {PROTOCOL}\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={plain_len}\r\n--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&(sealed.signature.len() as u32).to_le_bytes());
    out.extend_from_slice(&sealed.signature);
    out.extend_from_slice(&sealed.ciphertext);
    out.extend_from_slice(b"--Encrypted Boundary--\r\n");
    out
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads a multipart/encrypted body back into its parts; `Length=` is returned to be checked
/// against the unsealed size. Tolerates `-- Encrypted Boundary` (seen from Exchange/IIS).
pub fn unframe(body: &[u8]) -> Result<(Sealed, usize), NtlmError> {
    let bad = |m: &str| NtlmError::Framing(m.to_owned());
    let len_at = find(body, b"Length=").ok_or_else(|| bad("no OriginalContent Length"))?;
    let digits: String = body[len_at + 7..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| b as char)
        .collect();
    let length: usize = digits
        .parse()
        .map_err(|_| bad("OriginalContent Length is not a number"))?;
    let marker = b"application/octet-stream\r\n";
    let start =
        find(body, marker).ok_or_else(|| bad("no application/octet-stream part"))? + marker.len();
    let rest = &body[start..];
    if rest.len() < 4 {
        return Err(bad("truncated before the signature length"));
    }
    let sig_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    // 16 bytes for NTLM, 60 for Kerberos AES; anything far beyond is not a wrap token.
    if sig_len == 0 || sig_len > 1024 {
        return Err(bad("implausible wrap-token header length"));
    }
    let rest = &rest[4..];
    if rest.len() < sig_len {
        return Err(bad("truncated inside the signature"));
    }
    let (signature, rest) = rest.split_at(sig_len);
    // The closing boundary follows the ciphertext directly; the ciphertext is as long as the plaintext.
    if rest.len() < length {
        return Err(bad("the ciphertext is shorter than OriginalContent Length"));
    }
    let (ciphertext, tail) = rest.split_at(length);
    let tail = String::from_utf8_lossy(tail);
    let tail = tail.trim_start();
    if !(tail.starts_with("--Encrypted Boundary--") || tail.starts_with("-- Encrypted Boundary--"))
    {
        return Err(bad("no closing boundary after the ciphertext"));
    }
    Ok((
        Sealed {
            signature: signature.to_vec(),
            ciphertext: ciphertext.to_vec(),
        },
        length,
    ))
}

/// Whether a `Content-Type` header announces an encrypted WinRM body.
pub fn is_encrypted(content_type: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    // pywinrm's Kerberos transport names its protocol application/HTTP-Kerberos-session-encrypted.
    ct.starts_with("multipart/encrypted") && ct.contains("-session-encrypted")
}

/// The `tls-server-end-point` channel binding data (RFC 5929 §4.1) of a server certificate:
/// the certificate hashed with its signature's hash, SHA-256 when that is MD5 or SHA-1.
pub fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let alg = x509_parser::parse_x509_certificate(cert_der)
        .map(|(_, c)| c.signature_algorithm.algorithm.to_id_string())
        .unwrap_or_default();
    let hash = match alg.as_str() {
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => sha2::Sha384::digest(cert_der).to_vec(),
        // sha512WithRSAEncryption, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => sha2::Sha512::digest(cert_der).to_vec(),
        _ => sha2::Sha256::digest(cert_der).to_vec(),
    };
    let mut out = b"tls-server-end-point:".to_vec();
    out.extend_from_slice(&hash);
    out
}

/// SEC_CHANNEL_BINDINGS with only application data (the `tls-server-end-point` data), the
/// buffer sspi reads channel bindings from, on either end and for NTLM and Kerberos alike.
pub(crate) fn sec_channel_bindings(application_data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    out[24..28].copy_from_slice(&(application_data.len() as u32).to_le_bytes());
    out[28..32].copy_from_slice(&32u32.to_le_bytes());
    out.extend_from_slice(application_data);
    out
}

/// Splits `DOMAIN\user` / `user@domain` / `user` for NTLM.
fn split_user(user: &str) -> (String, Option<String>) {
    if let Some((d, u)) = user.split_once('\\') {
        (u.to_owned(), Some(d.to_owned()))
    } else {
        (user.to_owned(), None)
    }
}

/// The client half of one NTLM context (= one TCP connection).
pub struct Initiator {
    ctx: Ntlm,
    creds: Option<AuthIdentityBuffers>,
    target: String,
}

impl Initiator {
    /// Starts a context and returns it with the NEGOTIATE token. `channel_binding` is the
    /// `tls-server-end-point` data when NTLM runs inside TLS.
    pub fn start(
        user: &str,
        password: &SecretString,
        host: &str,
        channel_binding: Option<&[u8]>,
    ) -> Result<(Initiator, Vec<u8>), NtlmError> {
        let mut ctx = Ntlm::new();
        let username = if user.contains('@') {
            Username::parse(user)
        } else {
            let (u, d) = split_user(user);
            Username::new(&u, d.as_deref())
        }
        .map_err(|e| NtlmError::Handshake(format!("user name {user:?}: {e}")))?;
        let identity = AuthIdentity {
            username,
            password: password.expose_secret().to_owned().into(),
        };
        let acquired = ctx
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Outbound)
            .with_auth_data(&identity)
            .execute(&mut ctx)
            .map_err(|e| NtlmError::Handshake(sspi_err(e)))?;
        if let Some(cb) = channel_binding {
            ctx.set_channel_bindings(cb);
        }
        let mut me = Initiator {
            ctx,
            creds: acquired.credentials_handle,
            target: format!("HTTP/{host}"),
        };
        let token = me.step(None)?;
        Ok((me, token))
    }

    fn step(&mut self, input: Option<&[u8]>) -> Result<Vec<u8>, NtlmError> {
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut input_bufs =
            input.map(|t| vec![SecurityBuffer::new(t.to_vec(), BufferType::Token)]);
        let mut builder = self
            .ctx
            .initialize_security_context()
            .with_credentials_handle(&mut self.creds)
            .with_context_requirements(
                ClientRequestFlags::CONFIDENTIALITY
                    | ClientRequestFlags::INTEGRITY
                    | ClientRequestFlags::ALLOCATE_MEMORY,
            )
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name(&self.target)
            .with_output(&mut output);
        if let Some(inp) = input_bufs.as_mut() {
            builder = builder.with_input(inp);
        }
        let result = self
            .ctx
            .initialize_security_context_impl(&mut builder)
            .and_then(|mut g| g.resolve_to_result())
            .map_err(|e| NtlmError::Handshake(sspi_err(e)))?;
        if matches!(
            result.status,
            SecurityStatus::CompleteNeeded | SecurityStatus::CompleteAndContinue
        ) {
            self.ctx
                .complete_auth_token(&mut output)
                .map_err(|e| NtlmError::Handshake(sspi_err(e)))?;
        }
        Ok(output.swap_remove(0).buffer)
    }

    /// Answers the server's CHALLENGE with the AUTHENTICATE token.
    pub fn authenticate(&mut self, challenge: &[u8]) -> Result<Vec<u8>, NtlmError> {
        self.step(Some(challenge))
    }

    /// Seals one SOAP envelope into a multipart/encrypted body.
    pub fn wrap(&mut self, plain: &[u8]) -> Result<Vec<u8>, NtlmError> {
        seal_with(&mut self.ctx, plain)
    }

    /// Unseals a multipart/encrypted reply.
    pub fn unwrap(&mut self, body: &[u8]) -> Result<Vec<u8>, NtlmError> {
        unseal_with(&mut self.ctx, body)
    }
}
