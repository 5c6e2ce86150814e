//! cmd.exe's answer to the few commands the lab runs itself: `hostname`, `whoami`, `echo`.
//! Anything else gets cmd.exe's "is not recognized" error and exit code 1.

use super::wsman::ProcessOutput;

fn ok(stdout: String) -> ProcessOutput {
    ProcessOutput {
        stdout: stdout.into_bytes(),
        stderr: Vec::new(),
        exit_code: 0,
    }
}

/// Runs the command line WinRS would hand to `cmd.exe /c` (Command and Arguments joined by spaces).
pub fn run(hostname: &str, user: &str, command: &str, arguments: &[String]) -> ProcessOutput {
    let mut line = command.trim().to_owned();
    for a in arguments {
        line.push(' ');
        line.push_str(a);
    }
    // `cmd /c <line>` and `cmd.exe /c <line>` run the line itself.
    loop {
        let lower = line.to_ascii_lowercase();
        let rest = ["cmd.exe /c ", "cmd /c ", "cmd.exe /k ", "cmd /k "]
            .iter()
            .find_map(|p| {
                lower
                    .starts_with(p)
                    .then(|| line[p.len()..].trim_start().to_owned())
            });
        match rest {
            Some(r) => line = r,
            None => break,
        }
    }
    let (name, rest) = match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim_start()),
        None => (line.as_str(), ""),
    };
    let bare = name
        .rsplit(['\\', '/'])
        .next()
        .unwrap_or(name)
        .to_ascii_lowercase();
    let bare = bare.strip_suffix(".exe").unwrap_or(&bare);
    match bare {
        "hostname" => ok(format!("{hostname}\r\n")),
        "whoami" => {
            let domain = hostname.to_ascii_lowercase();
            let who = if user.contains('\\') {
                user.to_ascii_lowercase()
            } else {
                format!("{domain}\\{}", user.to_ascii_lowercase())
            };
            ok(format!("{who}\r\n"))
        }
        "echo" if rest.is_empty() => ok("ECHO is on.\r\n".into()),
        "echo" => ok(format!("{rest}\r\n")),
        _ if name.to_ascii_lowercase().starts_with("echo.") => ok(format!("{}\r\n", &name[5..])),
        _ => ProcessOutput {
            stdout: Vec::new(),
            stderr: format!(
                "'{name}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
            )
            .into_bytes(),
            exit_code: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(cmd: &str, args: &[&str]) -> (String, String, i32) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let o = run("LAB-IQSVC01", "mailboxd", cmd, &args);
        (
            String::from_utf8(o.stdout).unwrap(),
            String::from_utf8(o.stderr).unwrap(),
            o.exit_code,
        )
    }

    #[test]
    fn builtins_answer_like_cmd_exe() {
        assert_eq!(out("hostname", &[]).0, "LAB-IQSVC01\r\n");
        assert_eq!(out("HOSTNAME.EXE", &[]).0, "LAB-IQSVC01\r\n");
        assert_eq!(out("whoami", &[]).0, "lab-iqsvc01\\mailboxd\r\n");
        assert_eq!(out("echo", &["hi", "there"]).0, "hi there\r\n");
        assert_eq!(out("echo hi", &[]).0, "hi\r\n");
        assert_eq!(out("echo", &[]).0, "ECHO is on.\r\n");
        assert_eq!(out("cmd.exe", &["/c", "echo", "x"]).0, "x\r\n");
    }

    #[test]
    fn anything_else_is_not_recognized() {
        let (o, e, code) = out("format", &["c:"]);
        assert_eq!(o, "");
        assert_eq!(
            e,
            "'format' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
        );
        assert_eq!(code, 1);
    }
}
