//! Kerberos for WinRM, both ends, on `sspi`: the client logs on with the account's password
//! against the domain's KDC (over TCP) and asks for a ticket to the host's `HTTP/<fqdn>` SPN;
//! the lab accepts it with the SPN's key from a keytab. Messages are sealed as with NTLM, with
//! the Kerberos wrap token (60 bytes for AES) as the header.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sspi::network_client::NetworkClient;
use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, Credentials, CredentialsBuffers,
    DataRepresentation, Kerberos, KerberosConfig, NetworkProtocol, NetworkRequest, SecurityBuffer,
    Sspi, SspiImpl, Username,
};

use super::ntlm::{NtlmError, seal_with, sec_channel_bindings, unseal_with};

/// Talks to the KDC over TCP (Samba answers UDP requests with a PAC too large for UDP).
pub(crate) struct TcpKdc {
    pub(crate) timeout: Duration,
}

impl NetworkClient for TcpKdc {
    fn send(&self, request: &NetworkRequest) -> sspi::Result<Vec<u8>> {
        let fail = |m: String| sspi::Error::new(sspi::ErrorKind::NoAuthenticatingAuthority, m);
        if request.protocol != NetworkProtocol::Tcp {
            return Err(fail(format!(
                "KDC {}: only tcp:// is supported",
                request.url
            )));
        }
        let host = request.url.host_str().unwrap_or("localhost");
        let port = request.url.port().unwrap_or(88);
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| fail(format!("KDC {host}:{port}: {e}")))?
            .next()
            .ok_or_else(|| fail(format!("KDC {host}:{port} has no address")))?;
        let mut s = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|e| fail(format!("KDC {addr}: {e}")))?;
        let _ = s.set_read_timeout(Some(self.timeout));
        let _ = s.set_write_timeout(Some(self.timeout));
        // `data` carries its 4-byte length already; sspi wants the reply with its own.
        s.write_all(&request.data)
            .map_err(|e| fail(format!("KDC {addr}: {e}")))?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len)
            .map_err(|e| fail(format!("KDC {addr}: {e}")))?;
        let n = u32::from_be_bytes(len) as usize;
        if n > 1 << 20 {
            return Err(fail(format!("KDC {addr}: a {n}-byte reply")));
        }
        let mut out = len.to_vec();
        out.resize(4 + n, 0);
        s.read_exact(&mut out[4..])
            .map_err(|e| fail(format!("KDC {addr}: {e}")))?;
        Ok(out)
    }
}

pub(crate) fn kerr(e: sspi::Error) -> NtlmError {
    NtlmError::Handshake(e.to_string())
}

/// The client half of one Kerberos context (= one TCP connection to the host).
pub struct KrbInitiator {
    ctx: Kerberos,
    creds: Option<CredentialsBuffers>,
    spn: String,
    kdc: TcpKdc,
    /// SEC_CHANNEL_BINDINGS for the first step, when Kerberos runs inside TLS.
    binding: Option<Vec<u8>>,
}

impl KrbInitiator {
    /// Logs on at the KDC and returns the AP-REQ for `spn`. Blocking (KDC round trips):
    /// call it off the async runtime. `channel_binding` is the `tls-server-end-point` data
    /// when Kerberos runs inside TLS: it goes into the authenticator's checksum (RFC 4121
    /// §4.1.1.2, the Bnd field), which http.sys requires with CbtHardeningLevel Strict.
    pub fn start(
        user: &str,
        password: &SecretString,
        kdc_url: &str,
        spn: &str,
        timeout: Duration,
        channel_binding: Option<&[u8]>,
    ) -> Result<(KrbInitiator, Vec<u8>), NtlmError> {
        let cfg = KerberosConfig::new_with_kdc_url(kdc_url, "mailboxd".into());
        let mut ctx = Kerberos::new_client_from_config(cfg).map_err(kerr)?;
        let username = Username::parse(user)
            .map_err(|e| NtlmError::Handshake(format!("user name {user:?}: {e}")))?;
        let identity = Credentials::AuthIdentity(AuthIdentity {
            username,
            password: password.expose_secret().to_owned().into(),
        });
        let creds = ctx
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Outbound)
            .with_auth_data(&identity)
            .execute(&mut ctx)
            .map_err(kerr)?
            .credentials_handle;
        let mut me = KrbInitiator {
            ctx,
            creds,
            spn: spn.to_owned(),
            kdc: TcpKdc { timeout },
            binding: channel_binding.map(sec_channel_bindings),
        };
        let token = me.step(None)?;
        Ok((me, token))
    }

    fn step(&mut self, input: Option<&[u8]>) -> Result<Vec<u8>, NtlmError> {
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        // sspi's Kerberos client wants an input buffer even on the first call (empty then).
        let mut input_bufs = vec![SecurityBuffer::new(
            input.map(<[u8]>::to_vec).unwrap_or_default(),
            BufferType::Token,
        )];
        if let Some(b) = self.binding.take() {
            input_bufs.push(SecurityBuffer::new(b, BufferType::ChannelBindings));
        }
        let mut builder = self
            .ctx
            .initialize_security_context()
            .with_credentials_handle(&mut self.creds)
            .with_context_requirements(
                ClientRequestFlags::MUTUAL_AUTH
                    | ClientRequestFlags::INTEGRITY
                    | ClientRequestFlags::CONFIDENTIALITY
                    | ClientRequestFlags::SEQUENCE_DETECT
                    | ClientRequestFlags::REPLAY_DETECT,
            )
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name(&self.spn)
            .with_input(&mut input_bufs)
            .with_output(&mut output);
        let kdc = &self.kdc;
        self.ctx
            .initialize_security_context_impl(&mut builder)
            .map_err(kerr)?
            .resolve_with_client(kdc)
            .map_err(|e| NtlmError::Refused(e.to_string()))?;
        Ok(output.swap_remove(0).buffer)
    }

    /// Checks the host's AP-REP (mutual authentication: it really holds the SPN's key).
    pub fn finish(&mut self, ap_rep: &[u8]) -> Result<(), NtlmError> {
        self.step(Some(ap_rep)).map(|_| ())
    }

    pub fn wrap(&mut self, plain: &[u8]) -> Result<Vec<u8>, NtlmError> {
        seal_with(&mut self.ctx, plain)
    }

    pub fn unwrap(&mut self, body: &[u8]) -> Result<Vec<u8>, NtlmError> {
        unseal_with(&mut self.ctx, body)
    }
}
