//! WS-Management / WinRS (MS-WSMV): the protocol and a client that runs a command in
//! a cmd shell on a Windows host, with stdin, and collects its output. The envelopes (`soap`)
//! are shared with the lab's server; the server halves of NTLM and Kerberos are in
//! [`acceptor`], behind the `acceptor` feature, because only a server needs them.

#[cfg(feature = "acceptor")]
pub mod acceptor;
mod client;
pub mod clixml;
pub mod credssp;
pub mod error;
pub mod kerberos;
pub mod ntlm;
pub mod soap;
pub mod tls;
mod transport;

/// The XML element tree the envelopes are read with (its own crate: IdentityIQ plans are read
/// with it too).
pub use xml;

pub use client::{
    Auth, ClientConfig, CommandOutput, Process, ReceiveChunk, Shell, ShellOptions, Stdin,
    WinrmClient, parse_receive,
};
pub use error::{KdcRefusal, WinrmError, WsmanFault};

/// Everything the client does with bytes a host sends back, for the fuzz target
/// (`fuzz/fuzz_targets/winrm_reply.rs`) and its smoke test: it must never panic.
#[doc(hidden)]
pub fn read_untrusted_reply(data: &[u8]) {
    let _ = ntlm::unframe(data);
    let _ = clixml::readable(data);
    let text = String::from_utf8_lossy(data);
    if let Ok(env) = soap::Envelope::parse(&text) {
        if let Some(f) = env.fault() {
            let e = WinrmError::from_fault(f);
            let _ = (e.to_string(), e.kind(), e.is_transient());
        }
        let _ = parse_receive(&env.body, "00000000-0000-0000-0000-000000000000");
        let _ = (env.action(), env.relates_to(), env.selector("ShellId"));
    }
}
