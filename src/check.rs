//! `mailboxd check`: every dependency of the running configuration, tried for real — the
//! first thing to run after installing. Each probe says OK, FAIL (with the reason and what to
//! look at) or SKIP (not configured).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Settings;

#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub ms: u128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Fail,
    Skip,
}

const TIMEOUT: Duration = Duration::from_secs(15);

async fn timed<F>(name: &str, f: F) -> Probe
where
    F: std::future::Future<Output = (Status, String)>,
{
    let started = Instant::now();
    let (status, detail) = match tokio::time::timeout(TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => (
            Status::Fail,
            format!("no answer within {}s", TIMEOUT.as_secs()),
        ),
    };
    Probe {
        name: name.to_owned(),
        status,
        detail,
        ms: started.elapsed().as_millis(),
    }
}

/// Runs every probe (in order: the later ones depend on nothing but their own settings).
pub async fn run(s: &Settings) -> Vec<Probe> {
    winrm::tls::install_provider();
    let mut out = vec![
        timed("PostgreSQL", postgres(s)).await,
        timed("RabbitMQ", rabbitmq(s)).await,
    ];
    out.extend(ldap(s).await);
    out.push(timed("WinRM", winrm_hostname(s)).await);
    out.push(timed("Exchange session", exchange_session(s)).await);
    if s.exchange.mode == crate::config::ExchangeMode::Snapin {
        out.push(emt_rights(s).await);
    }
    out.push(timed("Exchange session budget", session_budget(s)).await);
    out.push(if s.smtp.host.is_empty() {
        skipped("SMTP", "[smtp].host is empty: alerts stay in the outbox")
    } else {
        timed("SMTP", smtp(s)).await
    });
    out.push(graph_probe(s).await);
    out
}

/// Microsoft Graph, when `[graph]` is configured: a token with the certificate, then one read.
pub async fn graph_probe(s: &Settings) -> Probe {
    if !s.graph.enabled() {
        return skipped(
            "Microsoft Graph",
            "[graph].tenant_id is not set: the cloud mailbox is not read from Graph",
        );
    }
    timed("Microsoft Graph", async {
        match crate::graph::GraphClient::from_config(&s.graph) {
            Ok(Some(client)) => match client.probe().await {
                Ok(found) => (Status::Ok, found),
                Err(e) => fail(e),
            },
            Ok(None) => fail("[graph] is incomplete: tenant_id, client_id, certificate_file and private_key_file"),
            Err(e) => fail(e),
        }
    })
    .await
}

/// What one probe found.
type Verdict = (Status, String);

fn fail(e: impl std::fmt::Display) -> Verdict {
    (Status::Fail, e.to_string())
}

/// A probe that took no time: not configured, or refused before trying.
fn untimed(name: &str, status: Status, detail: impl Into<String>) -> Probe {
    Probe {
        name: name.into(),
        status,
        detail: detail.into(),
        ms: 0,
    }
}

fn skipped(name: &str, detail: &str) -> Probe {
    untimed(name, Status::Skip, detail)
}

async fn postgres(s: &Settings) -> Verdict {
    let store = match crate::store::Store::connect(&s.database.url, 1).await {
        Ok(store) => store,
        Err(e) => return fail(format!("{e} (database.url)")),
    };
    match store.autovacuum_on().await {
        Ok(true) => (
            Status::Ok,
            "connected; `mailboxd migrate` keeps the schema current".into(),
        ),
        Ok(false) => (
            Status::Ok,
            format!("connected; {}", crate::store::AUTOVACUUM_OFF),
        ),
        Err(e) => fail(e),
    }
}

/// Exchange's PowerShellMaxConcurrency on-premises, by default.
const EXCHANGE_DEFAULT_MAX_CONCURRENCY: u32 = 18;

