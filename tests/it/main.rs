//! The integration suites, one module each, in one test binary: `tests/common` and the
//! product are compiled and linked once instead of once per suite. One suite:
//! `cargo test --test it pipeline::`.
//!
//! Suites that need a process of their own stay separate binaries: `tests/tcp_nodelay.rs`
//! reads back every socket of its process (other suites' connections to the same PostgreSQL
//! and RabbitMQ would be counted), `tests/chaos` closes every broker connection and must not
//! run beside anything, and `tests/architecture.rs` and `tests/docs.rs` only read files.
//!
//! What the suites here share as one process, and why that is safe: failpoints and
//! environment variables go only to spawned daemons (`env.spawn_daemon`, never `set_var`);
//! in-process daemons share the one metrics recorder, so a test scraping `/metrics` holds
//! `common::METRICS_SCRAPE` (a scrape sets the queue gauges from its own database first), and
//! counters are asserted as "at least this test's share"; `admin_tls` sends SIGHUP to the
//! process, which only daemons with an HTTPS admin listener act on.

#[path = "../common/mod.rs"]
mod common;

mod account_lookup;
mod admin_api;
mod admin_hardening;
mod admin_tls;
mod alerts;
mod cleanup;
mod cli;
mod cloud_ad;
mod cloud_graph;
mod cmdlet_grants;
mod dashboard;
mod dashboard_browser;
mod deploy_artifacts;
mod directory;
mod exchange_names;
mod failure_groups;
mod fuzz_corpus;
mod graph;
mod hostile_input;
mod http_intake;
mod intake;
mod intake_corpus;
mod kerberos_lockout;
mod lab_exchange;
mod lab_faults;
mod lab_host_policy;
mod lab_ldap;
mod lab_mailbox_types;
mod lab_movers;
mod lab_rehire;
mod lab_snapin_rights;
mod lab_start_dates;
mod lab_windows_errors;
mod midpoint;
mod otlp;
mod outcome_callback;
mod outcomes;
mod peer_clients;
mod pipeline;
mod planner_stats;
mod reconcile;
mod replicas;
mod resilience;
mod scrape_counts;
mod second_hop;
mod security;
mod session_drop;
mod session_limit;
mod signin;
mod store;
mod templates_syntax;
mod warm_sessions;
mod winrm_auth;
mod winrm_credssp;
mod winrm_kerberos;
mod winrm_ntlm_denied;
mod winrm_protocol;
