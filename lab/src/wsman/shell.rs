//! The WinRS operations: Create a shell, start a Command in it, Send stdin, Receive
//! output, Signal, Delete — with WinRM's quotas (MaxShellsPerUser) and idle timeouts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use parking_lot::Mutex;
use tokio::sync::Notify;
use winrm::soap::{self, Envelope, esc};

use super::fault::{Fault, reply};
use super::{
    Command, DEFAULT_IDLE, ENVELOPE_OVERHEAD, Launch, Logon, ProcessIo, Server, ShellState,
};

/// Forgets shells that were idle longer than their IdleTimeOut (as WinRM does).
pub(super) fn expire(shells: &mut HashMap<String, ShellState>) {
    let now = Instant::now();
    shells.retain(|_, s| {
        let keep = now.duration_since(s.last_used) < s.idle_timeout;
        if !keep {
            kill_all(s);
        }
        keep
    });
}

/// A shell that goes takes its processes with it.
pub(super) fn kill_all(shell: &ShellState) {
    for c in shell.commands.values() {
        c.0.lock().kill();
    }
}

pub(super) fn create(
    server: &Server,
    env: &Envelope,
    user: &str,
    client_ip: &str,
    relates: &str,
) -> Result<String, Fault> {
    let shell_el = env.body.child(soap::NS_SHELL, "Shell");
    let idle_timeout = shell_el
        .and_then(|s| s.child(soap::NS_SHELL, "IdleTimeOut"))
        .and_then(|t| soap::parse_xs_duration(t.trimmed_text()))
        .unwrap_or(DEFAULT_IDLE);
    if !server.cfg.allow_remote_shell_access {
        return Err(Fault::shells_not_allowed());
    }
    let mut shells = server.shells.lock();
    expire(&mut shells);
    let owned = shells.values().filter(|s| s.owner == user).count();
    if owned >= server.cfg.max_shells_per_user {
        return Err(Fault::quota(server.cfg.max_shells_per_user));
    }
    let id = soap::new_guid();
    let now = Instant::now();
    shells.insert(
        id.clone(),
        ShellState {
            owner: user.to_owned(),
            client_ip: client_ip.to_owned(),
            last_used: now,
            idle_timeout,
            commands: HashMap::new(),
        },
    );
    let shell = &shells[&id];
    let body = format!(
        "<x:ResourceCreated><a:Address>http://{host}:5985/wsman</a:Address><a:ReferenceParameters><w:ResourceURI>{res}</w:ResourceURI><w:SelectorSet><w:Selector Name=\"ShellId\">{id}</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated><rsp:Shell xmlns:rsp=\"{ns}\"><rsp:ShellId>{id}</rsp:ShellId><rsp:ResourceUri>{res}</rsp:ResourceUri><rsp:Owner>{owner}</rsp:Owner><rsp:ClientIP>{ip}</rsp:ClientIP><rsp:IdleTimeOut>PT{idle}.000S</rsp:IdleTimeOut><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams><rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>",
        host = esc(&server.cfg.hostname),
        res = soap::RESOURCE_CMD,
        ns = soap::NS_SHELL,
        owner = esc(&shell.owner),
        ip = esc(&shell.client_ip),
        idle = shell.idle_timeout.as_secs(),
    );
    Ok(reply(
        &format!("{}Response", soap::ACTION_CREATE),
        relates,
        &body,
    ))
}

/// Looks up the shell named in the request's ShellId selector and marks it used.
pub(super) fn with_shell<T>(
    server: &Server,
    env: &Envelope,
    f: impl FnOnce(&mut ShellState) -> Result<T, Fault>,
) -> Result<T, Fault> {
    let id = env.selector("ShellId").ok_or_else(Fault::unknown_shell)?;
    let mut shells = server.shells.lock();
    expire(&mut shells);
    let shell = shells.get_mut(id).ok_or_else(Fault::unknown_shell)?;
    shell.last_used = Instant::now();
    f(shell)
}

