//! Arbitrary bytes as a WinRM host's reply: SOAP, faults, Receive streams, the encrypted
//! multipart framing, CLIXML. Run: `cargo fuzz run winrm_reply fuzz/corpus/winrm_reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    winrm::read_untrusted_reply(data);
});
