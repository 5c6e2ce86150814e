//! mailboxd: provisions hybrid Exchange remote mailboxes for joiner and leaver events.
//! See ARCHITECTURE.md for the map.

// `pub` means used outside the daemon (the binary, the tests, the fuzz targets): everything
// else is `pub(crate)`, so the compiler finds dead code.
#![warn(unreachable_pub)]

pub mod access;
mod admin;
mod admin_guard;
mod admin_serve;
mod admin_tls;
pub mod alert;
pub mod app;
pub mod audit;
mod backoff;
pub mod broker;
pub mod budget;
pub mod check;
mod circuit;
pub mod cli;
pub mod cloud;
pub mod config;
mod dashboard;
pub mod directory;
pub mod event;
pub mod exchange;
mod failpoint;
/// The fuzz targets' entry points (`fuzz/`), also replayed over their corpus by `cargo test`.
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
mod health;
mod http_intake;
mod identityiq;
pub mod intake;
pub mod job;
mod metrics;
pub mod otlp;
mod outbox;
pub mod outcome;
mod outcome_callback;
mod outcome_http;
mod outcome_publisher;
pub mod publish;
pub mod reconcile;
mod shutdown;
mod signal;
pub mod signin;
pub mod store;
pub mod telemetry;
mod text_enum;
#[cfg(feature = "lab")]
pub mod tools;
mod trace;
pub mod windows_host;
mod worker;

use std::sync::OnceLock;

/// This process's name in leases and attempt records: `host:pid:random`.
pub fn replica_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into());
        let tag = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}:{}:{}", std::process::id(), &tag[..6])
    })
}

/// Compares a presented secret with the expected one in constant time, so response timing
/// does not reveal how much of a password or token matched.
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}
