//! The integration suites, one module each, in one test binary: `tests/common` and the
//! product are compiled and linked once instead of once per suite. One suite:
//! `cargo test --test it pipeline::`.
//!
//! Suites that need a process of their own stay separate binaries: `tests/tcp_nodelay.rs`
//! reads back every socket of its process (other suites' connections to the same PostgreSQL
//! and RabbitMQ would be counted), `tests/chaos` closes every broker connection and must not
//! run beside anything, and `tests/architecture.rs` and `tests/docs.rs` only read files.

#[path = "../common/mod.rs"]
mod common;

mod admin_api;
mod admin_hardening;
mod admin_tls;
mod alerts;
mod cleanup;
mod cli;
mod dashboard;
mod dashboard_browser;
mod deploy_artifacts;
mod directory;
mod fuzz_corpus;
mod hostile_input;
mod intake;
mod intake_corpus;
mod kerberos_lockout;
mod lab_exchange;
mod lab_faults;
mod lab_host_policy;
mod lab_ldap;
mod lab_windows_errors;
mod outcomes;
mod peer_clients;
mod pipeline;
mod reconcile;
mod replicas;
mod resilience;
mod second_hop;
mod security;
mod session_limit;
mod signin;
mod store;
mod templates_syntax;
mod warm_sessions;
mod winrm_auth;
mod winrm_credssp;
mod winrm_kerberos;
mod winrm_protocol;
