//! Tools beside the daemon that need the lab: `mailboxd lab`, `mailboxd demo` and
//! `mailboxd bench`. Only this module imports the lab crate; the pipeline never does, and a
//! build without the `lab` feature leaves all of it out.

pub mod bench;
pub mod bench_replicas;
pub mod bench_winrm;
pub mod demo;
pub mod lab;
pub mod lab_setup;
