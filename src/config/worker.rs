//! `[worker]`: how jobs are claimed, batched, retried and given up on.

use std::time::Duration;

use serde::Deserialize;

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Worker {
    /// Concurrent batches (each one PowerShell process on the Windows host).
    pub concurrency: u32,
    pub max_attempts: i32,
    #[serde(with = "humantime_secs")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_secs")]
    pub backoff_cap: Duration,
    /// How long a claimed job stays locked without a heartbeat.
    #[serde(with = "humantime_secs")]
    pub lease: Duration,
    /// Fallback poll interval when no notification arrives.
    #[serde(with = "humantime_secs")]
    pub poll_interval: Duration,
    /// A batch still running after this is abandoned and its jobs retried (a hung host).
    #[serde(with = "humantime_secs")]
    pub batch_timeout: Duration,
    /// Consecutive whole-batch failures (host unreachable) that open the circuit; an
    /// authentication refusal opens it at once.
    pub circuit_threshold: u32,
    /// How long the open circuit pauses work before one probe batch (doubles while it fails, up to 10 min).
    #[serde(with = "humantime_secs")]
    pub circuit_cooldown: Duration,
    /// The shortest pause of the circuit after refused credentials (a wrong password, a KDC
    /// refusal, a refused CredSSP or Exchange logon): each probe sends the credentials again
    /// and counts toward AD's account lockout. 30 min is twice the lockout observation window
    /// Windows' security baselines recommend ("Reset account lockout counter after" 15 min;
    /// CIS: 15 or more), so a replica's probes add at most one bad try to any window.
    #[serde(with = "humantime_secs")]
    pub credential_probe_interval: Duration,
    /// How often a joiner in `waiting_for_sync` asks the directory again.
    #[serde(with = "humantime_secs")]
    pub sync_poll_interval: Duration,
    /// A joiner still not synced this long after its event fails with a clear reason
    /// (default: two Entra Connect cycles plus margin).
    #[serde(with = "humantime_secs")]
    pub sync_deadline: Duration,
    /// Succeeded, cancelled and superseded jobs are deleted (with their attempts) after this
    /// long; failed jobs stay until an operator acts.
    #[serde(with = "humantime_secs")]
    pub retention: Duration,
    /// On SIGTERM, how long in-flight batches may run on before their jobs are released.
    #[serde(with = "humantime_secs")]
    pub shutdown_grace: Duration,
}

impl Default for Worker {
    fn default() -> Self {
        Worker {
            concurrency: 4,
            max_attempts: 12,
            backoff_base: Duration::from_secs(30),
            backoff_cap: Duration::from_secs(3600),
            lease: Duration::from_secs(300),
            poll_interval: Duration::from_secs(2),
            batch_timeout: Duration::from_secs(900),
            circuit_threshold: 3,
            circuit_cooldown: Duration::from_secs(60),
            credential_probe_interval: Duration::from_secs(30 * 60),
            sync_poll_interval: Duration::from_secs(300),
            sync_deadline: Duration::from_secs(2 * 3600),
            retention: Duration::from_secs(30 * 24 * 3600),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}