/// The cluster-wide session budget: its size against Exchange's default throttling policy,
/// and what the replicas sharing the database use of it now.
async fn session_budget(s: &Settings) -> Verdict {
    let max = s.exchange.max_sessions;
    if max >= EXCHANGE_DEFAULT_MAX_CONCURRENCY {
        return fail(format!(
            "exchange.max_sessions = {max} leaves no room under Exchange's default PowerShellMaxConcurrency ({EXCHANGE_DEFAULT_MAX_CONCURRENCY}) for people and other tools on the account: lower it, or raise the throttling policy (Set-ThrottlingPolicy) first"
        ));
    }
    let budget = format!(
        "exchange.max_sessions = {max} for all replicas together (Exchange's default PowerShellMaxConcurrency is {EXCHANGE_DEFAULT_MAX_CONCURRENCY}, WinRM's MaxShellsPerUser 30)"
    );
    let store = match crate::store::Store::connect(&s.database.url, 1).await {
        Ok(store) => store,
        Err(e) => return fail(format!("{budget}; cannot read its use: {e}")),
    };
    match store.budget_use().await {
        Ok(u) => (
            Status::Ok,
            format!(
                "{budget}; in use now: {} by {} replica(s); Exchange throttling refusals in the last 15 min: {}{}; {}",
                u.in_use,
                u.holders,
                u.throttled_recently,
                u.learned_max_sessions.map_or(String::new(), |n| format!(
                    "; learned from an Exchange refusal: mailboxd may use {n} sessions, and every replica uses at most {n} (set exchange.max_sessions = {n} when that is Exchange's limit; fewer than the refusal stated means another client holds runspaces of the account)"
                )),
                cmdlet_budget(s, &store).await
            ),
        ),
        Err(e) => fail(format!(
            "{budget}; cannot read its use ({e}): run `mailboxd migrate`"
        )),
    }
}

/// The cmdlet budget as configured, and the cmdlets in its window now (all replicas).
async fn cmdlet_budget(s: &Settings, store: &crate::store::Store) -> String {
    let Some(limit) = crate::budget::CmdletLimit::from_config(&s.exchange) else {
        return "cmdlets not paced (exchange.max_cmdlets unset: Exchange's default policy is Unlimited)".into();
    };
    let used = store
        .cmdlets_in_window()
        .await
        .map_or_else(|e| format!("unknown ({e})"), |n| n.to_string());
    format!(
        "cmdlets in the window now: {used} of exchange.max_cmdlets = {} per {} s",
        limit.max,
        limit.window.as_secs_f64()
    )
}

