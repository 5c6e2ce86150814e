//! NTLM for WinRM, both ends: the client's handshake, the lab's acceptor, and WinRM message
//! encryption (MS-WSMV 2.2.9.1: `multipart/encrypted`, the NTLM signature, then the RC4-sealed
//! envelope). The crypto is `sspi`'s; what lives here is the framing and the two checks sspi's
//! acceptor leaves to its caller (notes/ntlm-server.md §4: the account name and the NTProofStr).

use hmac::{KeyInit, Mac};
use md4::Digest;
use secrecy::{ExposeSecret, SecretString};
use sspi::{
    AuthIdentity, AuthIdentityBuffers, BufferType, ClientRequestFlags, CredentialUse,
    DataRepresentation, EncryptionFlags, Ntlm, SecurityBuffer, SecurityBufferRef, SecurityStatus,
    ServerRequestFlags, Sspi, SspiImpl, Username,
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

fn sspi_err(e: sspi::Error) -> String {
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

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
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

/// SEC_CHANNEL_BINDINGS with only application data, as sspi's acceptor reads it.
fn sec_channel_bindings(application_data: &[u8]) -> Vec<u8> {
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

/// How strictly the acceptor wants channel binding over TLS (Windows' CbtHardeningLevel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CbtHardening {
    /// A binding the client sends must match; a client that sends none is let in.
    #[default]
    Relaxed,
    /// Over TLS the client must send the matching binding.
    Strict,
}

/// What one handshake step of the acceptor produced.
pub enum Accepted {
    /// Send this CHALLENGE back (401 + `WWW-Authenticate: Negotiate <token>`).
    Challenge(Vec<u8>),
    /// The peer proved the password of this configured account.
    User(String),
}

/// The server half of one NTLM context (the lab's WinRM listener, one per TCP connection).
pub struct Acceptor {
    ctx: Ntlm,
    challenge: Vec<u8>,
    user: Option<String>,
}

/// A field (`u16 len, u16 maxlen, u32 offset`) of an NTLM message.
fn field(msg: &[u8], at: usize) -> Option<&[u8]> {
    let hdr = msg.get(at..at + 8)?;
    let len = u16::from_le_bytes([hdr[0], hdr[1]]) as usize;
    let off = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
    msg.get(off..off.checked_add(len)?)
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

fn from_utf16le(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// The channel-binding hash the client put into its NTLMv2 response, if any (all zeros = none).
fn client_channel_binding(nt_response: &[u8]) -> Option<Vec<u8>> {
    // NTProofStr(16) RespType HiRespType Reserved(6) TimeStamp(8) ClientChallenge(8) Reserved(4), then AV pairs.
    let mut at = 44;
    while let Some(hdr) = nt_response.get(at..at + 4) {
        let id = u16::from_le_bytes([hdr[0], hdr[1]]);
        let len = u16::from_le_bytes([hdr[2], hdr[3]]) as usize;
        let value = nt_response.get(at + 4..at + 4 + len)?;
        match id {
            0 => return None,
            0x000A => {
                return value.iter().any(|&b| b != 0).then(|| value.to_vec());
            }
            _ => at += 4 + len,
        }
    }
    None
}

type HmacMd5 = hmac::Hmac<md5::Md5>;

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, NtlmError> {
    let mut mac = <HmacMd5 as KeyInit>::new_from_slice(key)
        .map_err(|e| NtlmError::Handshake(e.to_string()))?;
    for p in parts {
        mac.update(p);
    }
    Ok(mac.finalize().into_bytes().to_vec())
}

impl Acceptor {
    pub fn new() -> Acceptor {
        Acceptor {
            ctx: Ntlm::new(),
            challenge: Vec::new(),
            user: None,
        }
    }

    /// Feeds one client token. `users` are the accounts the listener accepts; `binding` is
    /// the listener's `tls-server-end-point` data when it serves TLS.
    pub fn step(
        &mut self,
        token: &[u8],
        users: &[(String, SecretString)],
        binding: Option<&[u8]>,
        hardening: CbtHardening,
    ) -> Result<Accepted, NtlmError> {
        if self.challenge.is_empty() {
            let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
            let mut input = vec![SecurityBuffer::new(token.to_vec(), BufferType::Token)];
            let mut no_creds = None;
            let builder = self
                .ctx
                .accept_security_context()
                .with_credentials_handle(&mut no_creds)
                .with_context_requirements(ServerRequestFlags::ALLOCATE_MEMORY)
                .with_target_data_representation(DataRepresentation::Native)
                .with_input(&mut input)
                .with_output(&mut output);
            self.ctx
                .accept_security_context_impl(builder)
                .and_then(|mut g| g.resolve_to_result())
                .map_err(|e| NtlmError::Handshake(sspi_err(e)))?;
            self.challenge = output.swap_remove(0).buffer;
            return Ok(Accepted::Challenge(self.challenge.clone()));
        }
        if self.user.is_some() {
            return Err(NtlmError::Handshake(
                "a second AUTHENTICATE on an authenticated connection".into(),
            ));
        }
        // AUTHENTICATE: NtChallengeResponse at 20, DomainName at 28, UserName at 36.
        let bad = |m: &str| NtlmError::Refused(m.to_owned());
        if token.get(8..12) != Some(&[3, 0, 0, 0]) {
            return Err(NtlmError::Handshake(
                "expected an AUTHENTICATE message".into(),
            ));
        }
        let nt_response = field(token, 20).ok_or_else(|| bad("no NtChallengeResponse"))?;
        let wire_domain = field(token, 28).ok_or_else(|| bad("no DomainName field"))?;
        let wire_user = from_utf16le(field(token, 36).ok_or_else(|| bad("no UserName field"))?);
        if nt_response.len() < 48 {
            return Err(bad("not an NTLMv2 response (NTLMv1 is not accepted)"));
        }
        // sspi checks the password only; the account name is ours to check.
        let Some((user, password)) = users
            .iter()
            .find(|(u, _)| u.eq_ignore_ascii_case(&wire_user))
        else {
            return Err(NtlmError::Refused(format!("unknown account {wire_user:?}")));
        };
        let cb_sent = client_channel_binding(nt_response);
        if binding.is_some() && hardening == CbtHardening::Strict && cb_sent.is_none() {
            return Err(bad(
                "no channel binding over TLS (CbtHardeningLevel Strict)",
            ));
        }
        let username =
            Username::new(user, None).map_err(|e| NtlmError::Handshake(e.to_string()))?;
        let identity = AuthIdentity {
            username,
            password: password.expose_secret().to_owned().into(),
        };
        let mut creds = self
            .ctx
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Inbound)
            .with_auth_data(&identity)
            .execute(&mut self.ctx)
            .map_err(|e| NtlmError::Handshake(sspi_err(e)))?
            .credentials_handle;
        let mut input = vec![SecurityBuffer::new(token.to_vec(), BufferType::Token)];
        // sspi compares a binding only when it is given one and the client sent one.
        if let (Some(b), Some(_)) = (binding, &cb_sent) {
            input.push(SecurityBuffer::new(
                sec_channel_bindings(b),
                BufferType::ChannelBindings,
            ));
        }
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let builder = self
            .ctx
            .accept_security_context()
            .with_credentials_handle(&mut creds)
            .with_context_requirements(ServerRequestFlags::ALLOCATE_MEMORY)
            .with_target_data_representation(DataRepresentation::Native)
            .with_input(&mut input)
            .with_output(&mut output);
        self.ctx
            .accept_security_context_impl(builder)
            .and_then(|mut g| g.resolve_to_result())
            .map_err(|e| NtlmError::Refused(sspi_err(e)))?;
        self.ctx
            .complete_auth_token(&mut output)
            .map_err(|e| NtlmError::Refused(sspi_err(e)))?;
        // sspi verifies only the MIC, which a client may leave out: prove the password here too.
        let pw_hash = md4::Md4::digest(utf16le(password.expose_secret()));
        let mut identity = utf16le(&wire_user.to_uppercase());
        identity.extend_from_slice(wire_domain);
        let ntowf = hmac_md5(&pw_hash, &[&identity])?;
        let server_challenge = self
            .challenge
            .get(24..32)
            .ok_or_else(|| NtlmError::Handshake("our CHALLENGE is short".into()))?;
        let proof = hmac_md5(&ntowf, &[server_challenge, &nt_response[16..]])?;
        if !crate::secret_eq(&proof, &nt_response[..16]) {
            return Err(bad("NTProofStr does not match the password"));
        }
        self.user = Some(user.clone());
        Ok(Accepted::User(user.clone()))
    }

    /// The account this connection authenticated as.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn wrap(&mut self, plain: &[u8]) -> Result<Vec<u8>, NtlmError> {
        seal_with(&mut self.ctx, plain)
    }

    pub fn unwrap(&mut self, body: &[u8]) -> Result<Vec<u8>, NtlmError> {
        unseal_with(&mut self.ctx, body)
    }
}

impl Default for Acceptor {
    fn default() -> Self {
        Acceptor::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Vec<(String, SecretString)> {
        vec![("svc-mailboxd".into(), SecretString::from("Corr3ct-horse"))]
    }

    fn handshake(
        user: &str,
        pw: &str,
        client_cb: Option<&[u8]>,
        server_cb: Option<&[u8]>,
        hardening: CbtHardening,
    ) -> Result<(Initiator, Acceptor), NtlmError> {
        let (mut client, negotiate) =
            Initiator::start(user, &SecretString::from(pw), "iqsvc01", client_cb)?;
        let mut server = Acceptor::new();
        let Accepted::Challenge(challenge) =
            server.step(&negotiate, &users(), server_cb, hardening)?
        else {
            panic!("expected a challenge");
        };
        let auth = client.authenticate(&challenge)?;
        match server.step(&auth, &users(), server_cb, hardening)? {
            Accepted::User(u) => assert_eq!(u, "svc-mailboxd"),
            Accepted::Challenge(_) => panic!("expected the user"),
        }
        Ok((client, server))
    }

    #[test]
    fn sealed_messages_travel_both_ways_in_sequence() {
        let (mut c, mut s) = handshake(
            "CORP\\svc-mailboxd",
            "Corr3ct-horse",
            None,
            None,
            CbtHardening::Relaxed,
        )
        .expect("handshake");
        for i in 0..3 {
            let msg = format!("<s:Envelope>request {i} ü</s:Envelope>");
            let body = c.wrap(msg.as_bytes()).expect("seal");
            assert!(find(&body, b"request").is_none(), "plaintext leaked");
            assert_eq!(s.unwrap(&body).expect("unseal"), msg.as_bytes());
            let reply = s.wrap(b"<reply/>").expect("seal reply");
            assert_eq!(c.unwrap(&reply).expect("unseal reply"), b"<reply/>");
        }
    }

    #[test]
    fn wrong_password_and_wrong_user_are_refused() {
        assert!(matches!(
            handshake("svc-mailboxd", "wrong", None, None, CbtHardening::Relaxed),
            Err(NtlmError::Refused(_))
        ));
        assert!(matches!(
            handshake(
                "administrator",
                "Corr3ct-horse",
                None,
                None,
                CbtHardening::Relaxed
            ),
            Err(NtlmError::Refused(_))
        ));
    }

    #[test]
    fn a_flipped_bit_is_detected() {
        let (mut c, mut s) = handshake(
            "svc-mailboxd",
            "Corr3ct-horse",
            None,
            None,
            CbtHardening::Relaxed,
        )
        .expect("handshake");
        let mut body = c.wrap(b"<s:Envelope/>").expect("seal");
        let at = body.len() - 30;
        body[at] ^= 1;
        assert!(matches!(s.unwrap(&body), Err(NtlmError::Seal(_))));
    }

    #[test]
    fn channel_binding_must_match_the_servers_certificate() {
        let ours = tls_server_end_point(b"certificate A");
        let theirs = tls_server_end_point(b"certificate B");
        handshake(
            "svc-mailboxd",
            "Corr3ct-horse",
            Some(&ours),
            Some(&ours),
            CbtHardening::Strict,
        )
        .expect("matching binding");
        assert!(
            handshake(
                "svc-mailboxd",
                "Corr3ct-horse",
                Some(&theirs),
                Some(&ours),
                CbtHardening::Relaxed
            )
            .is_err(),
            "a binding to another certificate (a TLS man in the middle) is refused"
        );
        assert!(
            handshake(
                "svc-mailboxd",
                "Corr3ct-horse",
                None,
                Some(&ours),
                CbtHardening::Strict
            )
            .is_err(),
            "strict hardening wants a binding"
        );
        handshake(
            "svc-mailboxd",
            "Corr3ct-horse",
            None,
            Some(&ours),
            CbtHardening::Relaxed,
        )
        .expect("relaxed lets a client without binding in");
    }

    #[test]
    fn framing_matches_the_documented_layout() {
        let sealed = Sealed {
            signature: vec![1; 16],
            ciphertext: b"0123456789".to_vec(),
        };
        let body = frame(&sealed, 10);
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=10\r\n"));
        assert!(body.ends_with(b"0123456789--Encrypted Boundary--\r\n"));
        let (back, len) = unframe(&body).expect("unframe");
        assert_eq!(
            (back.signature, back.ciphertext, len),
            (vec![1; 16], b"0123456789".to_vec(), 10)
        );
        // The IIS spelling with a space.
        let iis = String::from_utf8_lossy(&body)
            .replace("--Encrypted Boundary--", "-- Encrypted Boundary--");
        assert!(unframe(iis.as_bytes()).is_ok());
        for cut in [0, 40, 150, body.len() - 30] {
            assert!(unframe(&body[..cut]).is_err(), "truncated at {cut}");
        }
    }
}
