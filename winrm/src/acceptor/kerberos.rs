//! The server half of Kerberos (the lab's WinRM listener): the service key from an MIT keytab
//! (sspi reads none) and sspi's acceptor for one connection.

use std::time::Duration;

use sspi::{
    BufferType, CredentialsBuffers, DataRepresentation, Kerberos, KerberosConfig, SecurityBuffer,
    SecurityStatus, ServerRequestFlags, Sspi, SspiImpl,
};

use picky_krb::constants::key_usages::{AP_REQ_AUTHENTICATOR, TICKET_REP};
use picky_krb::crypto::CipherSuite;
use picky_krb::data_types::{Authenticator, EncTicketPart};
use picky_krb::gss_api::KrbMessage;
use picky_krb::messages::ApReq;

use super::ntlm::CbtHardening;
use crate::kerberos::{TcpKdc, kerr};
use crate::ntlm::{NtlmError, seal_with, unseal_with};

/// One key of an MIT keytab.
#[derive(Clone)]
pub struct KeytabEntry {
    /// Principal name components, e.g. `["HTTP", "lab.corp.example"]`.
    pub components: Vec<String>,
    pub realm: String,
    pub enctype: u16,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for KeytabEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{} (enctype {}, key [REDACTED])",
            self.components.join("/"),
            self.realm,
            self.enctype
        )
    }
}

/// Reads an MIT keytab (format 0x0502), as `samba-tool domain exportkeytab` and `ktpass` write it.
pub fn read_keytab(data: &[u8]) -> Result<Vec<KeytabEntry>, String> {
    fn take<'a>(d: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if d.len() < n {
            return Err("truncated keytab".into());
        }
        let (a, b) = d.split_at(n);
        *d = b;
        Ok(a)
    }
    fn u16be(d: &mut &[u8]) -> Result<u16, String> {
        let b = take(d, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn string(d: &mut &[u8]) -> Result<String, String> {
        let n = u16be(d)? as usize;
        Ok(String::from_utf8_lossy(take(d, n)?).into_owned())
    }
    let mut d = data;
    if take(&mut d, 2)? != [5, 2] {
        return Err("not an MIT keytab (version 0x0502)".into());
    }
    let mut out = Vec::new();
    while d.len() >= 4 {
        let b = take(&mut d, 4)?;
        let size = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let len = size.unsigned_abs() as usize;
        let mut e = take(&mut d, len)?;
        if size <= 0 {
            continue; // a hole left by a deleted entry
        }
        let ncomp = u16be(&mut e)? as usize;
        let realm = string(&mut e)?;
        let mut components = Vec::with_capacity(ncomp);
        for _ in 0..ncomp {
            components.push(string(&mut e)?);
        }
        take(&mut e, 4 + 4 + 1)?; // name type, timestamp, 8-bit kvno
        let enctype = u16be(&mut e)?;
        let klen = u16be(&mut e)? as usize;
        let key = take(&mut e, klen)?.to_vec();
        out.push(KeytabEntry {
            components,
            realm,
            enctype,
            key,
        });
    }
    Ok(out)
}

/// The lab's Kerberos acceptor for one connection.
pub struct KrbAcceptor {
    ctx: Kerberos,
    user: Option<String>,
    /// The service key, kept to read the authenticator's channel binding.
    key: Vec<u8>,
}

/// The channel-binding hash in the AP-REQ's authenticator checksum (RFC 4121 §4.1.1.2, octets
/// 4..20 of a 0x8003 checksum), read with the service key; `None` when absent or all zeros.
fn client_binding(token: &[u8], service_key: &[u8]) -> Result<Option<[u8; 16]>, NtlmError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| NtlmError::Refused(format!("{what}: {e}"));
    let ap_req: ApReq = KrbMessage::<ApReq>::decode_application_krb_message(token)
        .map_err(|e| bad("not a Kerberos AP-REQ", &e))?
        .0
        .krb_msg;
    let ticket = &ap_req.0.ticket.0.0.enc_part.0;
    let cipher = CipherSuite::try_from(ticket.etype.0.0.as_slice())
        .map_err(|e| bad("ticket encryption type", &e))?
        .cipher();
    let plain = cipher
        .decrypt(service_key, TICKET_REP, &ticket.cipher.0.0)
        .map_err(|e| bad("ticket", &e))?;
    let ticket: EncTicketPart =
        picky_asn1_der::from_bytes(&plain).map_err(|e| bad("ticket", &e))?;
    let session_key = &ticket.0.key.0.key_value.0.0;
    let auth = &ap_req.0.authenticator.0;
    let cipher = CipherSuite::try_from(auth.etype.0.0.as_slice())
        .map_err(|e| bad("authenticator encryption type", &e))?
        .cipher();
    let plain = cipher
        .decrypt(session_key, AP_REQ_AUTHENTICATOR, &auth.cipher.0.0)
        .map_err(|e| bad("authenticator", &e))?;
    let auth: Authenticator =
        picky_asn1_der::from_bytes(&plain).map_err(|e| bad("authenticator", &e))?;
    let Some(cksum) = auth.0.cksum.0.as_ref() else {
        return Ok(None);
    };
    let value = &cksum.0.checksum.0.0;
    // 0x8003, the GSS-API checksum; DER may give the integer a leading zero octet.
    let kind = &cksum.0.cksumtype.0.0;
    let gss = kind
        .iter()
        .skip_while(|&&b| b == 0)
        .eq([0x80u8, 0x03].iter());
    let bnd: Option<[u8; 16]> = value.get(4..20).and_then(|b| b.try_into().ok());
    Ok(bnd.filter(|b| gss && b.iter().any(|&x| x != 0)))
}

