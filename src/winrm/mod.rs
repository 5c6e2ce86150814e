//! A WS-Management / WinRS client (notes/winrm.md): run a command in a cmd shell on a
//! Windows host, with stdin, and collect its output. The SOAP and XML helpers are shared
//! with the lab's server.

mod client;
pub mod clixml;
pub mod error;
pub mod ntlm;
pub mod soap;
mod transport;
pub mod xml;

pub use client::{
    Auth, ClientConfig, CommandOutput, Process, ReceiveChunk, Shell, ShellOptions, WinrmClient,
    parse_receive,
};
pub use error::{WinrmError, WsmanFault};