/// Connects and looks at the queue without declaring it (passive): a check changes nothing.
async fn rabbitmq(s: &Settings) -> Verdict {
    let conn = match crate::broker::connect(&s.amqp.url, "mailboxd check").await {
        Ok(conn) => conn,
        Err(e) => return fail(format!("{e} (amqp.url)")),
    };
    let ch = match conn.create_channel().await {
        Ok(ch) => ch,
        Err(e) => return fail(e),
    };
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let queue = &s.amqp.queue;
    match ch
        .queue_declare(queue.as_str().into(), passive, Default::default())
        .await
    {
        Ok(q) => (
            Status::Ok,
            format!("queue {queue} holds {} message(s)", q.message_count()),
        ),
        // 404 NOT_FOUND: a normal answer before the daemon's first start. (lapin logs the
        // channel the broker closes for it as an ERROR; `check` silences that target.)
        Err(e) if is_not_found(&e) => (
            Status::Ok,
            format!("connected; queue {queue} does not exist yet (the daemon declares it)"),
        ),
        Err(e) => fail(format!(
            "connected, but cannot look at queue {queue}: {e} (check the user's permissions on the vhost)"
        )),
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

/// One probe per configured domain controller.
async fn ldap(s: &Settings) -> Vec<Probe> {
    let dir = match crate::directory::Directory::from_config(&s.ldap) {
        Ok(Some(dir)) => dir,
        Ok(None) => return vec![skipped("LDAP", "[ldap].urls is empty: no directory checks")],
        Err(e) => return vec![untimed("LDAP", Status::Fail, e.to_string())],
    };
    let started = Instant::now();
    let mut out = Vec::new();
    for (url, r) in dir.check().await {
        let (status, detail) = match r {
            Ok(dc) => (
                Status::Ok,
                format!("bound as {}; domain controller {dc}", s.ldap.bind_dn),
            ),
            Err(e) => (Status::Fail, e),
        };
        out.push(Probe {
            name: format!("LDAP {url}"),
            status,
            detail,
            ms: started.elapsed().as_millis(),
        });
    }
    out
}

/// Runs `hostname` in a WinRM shell: credentials, transport and the host's answer.
async fn winrm_hostname(s: &Settings) -> Verdict {
    let client = match s.winrm.client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let shell = match client.open_shell(&Default::default()).await {
        Ok(sh) => sh,
        Err(e) => return fail(e),
    };
    let r = shell.run("hostname", &[], None).await;
    let _ = shell.close().await;
    match r {
        Ok(o) if o.exit_code == 0 => (
            Status::Ok,
            format!(
                "{} answers as {}",
                s.winrm.endpoint,
                String::from_utf8_lossy(&o.stdout).trim()
            ),
        ),
        Ok(o) => fail(format!("hostname exited {}", o.exit_code)),
        Err(e) => fail(e),
    }
}

async fn exchange_session(s: &Settings) -> Verdict {
    // What the daemon would refuse at start (the second hop, no servers) is named first.
    if let Err(e) = s.validate_exchange() {
        return fail(e);
    }
    let client = match s.winrm.client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let ex = crate::exchange::Exchange::new(client, &s.exchange, s.winrm.endpoint.clone())
        .redacting(s.secret_values());
    // A batch of no accounts: opens the session in the configured mode and reads one
    // recipient (common.ps1), so the second hop is tried for real; it changes nothing.
    match ex
        .run_batch(crate::exchange::Template::EnableRemoteMailbox, Vec::new())
        .await
    {
        Ok(_) => (
            Status::Ok,
            format!(
                "session opened in {} mode and read a recipient (the second hop works: {}){}",
                format!("{:?}", s.exchange.mode).to_lowercase(),
                s.second_hop_remedy(),
                snapin_rights(s)
            ),
        ),
        // The Exchange client's errors already say what a host set-up problem means.
        Err(e) => fail(e),
    }
}

/// In snap-in mode a read proves nothing about writes: the Management Tools have no RBAC.
fn snapin_rights(s: &Settings) -> &'static str {
    if s.exchange.mode == crate::config::ExchangeMode::Snapin {
        "; RBAC does not apply in snapin mode: writes need winrm.username in \"Recipient Management EMT\" (Add-PermissionForEMT.ps1) or Domain Admins"
    } else {
        ""
    }
}

/// Snap-in mode writes with the WinRM account's own AD rights (no RBAC): reads over LDAP
/// whether it is, nestedly, in "Recipient Management EMT" or Domain Admins.
pub async fn emt_rights(s: &Settings) -> Probe {
    const NAME: &str = "Exchange Management Tools rights";
    let dir = match crate::directory::Directory::from_config(&s.ldap) {
        Ok(Some(dir)) => dir,
        Ok(None) => {
            return skipped(
                NAME,
                "[ldap].urls is empty: the group membership of winrm.username is not read",
            );
        }
        Err(e) => return untimed(NAME, Status::Fail, e.to_string()),
    };
    let user = s.winrm.username.as_str();
    let domain = user.split_once('\\').map_or("", |(d, _)| d);
    let Some(lookup) = crate::signin::lookup(user, domain) else {
        return untimed(
            NAME,
            Status::Fail,
            format!("winrm.username {user:?} is no account name"),
        );
    };
    timed(NAME, async move {
        use crate::directory::{EMT_GROUP, EmtRights};
        let rbac = "RBAC does not apply in snapin mode (the Management Tools write with the account's own AD rights)";
        match dir.emt_rights(&lookup).await {
            Ok(EmtRights::Member(group)) => (Status::Ok, format!("winrm.username {user} is a member of {group} (directly or nested): it may manage recipients; {rbac}")),
            Ok(EmtRights::NotMember { emt_group_exists }) => fail(format!(
                "winrm.username {user} is in neither \"{EMT_GROUP}\" nor Domain Admins, so every write fails with insufficient access rights; {rbac}: {}",
                if emt_group_exists {
                    format!("add it to \"{EMT_GROUP}\"")
                } else {
                    format!("no \"{EMT_GROUP}\" group exists: run Add-PermissionForEMT.ps1 (Exchange's scripts folder) once, then add the account to it")
                }
            )),
            Ok(EmtRights::NoSuchAccount) => fail(format!("no account {lookup} in the domain: check winrm.username")),
            Err(e) => fail(e),
        }
    })
    .await
}

async fn smtp(s: &Settings) -> Verdict {
    let sender = match crate::alert::sender::Sender::new(&s.smtp, None) {
        Ok(sender) => sender,
        Err(e) => return fail(e),
    };
    match sender.test_connection().await {
        Ok(true) => (
            Status::Ok,
            format!("{}:{} accepts connections", s.smtp.host, s.smtp.port),
        ),
        Ok(false) => fail("the server did not answer NOOP"),
        Err(e) => fail(e),
    }
}