/// The MD5 of a gss_channel_bindings_struct holding only application data, laid out as
/// RFC 4121 §4.1.1.2 (by way of RFC 1964 §1.1.1) hashes it: no addresses, lengths LE.
fn gss_binding_hash(application_data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    let mut md5 = md5::Md5::new();
    md5.update([0u8; 16]); // initiator and acceptor address types and lengths: none
    md5.update((application_data.len() as u32).to_le_bytes());
    md5.update(application_data);
    md5.finalize().into()
}

/// http.sys's channel-binding rule: a binding the client sent must match the TLS channel's;
/// a client that sent none gets in only when hardening is Relaxed (or there is no TLS).
fn check_binding(
    sent: Option<[u8; 16]>,
    ours: Option<&[u8]>,
    hardening: CbtHardening,
) -> Result<(), NtlmError> {
    match (sent, ours) {
        (Some(h), Some(b)) if h == gss_binding_hash(b) => Ok(()),
        (Some(_), Some(_)) => Err(NtlmError::Refused(
            "the Kerberos authenticator is bound to another TLS channel".into(),
        )),
        (None, Some(_)) if hardening == CbtHardening::Strict => Err(NtlmError::Refused(
            "the Kerberos authenticator carries no channel binding and the listener's CbtHardeningLevel is Strict".into(),
        )),
        _ => Ok(()),
    }
}

impl KeytabEntry {
    /// The AES256 key AD derives for a user account holding `spn` from its password (salt:
    /// the realm then the sAMAccountName, RFC 3962 string-to-key), as a keytab would hold it.
    pub fn from_password(
        spn: &str,
        realm: &str,
        sam: &str,
        password: &str,
    ) -> Result<KeytabEntry, String> {
        let salt = format!("{}{sam}", realm.to_uppercase());
        let key = CipherSuite::Aes256CtsHmacSha196
            .cipher()
            .generate_key_from_password(password.as_bytes(), salt.as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(KeytabEntry {
            components: spn.split('/').map(str::to_owned).collect(),
            realm: realm.to_uppercase(),
            enctype: 18,
            key,
        })
    }
}

/// AES256 (18) before AES128 (17): the key must match the ticket's enctype, and AD issues
/// AES256 tickets to accounts with `msDS-SupportedEncryptionTypes` 24.
pub fn service_key(entries: &[KeytabEntry], spn: &str) -> Option<KeytabEntry> {
    let wanted: Vec<&str> = spn.split('/').collect();
    [18u16, 17]
        .iter()
        .find_map(|t| {
            entries.iter().find(|e| {
                e.enctype == *t
                    && e.components.len() == wanted.len()
                    && e.components
                        .iter()
                        .zip(&wanted)
                        .all(|(a, b)| a.eq_ignore_ascii_case(b))
            })
        })
        .cloned()
}

impl KrbAcceptor {
    pub fn new(spn: &str, key: &KeytabEntry) -> Result<KrbAcceptor, NtlmError> {
        let parts: Vec<&str> = spn.split('/').collect();
        let props = sspi::kerberos::ServerProperties::new(
            &parts,
            None,
            Duration::from_secs(300),
            Some(key.key.clone().into()),
        )
        .map_err(kerr)?;
        // The KDC is not contacted to accept a ticket (no user-to-user).
        let cfg = KerberosConfig::new_with_kdc_url("tcp://127.0.0.1:88", "lab".into());
        let ctx = Kerberos::new_server_from_config(cfg, props).map_err(kerr)?;
        Ok(KrbAcceptor {
            ctx,
            user: None,
            key: key.key.clone(),
        })
    }

