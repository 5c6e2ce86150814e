//! Warm sessions: long-lived PowerShell processes on the host (one WinRM shell each), each
//! running `serve.ps1` and fed request after request on stdin, so the Exchange session is
//! opened once per process instead of once per batch. The pool holds at most `size` of them
//! (keep it below Exchange's PowerShellMaxConcurrency and WinRM's MaxShellsPerUser), recycles
//! a process after `max_requests`, and drops one on any error.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use std::sync::Arc;

use super::HostOutput;
use crate::budget::{SessionBudget, SlotGuard, SlotPurpose};
use ps_templates::{self as script, Payload, WarmRequest};
use winrm::{CommandOutput, Process, Shell, ShellOptions, WinrmClient, WinrmError};

struct WarmProcess {
    shell: Shell,
    process: Process,
    requests: u32,
    last_used: Instant,
    /// Output received after the last request's DONE line (normally nothing).
    carry: Vec<u8>,
    /// Its slot of the cluster's session budget, given back when the process is dropped.
    _slot: Option<SlotGuard>,
}

impl WarmProcess {
    async fn start(
        client: &WinrmClient,
        budget: Option<&Arc<SessionBudget>>,
        secret_line: &secrecy::SecretSlice<u8>,
    ) -> Result<WarmProcess, WinrmError> {
        // No shell is opened before the budget allows one more Exchange session.
        let slot = match budget {
            Some(b) => Some(b.acquire(SlotPurpose::Warm).await),
            None => None,
        };
        let shell = client.open_shell(&ShellOptions::default()).await?;
        let args = script::serve_arguments();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = shell
            .start(script::POWERSHELL, &refs, winrm::Stdin::Read)
            .await?;
        // serve.ps1 reads the Exchange password first, on a line of its own.
        use secrecy::ExposeSecret;
        process.send(secret_line.expose_secret()).await?;
        Ok(WarmProcess {
            shell,
            process,
            requests: 0,
            last_used: Instant::now(),
            carry: Vec::new(),
            _slot: slot,
        })
    }

    /// Sends one request line; an error here means the process never got it.
    async fn send(&mut self, line: &[u8]) -> Result<(), WinrmError> {
        self.requests += 1;
        self.last_used = Instant::now();
        self.process.send(line).await
    }

    /// Reads until the DONE line of request `id`.
    async fn read_until_done(&mut self, id: &str) -> Result<CommandOutput, WinrmError> {
        let marker = format!("{}{id}", script::DONE_MARKER);
        let mut stdout = std::mem::take(&mut self.carry);
        let mut stderr = Vec::new();
        loop {
            if let Some(end) = find_line(&stdout, marker.as_bytes()) {
                self.carry = stdout.split_off(end);
                return Ok(CommandOutput {
                    stdout,
                    stderr,
                    exit_code: 0,
                });
            }
            let chunk = self.process.receive().await?;
            stdout.extend(chunk.stdout);
            stderr.extend(chunk.stderr);
            if let Some(code) = chunk.exit_code {
                // The process ended under us: what it printed is the whole story.
                return Ok(CommandOutput {
                    stdout,
                    stderr,
                    exit_code: code,
                });
            }
        }
    }

    async fn close(self) {
        let WarmProcess {
            shell, mut process, ..
        } = self;
        // Closing stdin lets serve.ps1 end, removing its Exchange session on the way out; only
        // then is the process terminated and the shell deleted. Terminated at once, it lost the
        // race to its own Remove-PSSession, and Exchange kept counting the session against
        // PowerShellMaxConcurrency until its idle timeout: a daemon recycling its processes
        // (`warm_max_requests`) ran out of sessions (seen in `bench load`: every session
        // refused after the fourth recycle).
        if process.send_last(&[]).await.is_ok() {
            let ended = async {
                while let Ok(chunk) = process.receive().await {
                    if chunk.exit_code.is_some() {
                        return;
                    }
                }
            };
            if tokio::time::timeout(EXIT_WAIT, ended).await.is_err() {
                tracing::debug!(
                    "a warm PowerShell process did not end after its input closed; terminating it"
                );
            }
        }
        process.terminate().await;
        if let Err(e) = shell.close().await {
            tracing::debug!(error = %e, "deleting a warm session's shell failed");
        }
    }
}

/// How long a closed process may take to end by itself (remove its Exchange session) before
/// it is terminated.
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// The end (after its CRLF) of the line holding `marker`, if it arrived whole.
fn find_line(hay: &[u8], marker: &[u8]) -> Option<usize> {
    let at = hay.windows(marker.len()).position(|w| w == marker)?;
    let nl = hay[at..].iter().position(|&b| b == b'\n')?;
    Some(at + nl + 1)
}

