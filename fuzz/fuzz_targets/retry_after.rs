//! `mailboxd::fuzzing::retry_after` under libFuzzer: see that function for what the bytes
//! are, and the README ("Fuzzing") for how to run it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailboxd::fuzzing::retry_after(data));
