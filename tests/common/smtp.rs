//! A real SMTP server for the alert emails: aiosmtpd capturing every message to a Maildir
//! (`tests/peers/smtp_sink.py`), optionally requiring a login.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailboxd::config::SmtpTls;

use super::TestEnv;

/// The capturing SMTP server, stopped when dropped.
pub struct SmtpSink {
    child: Child,
    dir: PathBuf,
}

impl SmtpSink {
    /// Accepts any sender without a login.
    pub fn start(port: u16, dir: &Path) -> SmtpSink {
        SmtpSink::spawn(port, dir, None)
    }

    /// Offers AUTH over plain SMTP and accepts only `user` / `password` (given to the sink
    /// through its environment, so no command line shows it).
    pub fn with_login(port: u16, dir: &Path, user: &str, password: &str) -> SmtpSink {
        SmtpSink::spawn(port, dir, Some((user, password)))
    }

    fn spawn(port: u16, dir: &Path, login: Option<(&str, &str)>) -> SmtpSink {
        let have = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status();
        assert!(
            have.is_ok_and(|s| s.success()),
            "aiosmtpd is missing: deploy/dev/services.sh installs it"
        );
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(dir.join(sub)).expect("Maildir folders");
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/smtp_sink.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .arg(port.to_string())
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((user, password)) = login {
            cmd.env("SINK_USER", user).env("SINK_PASSWORD", password);
        }
        let child = cmd.spawn().expect("start the SMTP sink");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the SMTP sink did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpSink {
            child,
            dir: dir.to_owned(),
        }
    }

    /// Every captured message, raw.
    pub fn messages(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("new"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Successful logins so far (sinks started `with_login`).
    pub fn logins(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("auth-ok"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Alerts to the capturing SMTP server on `port` (plain SMTP on loopback), for `to`.
pub fn send_to_sink(env: &mut TestEnv, port: u16, to: &str) {
    env.settings.smtp.host = "127.0.0.1".into();
    env.settings.smtp.port = port;
    env.settings.smtp.tls = SmtpTls::None;
    env.settings.smtp.from = "mailboxd@corp.example".into();
    env.settings.smtp.to = vec![to.into()];
}

/// The message with quoted-printable and base64 parts decoded (good enough to search).
pub fn decode_parts(mail: &str) -> String {
    let mut out = String::new();
    let qp = mail.replace("=\n", "").replace("=\r\n", "");
    let mut bytes = Vec::new();
    let b = qp.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&qp[i + 1..i + 3], 16)
        {
            bytes.push(v);
            i += 3;
            continue;
        }
        bytes.push(b[i]);
        i += 1;
    }
    out.push_str(&String::from_utf8_lossy(&bytes));
    use base64::Engine;
    for line in mail.lines() {
        if let Ok(d) = base64::engine::general_purpose::STANDARD.decode(line.trim()) {
            out.push_str(&String::from_utf8_lossy(&d));
        }
    }
    out
}
