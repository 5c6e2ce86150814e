//! What a credential looks like in what senders send: one rule for the names of IdentityIQ
//! attributes and of JSON keys, so that the poison copy of either format drops the same.

/// Whether a name looks like a credential: `pwd`, `pwdText`, or anything containing
/// `password`, `passwd`, `secret`, `token` or `credential` (any case). `pwdLastSet` is not.
pub fn is_credential(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "pwd"
        || n == "pwdtext"
        || ["password", "passwd", "secret", "token", "credential"]
            .iter()
            .any(|w| n.contains(w))
}

/// Whether a text mentions a credential-looking word anywhere (ASCII, any case): what is
/// known of a body that could not be parsed.
pub(crate) fn mentions_credential(body: &[u8]) -> bool {
    let lower = body.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "credential", "pwd"]
        .iter()
        .any(|w| lower.windows(w.len()).any(|x| x == w.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_are_recognised() {
        for n in [
            "pwdText",
            "password",
            "ExchangePassword",
            "clientSecret",
            "PASSWORD",
            "access_token",
            "Credential",
            "pwd",
        ] {
            assert!(is_credential(n), "{n}");
        }
        for n in ["sAMAccountName", "username", "flow", "pwdLastSet"] {
            assert!(!is_credential(n), "{n}");
        }
        assert!(mentions_credential(b"{\"PassWord\": 1"));
        assert!(!mentions_credential(b"{\"sam\": 1"));
    }
}
