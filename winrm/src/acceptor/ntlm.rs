//! The server half of NTLM (the lab's WinRM listener): sspi's acceptor plus the two checks it
//! leaves to its caller: the account name (sspi accepts any wire user and domain with the
//! right password) and the NTProofStr (without a MIC, sspi accepts any password).

use hmac::{KeyInit, Mac};
use md4::Digest;
use secrecy::{ExposeSecret, SecretString};
use sspi::{
    AuthIdentity, AuthIdentityBuffers, BufferType, CredentialUse, DataRepresentation, Ntlm,
    SecurityBuffer, ServerRequestFlags, Sspi, SspiImpl, Username,
};

use crate::ntlm::{NtlmError, seal_with, sec_channel_bindings, sspi_err, unseal_with};

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
pub(super) fn field(msg: &[u8], at: usize) -> Option<&[u8]> {
    let hdr = msg.get(at..at + 8)?;
    let len = u16::from_le_bytes([hdr[0], hdr[1]]) as usize;
    let off = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
    msg.get(off..off.checked_add(len)?)
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

pub(super) fn from_utf16le(b: &[u8]) -> String {
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

/// The fields of an AUTHENTICATE message the acceptor checks itself.
struct Authenticate<'a> {
    /// The NTLMv2 response: NTProofStr(16), then the blob it proves.
    nt_response: &'a [u8],
    /// DomainName as sent (UTF-16LE).
    domain: &'a [u8],
    user: String,
}

impl<'a> Authenticate<'a> {
    /// NtChallengeResponse at 20, DomainName at 28, UserName at 36; NTLMv2 only.
    fn parse(token: &'a [u8]) -> Result<Authenticate<'a>, NtlmError> {
        let bad = |m: &str| NtlmError::Refused(m.to_owned());
        if token.get(8..12) != Some(&[3, 0, 0, 0]) {
            return Err(NtlmError::Handshake(
                "expected an AUTHENTICATE message".into(),
            ));
        }
        let nt_response = field(token, 20).ok_or_else(|| bad("no NtChallengeResponse"))?;
        let domain = field(token, 28).ok_or_else(|| bad("no DomainName field"))?;
        let user = from_utf16le(field(token, 36).ok_or_else(|| bad("no UserName field"))?);
        if nt_response.len() < 48 {
            return Err(bad("not an NTLMv2 response (NTLMv1 is not accepted)"));
        }
        Ok(Authenticate {
            nt_response,
            domain,
            user,
        })
    }
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
            return self.challenge(token);
        }
        if self.user.is_some() {
            return Err(NtlmError::Handshake(
                "a second AUTHENTICATE on an authenticated connection".into(),
            ));
        }
        let msg = Authenticate::parse(token)?;
        // sspi checks the password only; the account name is ours to check.
        let Some((user, password)) = users
            .iter()
            .find(|(u, _)| u.eq_ignore_ascii_case(&msg.user))
        else {
            return Err(NtlmError::Refused(format!(
                "unknown account {:?}",
                msg.user
            )));
        };
        let cb_sent = client_channel_binding(msg.nt_response);
        if binding.is_some() && hardening == CbtHardening::Strict && cb_sent.is_none() {
            return Err(NtlmError::Refused(
                "no channel binding over TLS (CbtHardeningLevel Strict)".into(),
            ));
        }
        // sspi compares a binding only when it is given one and the client sent one.
        let binding = binding.filter(|_| cb_sent.is_some());
        self.accept(token, user, password, binding)?;
        // sspi verifies only the MIC, which a client may leave out: prove the password here too.
        self.check_nt_proof(&msg, password)?;
        self.user = Some(user.clone());
        Ok(Accepted::User(user.clone()))
    }

    /// One `AcceptSecurityContext` call of sspi's NTLM server.
    fn sspi_accept(
        &mut self,
        creds: &mut Option<AuthIdentityBuffers>,
        input: &mut [SecurityBuffer],
        output: &mut [SecurityBuffer],
    ) -> sspi::Result<()> {
        let builder = self
            .ctx
            .accept_security_context()
            .with_credentials_handle(creds)
            .with_context_requirements(ServerRequestFlags::ALLOCATE_MEMORY)
            .with_target_data_representation(DataRepresentation::Native)
            .with_input(input)
            .with_output(output);
        self.ctx
            .accept_security_context_impl(builder)
            .and_then(|mut g| g.resolve_to_result())
            .map(|_| ())
    }

    /// NEGOTIATE → CHALLENGE.
    fn challenge(&mut self, token: &[u8]) -> Result<Accepted, NtlmError> {
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut input = vec![SecurityBuffer::new(token.to_vec(), BufferType::Token)];
        self.sspi_accept(&mut None, &mut input, &mut output)
            .map_err(|e| NtlmError::Handshake(sspi_err(e)))?;
        self.challenge = output.swap_remove(0).buffer;
        Ok(Accepted::Challenge(self.challenge.clone()))
    }

    /// sspi's half of AUTHENTICATE: the password (through the MIC and session key) and,
    /// when given, the channel binding.
    fn accept(
        &mut self,
        token: &[u8],
        user: &str,
        password: &SecretString,
        binding: Option<&[u8]>,
    ) -> Result<(), NtlmError> {
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
        if let Some(b) = binding {
            input.push(SecurityBuffer::new(
                sec_channel_bindings(b),
                BufferType::ChannelBindings,
            ));
        }
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        self.sspi_accept(&mut creds, &mut input, &mut output)
            .map_err(|e| NtlmError::Refused(sspi_err(e)))?;
        self.ctx
            .complete_auth_token(&mut output)
            .map_err(|e| NtlmError::Refused(sspi_err(e)))?;
        Ok(())
    }

    /// NTProofStr = HMAC-MD5(NTOWFv2, server challenge ‖ the rest of the response).
    fn check_nt_proof(
        &self,
        msg: &Authenticate<'_>,
        password: &SecretString,
    ) -> Result<(), NtlmError> {
        let pw_hash = md4::Md4::digest(utf16le(password.expose_secret()));
        let mut identity = utf16le(&msg.user.to_uppercase());
        identity.extend_from_slice(msg.domain);
        let ntowf = hmac_md5(&pw_hash, &[&identity])?;
        let server_challenge = self
            .challenge
            .get(24..32)
            .ok_or_else(|| NtlmError::Handshake("our CHALLENGE is short".into()))?;
        let proof = hmac_md5(&ntowf, &[server_challenge, &msg.nt_response[16..]])?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &proof[..],
            &msg.nt_response[..16],
        )) {
            return Err(NtlmError::Refused(
                "NTProofStr does not match the password".into(),
            ));
        }
        Ok(())
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
    use crate::ntlm::{Initiator, Sealed, find, frame, tls_server_end_point, unframe};

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
