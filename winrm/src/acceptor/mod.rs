//! The server halves of NTLM, Kerberos and CredSSP: what a WinRM listener needs to authenticate a
//! client. Only the lab uses them; the daemon's build leaves this module out (feature
//! `acceptor`), so no acceptor code ships in a production binary.

pub mod credssp;
pub mod kerberos;
pub mod ntlm;

pub use credssp::{CredSspAccepted, CredSspAcceptor, CredSspCert, DelegatedLogon};
pub use kerberos::{KeytabEntry, KrbAcceptor, is_krb5_token, read_keytab, service_key};
pub use ntlm::{Accepted, Acceptor, CbtHardening};