pub(super) fn command(
    server: &Server,
    env: &Envelope,
    logon: &Logon,
    relates: &str,
) -> Result<String, Fault> {
    let line = env
        .body
        .child(soap::NS_SHELL, "CommandLine")
        .ok_or_else(Fault::invalid_parameter)?;
    let cmd = line
        .child(soap::NS_SHELL, "Command")
        .map(|c| c.text.clone())
        .unwrap_or_default();
    let args: Vec<String> = line
        .children_named(soap::NS_SHELL, "Arguments")
        .map(|a| a.text.clone())
        .collect();
    // Make sure the shell exists before the host does anything.
    with_shell(server, env, |_| Ok(()))?;
    let launched = server.host.launch(logon, &cmd, &args);
    let mut c = Command {
        stdin: Vec::new(),
        consumer: None,
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit_code: None,
        stdin_tx: None,
        task: None,
    };
    let mut interactive = None;
    match launched {
        Launch::Done(out) => {
            c.stdout = out.stdout;
            c.stderr = out.stderr;
            c.exit_code = Some(out.exit_code);
        }
        Launch::AwaitStdin(f) => c.consumer = Some(f),
        Launch::Interactive(f) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            c.stdin_tx = Some(tx);
            interactive = Some((f, rx));
        }
    }
    let id = soap::new_guid();
    let cmd = Arc::new((Mutex::new(c), Notify::new()));
    with_shell(server, env, |shell| {
        shell.commands.insert(id.clone(), cmd.clone());
        Ok(())
    })?;
    if let Some((f, rx)) = interactive {
        let io = ProcessIo {
            stdin: rx,
            out: cmd.clone(),
        };
        let done = cmd.clone();
        let task = tokio::spawn(async move {
            let code = f(io).await;
            done.0.lock().exit_code = Some(code);
            done.1.notify_waiters();
        });
        cmd.0.lock().task = Some(task.abort_handle());
    }
    Ok(reply(
        &format!("{}Response", soap::ACTION_COMMAND),
        relates,
        &format!("<rsp:CommandResponse><rsp:CommandId>{id}</rsp:CommandId></rsp:CommandResponse>"),
    ))
}

pub(super) fn find_command(
    server: &Server,
    env: &Envelope,
    command_id: Option<&str>,
) -> Result<Arc<(Mutex<Command>, Notify)>, Fault> {
    with_shell(server, env, |shell| {
        let id = command_id.ok_or_else(Fault::invalid_parameter)?;
        shell
            .commands
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(id))
            .map(|(_, v)| v.clone())
            .ok_or_else(Fault::unknown_command)
    })
}

pub(super) fn send(server: &Server, env: &Envelope, relates: &str) -> Result<String, Fault> {
    let send = env
        .body
        .child(soap::NS_SHELL, "Send")
        .ok_or_else(Fault::invalid_parameter)?;
    for stream in send.children_named(soap::NS_SHELL, "Stream") {
        let cmd = find_command(server, env, stream.attr("CommandId"))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(stream.trimmed_text())
            .map_err(|_| Fault::invalid_parameter())?;
        let end = stream
            .attr("End")
            .is_some_and(|e| e.eq_ignore_ascii_case("true"));
        let mut c = cmd.0.lock();
        if let Some(tx) = &c.stdin_tx {
            if !data.is_empty() {
                let _ = tx.send(data);
            }
            if end {
                c.stdin_tx = None;
            }
            continue;
        }
        c.stdin.extend(data);
        if end && let Some(consumer) = c.consumer.take() {
            let input = std::mem::take(&mut c.stdin);
            let cmd = cmd.clone();
            tokio::spawn(async move {
                let out = consumer(input).await;
                let mut c = cmd.0.lock();
                c.stdout.extend(out.stdout);
                c.stderr.extend(out.stderr);
                c.exit_code = Some(out.exit_code);
                drop(c);
                cmd.1.notify_waiters();
            });
        }
    }
    Ok(reply(
        &format!("{}Response", soap::ACTION_SEND),
        relates,
        "<rsp:SendResponse/>",
    ))
}

