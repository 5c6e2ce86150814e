//! Who may post to the HTTP intake: the `Authorization` header read (RFC 9110 §11.6.2:
//! `scheme SP token68`, the scheme case-insensitive), a bearer token (RFC 6750 §2.1) or
//! Basic user and password (RFC 7617: base64 of `user:password`, UTF-8) compared with the
//! configured ones in constant time, on their SHA-256 digests so that neither the content
//! nor the length of a secret shows in the time an answer takes.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::config;

/// The header values are read up to this length; anything longer is refused unread.
const MAX_HEADER: usize = 8 * 1024;

/// What an `Authorization` header presents.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented {
    Bearer(String),
    Basic { user: String, password: String },
}

/// Why a request is refused, for the `WWW-Authenticate` answer and the log (never the
/// value presented).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No `Authorization` header, or a scheme this intake does not take.
    Missing,
    /// A header that is not `scheme credentials` as the scheme defines them.
    Malformed,
    /// Well-formed credentials that are not the configured ones.
    Wrong,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "no credentials (Authorization: Bearer or Basic)",
            Refusal::Malformed => "the Authorization header is malformed",
            Refusal::Wrong => "the credentials are not the configured ones",
        }
    }
}

/// Reads an `Authorization` header value. Outside data: the fuzz target `http_authorization`
/// runs it.
pub(crate) fn parse(value: &[u8]) -> Result<Presented, Refusal> {
    if value.len() > MAX_HEADER {
        return Err(Refusal::Malformed);
    }
    let text = std::str::from_utf8(value).map_err(|_| Refusal::Malformed)?;
    let (scheme, rest) = text.trim().split_once(' ').ok_or(Refusal::Missing)?;
    let credentials = rest.trim_start_matches(' ');
    if credentials.is_empty() || credentials.contains(char::is_whitespace) {
        return Err(Refusal::Malformed);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Presented::Bearer(credentials.to_owned()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Refusal::Missing);
    }
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .map_err(|_| Refusal::Malformed)?;
    let pair = String::from_utf8(decoded).map_err(|_| Refusal::Malformed)?;
    // RFC 7617 §2: the user-id cannot contain a colon; the password may.
    let (user, password) = pair.split_once(':').ok_or(Refusal::Malformed)?;
    Ok(Presented::Basic {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// The configured credentials, kept as digests.
pub(crate) struct Credentials {
    token: Option<[u8; 32]>,
    basic: Option<([u8; 32], [u8; 32])>,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Credentials {
    pub(crate) fn from_config(cfg: &config::HttpIntake) -> Credentials {
        let secret = |s: &Option<SecretString>| s.as_ref().map(|s| digest(s.expose_secret()));
        Credentials {
            token: secret(&cfg.token),
            basic: cfg
                .username
                .as_deref()
                .zip(secret(&cfg.password))
                .map(|(u, p)| (digest(u), p)),
        }
    }

    /// Whether `header` (the `Authorization` value, if any) presents a configured credential.
    pub(crate) fn check(&self, header: Option<&[u8]>) -> Result<(), Refusal> {
        let presented = parse(header.ok_or(Refusal::Missing)?)?;
        let ok = match (&presented, &self.token, &self.basic) {
            (Presented::Bearer(t), Some(want), _) => crate::secret_eq(&digest(t), want),
            (Presented::Basic { user, password }, _, Some((want_user, want_password))) => {
                // Both compared, whichever differs: the time does not tell which.
                let u = crate::secret_eq(&digest(user), want_user);
                let p = crate::secret_eq(&digest(password), want_password);
                u & p
            }
            // A scheme this intake was not configured for.
            _ => return Err(Refusal::Missing),
        };
        if ok { Ok(()) } else { Err(Refusal::Wrong) }
    }

    /// The `WWW-Authenticate` challenges (RFC 9110 §11.6.1), one per configured scheme;
    /// a wrong or malformed bearer token is told `invalid_token` (RFC 6750 §3).
    pub(crate) fn challenges(&self, refusal: Refusal) -> Vec<String> {
        let mut out = Vec::new();
        if self.token.is_some() {
            out.push(match refusal {
                Refusal::Missing => r#"Bearer realm="mailboxd""#.to_owned(),
                _ => r#"Bearer realm="mailboxd", error="invalid_token""#.to_owned(),
            });
        }
        if self.basic.is_some() {
            out.push(r#"Basic realm="mailboxd", charset="UTF-8""#.to_owned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> Credentials {
        let cfg = config::HttpIntake {
            token: Some(SecretString::from("t0k3n-abcdef")),
            username: Some("isc".into()),
            password: Some(SecretString::from("pa:ss")),
            ..config::HttpIntake::default()
        };
        Credentials::from_config(&cfg)
    }

    #[test]
    fn bearer_and_basic_are_read_as_rfc_6750_and_7617_define_them() {
        assert_eq!(
            parse(b"bEaReR  abc.def-_~+/="),
            Ok(Presented::Bearer("abc.def-_~+/=".into()))
        );
        // "isc:pa:ss": the password keeps its colon.
        assert_eq!(
            parse(b"Basic aXNjOnBhOnNz"),
            Ok(Presented::Basic {
                user: "isc".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(parse(b"Basic !!!"), Err(Refusal::Malformed));
        assert_eq!(parse(b"Basic aXNj"), Err(Refusal::Malformed), "no colon");
        assert_eq!(parse(b"Bearer a b"), Err(Refusal::Malformed));
        assert_eq!(parse(b"Bearer"), Err(Refusal::Missing));
        assert_eq!(parse(b"Digest x"), Err(Refusal::Missing));
        assert_eq!(parse(b"Bearer \xff"), Err(Refusal::Malformed));
        assert_eq!(
            parse(&[b'a'; MAX_HEADER + 1]),
            Err(Refusal::Malformed),
            "too long"
        );
    }

    #[test]
    fn only_the_configured_credentials_pass() {
        let c = configured();
        assert_eq!(c.check(Some(b"Bearer t0k3n-abcdef")), Ok(()));
        assert_eq!(c.check(Some(b"Basic aXNjOnBhOnNz")), Ok(()));
        assert_eq!(c.check(Some(b"Bearer t0k3n-abcdeF")), Err(Refusal::Wrong));
        assert_eq!(c.check(Some(b"Bearer t0k3n")), Err(Refusal::Wrong));
        // isc:pa:sx and isd:pa:ss
        assert_eq!(c.check(Some(b"Basic aXNjOnBhOnN4")), Err(Refusal::Wrong));
        assert_eq!(c.check(Some(b"Basic aXNkOnBhOnNz")), Err(Refusal::Wrong));
        assert_eq!(c.check(None), Err(Refusal::Missing));
        let token_only = Credentials {
            basic: None,
            ..configured()
        };
        assert_eq!(
            token_only.check(Some(b"Basic aXNjOnBhOnNz")),
            Err(Refusal::Missing)
        );
        assert_eq!(token_only.challenges(Refusal::Missing).len(), 1);
        assert!(c.challenges(Refusal::Wrong)[0].contains("invalid_token"));
    }
}