/// An idle process ends after this long without a batch, giving its session slot back: a
/// replica gone quiet must not keep Exchange sessions that busy replicas wait for. (The host
/// also deletes a shell that saw no request for its IdleTimeOut, 300 s as mailboxd opens
/// them.) A replica whose work returns later pays one session set-up for it.
const MAX_IDLE: Duration = Duration::from_secs(30);

pub(crate) struct WarmPool {
    client: WinrmClient,
    idle: Mutex<Vec<WarmProcess>>,
    permits: Semaphore,
    max_requests: u32,
    /// How long a batch waits for a free warm process before it is retried.
    wait: Duration,
    budget: Option<Arc<SessionBudget>>,
    /// What each new process is sent first: the Exchange password's line.
    secret_line: Arc<secrecy::SecretSlice<u8>>,
}

impl WarmPool {
    pub(crate) fn new(
        client: WinrmClient,
        size: usize,
        max_requests: u32,
        secret_line: Arc<secrecy::SecretSlice<u8>>,
    ) -> WarmPool {
        WarmPool {
            secret_line,
            client,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
            max_requests: max_requests.max(1),
            wait: Duration::from_secs(300),
            budget: None,
        }
    }

    /// The same pool (not started yet), its processes holding slots of `budget`.
    pub(crate) fn with_budget(&self, budget: Arc<SessionBudget>) -> WarmPool {
        WarmPool {
            client: self.client.clone(),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(self.permits.available_permits().max(1)),
            max_requests: self.max_requests,
            wait: self.wait,
            budget: Some(budget),
            secret_line: self.secret_line.clone(),
        }
    }

    /// Runs one payload in a warm process: an idle one when `reuse`, else (and when none is
    /// idle) a new one. A process whose Exchange session was dropped is not kept (kept, it
    /// would fail every later request).
    pub(crate) async fn run(
        &self,
        payload: &Payload,
        reuse: bool,
    ) -> Result<HostOutput, WinrmError> {
        let _permit = tokio::time::timeout(self.wait, self.permits.acquire())
            .await
            .map_err(|_| WinrmError::Timeout)?
            .map_err(|_| WinrmError::Protocol("the warm pool is closed".into()))?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut line = serde_json::to_vec(&WarmRequest {
            id: id.clone(),
            payload: payload.clone(),
        })
        .map_err(|e| WinrmError::Protocol(e.to_string()))?;
        line.push(b'\n');
        let mut p = loop {
            let idle = if reuse { self.take_idle() } else { None };
            match idle {
                Some(mut p) => match p.send(&line).await {
                    Ok(()) => break p,
                    // A kept process that cannot take the request (its shell expired, the host
                    // restarted) never ran it: replace it and carry on.
                    Err(e) => {
                        tracing::info!(error = %e, "a warm PowerShell process is gone; starting another");
                        tokio::spawn(p.close());
                    }
                },
                None => {
                    let mut p =
                        WarmProcess::start(&self.client, self.budget.as_ref(), &self.secret_line)
                            .await?;
                    if let Err(e) = p.send(&line).await {
                        tokio::spawn(p.close());
                        return Err(e);
                    }
                    break p;
                }
            }
        };
        let out = p.read_until_done(&id).await.map(|o| HostOutput::read(&o));
        match &out {
            // Healthy and not yet due for recycling: back to the pool.
            Ok(o) if o.exit_code == 0 && p.process.exit_code().is_none() && !o.session_lost() => {
                if p.requests >= self.max_requests {
                    tokio::spawn(p.close());
                } else {
                    self.idle.lock().push(p);
                }
            }
            // An error or a process that ended: it is not used again.
            _ => {
                tokio::spawn(p.close());
            }
        }
        out
    }

    /// An idle process fresh enough to reuse; stale ones are ended on the way.
    fn take_idle(&self) -> Option<WarmProcess> {
        let mut idle = self.idle.lock();
        while let Some(p) = idle.pop() {
            if p.last_used.elapsed() < MAX_IDLE {
                return Some(p);
            }
            tokio::spawn(p.close());
        }
        None
    }

    /// Ends idle processes past `MAX_IDLE`, looking every few seconds for as long as the pool
    /// lives: without it, a replica that gets no more work would keep them (and their slots).
    pub(crate) fn reap_idle(pool: &Arc<WarmPool>) {
        let pool = Arc::downgrade(pool);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAX_IDLE / 6);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let stale: Vec<WarmProcess> = {
                    let mut idle = pool.idle.lock();
                    let (stale, fresh) = std::mem::take(&mut *idle)
                        .into_iter()
                        .partition(|p| p.last_used.elapsed() >= MAX_IDLE);
                    *idle = fresh;
                    stale
                };
                for p in stale {
                    tokio::spawn(p.close());
                }
            }
        });
    }

    /// Ends every idle process (shutdown).
    pub(crate) async fn close(&self) {
        let all: Vec<WarmProcess> = std::mem::take(&mut *self.idle.lock());
        for p in all {
            p.close().await;
        }
    }
}