pub(super) async fn receive(
    server: &Server,
    env: &Envelope,
    timeout: Duration,
    max_envelope: usize,
    relates: &str,
) -> Result<String, Fault> {
    let desired = env
        .body
        .path(&[
            (soap::NS_SHELL, "Receive"),
            (soap::NS_SHELL, "DesiredStream"),
        ])
        .ok_or_else(Fault::invalid_parameter)?;
    let id = desired.attr("CommandId").map(str::to_owned);
    let cmd = find_command(server, env, id.as_deref())?;
    let id = id.unwrap_or_default();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = cmd.1.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut c = cmd.0.lock();
            let has_output = !c.stdout.is_empty() || !c.stderr.is_empty();
            if has_output || c.exit_code.is_some() {
                return Ok(reply(
                    &format!("{}Response", soap::ACTION_RECEIVE),
                    relates,
                    &drain(&mut c, &id, max_envelope),
                ));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(Fault::timed_out());
        }
    }
}

/// Takes as much output as fits in one reply; the rest waits for the next Receive.
pub(super) fn drain(c: &mut Command, id: &str, max_envelope: usize) -> String {
    let budget = (max_envelope.saturating_sub(ENVELOPE_OVERHEAD).max(1024) / 4) * 3;
    let mut body = String::from("<rsp:ReceiveResponse>");
    let mut left = budget;
    for (name, buf) in [("stdout", &mut c.stdout), ("stderr", &mut c.stderr)] {
        if buf.is_empty() || left == 0 {
            continue;
        }
        let n = buf.len().min(left);
        let part: Vec<u8> = buf.drain(..n).collect();
        left -= n;
        body.push_str(&format!(
            "<rsp:Stream Name=\"{name}\" CommandId=\"{id}\">{}</rsp:Stream>",
            base64::engine::general_purpose::STANDARD.encode(part)
        ));
    }
    let finished = c.stdout.is_empty() && c.stderr.is_empty();
    match c.exit_code {
        Some(code) if finished => {
            body.push_str(&format!(
                "<rsp:Stream Name=\"stdout\" CommandId=\"{id}\" End=\"true\"></rsp:Stream><rsp:Stream Name=\"stderr\" CommandId=\"{id}\" End=\"true\"></rsp:Stream><rsp:CommandState CommandId=\"{id}\" State=\"{}\"><rsp:ExitCode>{code}</rsp:ExitCode></rsp:CommandState>",
                soap::STATE_DONE
            ));
        }
        _ => body.push_str(&format!(
            "<rsp:CommandState CommandId=\"{id}\" State=\"{}\"></rsp:CommandState>",
            soap::STATE_RUNNING
        )),
    }
    body.push_str("</rsp:ReceiveResponse>");
    body
}

pub(super) fn signal(server: &Server, env: &Envelope, relates: &str) -> Result<String, Fault> {
    let sig = env
        .body
        .child(soap::NS_SHELL, "Signal")
        .ok_or_else(Fault::invalid_parameter)?;
    let id = sig.attr("CommandId").ok_or_else(Fault::invalid_parameter)?;
    with_shell(server, env, |shell| {
        let key = shell
            .commands
            .keys()
            .find(|k| k.eq_ignore_ascii_case(id))
            .cloned()
            .ok_or_else(Fault::unknown_command)?;
        if let Some(c) = shell.commands.remove(&key) {
            c.0.lock().kill();
        }
        Ok(())
    })?;
    Ok(reply(
        &format!("{}Response", soap::ACTION_SIGNAL),
        relates,
        "<rsp:SignalResponse/>",
    ))
}

pub(super) fn delete(server: &Server, env: &Envelope, relates: &str) -> Result<String, Fault> {
    let id = env.selector("ShellId").ok_or_else(Fault::unknown_shell)?;
    let mut shells = server.shells.lock();
    expire(&mut shells);
    let shell = shells.remove(id).ok_or_else(Fault::unknown_shell)?;
    kill_all(&shell);
    Ok(reply(
        &format!("{}Response", soap::ACTION_DELETE),
        relates,
        "",
    ))
}