    /// Accepts the AP-REQ; returns the AP-REP for the client and the client's name.
    /// `binding` is the listener's `tls-server-end-point` data when it serves TLS: the
    /// authenticator must carry its hash when `hardening` is Strict, and a hash it carries
    /// must match (http.sys's rule for Negotiate, Kerberos included).
    pub fn accept(
        &mut self,
        ap_req: &[u8],
        binding: Option<&[u8]>,
        hardening: CbtHardening,
    ) -> Result<(Vec<u8>, String), NtlmError> {
        // sspi's acceptor checks the ticket and the authenticator but not the binding.
        check_binding(client_binding(ap_req, &self.key)?, binding, hardening)?;
        let mut creds: Option<CredentialsBuffers> = None;
        let mut input = vec![SecurityBuffer::new(ap_req.to_vec(), BufferType::Token)];
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let builder = self
            .ctx
            .accept_security_context()
            .with_credentials_handle(&mut creds)
            .with_context_requirements(
                ServerRequestFlags::MUTUAL_AUTH
                    | ServerRequestFlags::INTEGRITY
                    | ServerRequestFlags::CONFIDENTIALITY,
            )
            .with_target_data_representation(DataRepresentation::Native)
            .with_input(&mut input)
            .with_output(&mut output);
        let kdc = TcpKdc {
            timeout: Duration::from_secs(5),
        };
        let result = self
            .ctx
            .accept_security_context_impl(builder)
            .map_err(|e| NtlmError::Refused(e.to_string()))?
            .resolve_with_client(&kdc)
            .map_err(|e| NtlmError::Refused(e.to_string()))?;
        if !matches!(result.status, SecurityStatus::Ok) {
            return Err(NtlmError::Handshake(format!(
                "Kerberos accept ended with {:?}",
                result.status
            )));
        }
        let who = self
            .ctx
            .query_context_names()
            .map_err(kerr)?
            .username
            .account_name()
            .to_owned();
        self.user = Some(who.clone());
        Ok((output.swap_remove(0).buffer, who))
    }

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

/// Whether a Negotiate token is a raw Kerberos (krb5 GSS-API) token, as pywinrm, pykerberos
/// and mailboxd send it, rather than NTLM or SPNEGO.
pub fn is_krb5_token(token: &[u8]) -> bool {
    const KRB5_OID: [u8; 11] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02,
    ];
    if token.first() != Some(&0x60) {
        return false;
    }
    // DER length: short form, or 0x81/0x82 long form.
    let at = match token.get(1) {
        Some(l) if *l < 0x80 => 2,
        Some(0x81) => 3,
        Some(0x82) => 4,
        _ => return false,
    };
    token.get(at..at + KRB5_OID.len()) == Some(&KRB5_OID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keytab_entries_are_read_and_keys_never_printed() {
        // One entry: HTTP/lab.corp.example@CORP.EXAMPLE, enctype 18, a 32-byte key.
        let mut e = Vec::new();
        e.extend_from_slice(&2u16.to_be_bytes());
        for s in ["CORP.EXAMPLE", "HTTP", "lab.corp.example"] {
            e.extend_from_slice(&(s.len() as u16).to_be_bytes());
            e.extend_from_slice(s.as_bytes());
        }
        e.extend_from_slice(&1u32.to_be_bytes());
        e.extend_from_slice(&0u32.to_be_bytes());
        e.push(2);
        e.extend_from_slice(&18u16.to_be_bytes());
        e.extend_from_slice(&32u16.to_be_bytes());
        e.extend_from_slice(&[7u8; 32]);
        let mut kt = vec![5, 2];
        kt.extend_from_slice(&(-8i32).to_be_bytes());
        kt.extend_from_slice(&[0; 8]);
        kt.extend_from_slice(&(e.len() as i32).to_be_bytes());
        kt.extend_from_slice(&e);
        let entries = read_keytab(&kt).expect("keytab");
        assert_eq!(entries.len(), 1);
        let k = service_key(&entries, "HTTP/LAB.corp.example").expect("key");
        assert_eq!(
            (k.enctype, k.key.len(), k.realm.as_str()),
            (18, 32, "CORP.EXAMPLE")
        );
        assert!(!format!("{k:?}").contains("7, 7"));
        assert!(read_keytab(&kt[..kt.len() - 3]).is_err());
        assert!(read_keytab(b"\x05\x01").is_err());
    }

    #[test]
    fn tokens_are_told_apart() {
        let krb = [
            0x60, 0x82, 0x05, 0x00, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02,
            0x02, 0x01,
        ];
        assert!(is_krb5_token(&krb));
        let spnego = [
            0x60, 0x82, 0x05, 0x00, 0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02,
        ];
        assert!(!is_krb5_token(&spnego));
        assert!(!is_krb5_token(b"NTLMSSP\0\x01\0\0\0"));
        assert!(!is_krb5_token(&[]));
    }
}
