//! A WS-Management / WinRS client (notes/winrm.md): run a command in a cmd shell on a
//! Windows host, with stdin, and collect its output. The SOAP and XML helpers are shared
//! with the lab's server.

mod client;
pub mod clixml;
pub mod error;
pub mod kerberos;
pub mod ntlm;
pub mod soap;
mod transport;
pub mod xml;

pub use client::{
    Auth, ClientConfig, CommandOutput, Process, ReceiveChunk, Shell, ShellOptions, WinrmClient,
    parse_receive,
};
pub use error::{WinrmError, WsmanFault};

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
