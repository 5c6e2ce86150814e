//! Every TCP connection mailboxd opens for a request/response protocol has `TCP_NODELAY`
//! set: without it, a message written while the previous one is unacknowledged waits for
//! the peer's delayed ACK (up to 40 ms on Linux), which cut the queue engine to a sixth of
//! its speed with sqlx 0.9.0 (issue 35). Each test opens the connection through the
//! product's own connect path and then reads the option back from the socket itself
//! (`getsockopt` on every socket of this process connected to that peer).

mod common;

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use mailboxd::directory::{Directory, Lookup};
use secrecy::SecretString;
use winrm::{Auth, ClientConfig, ShellOptions, WinrmClient};

/// `TCP_NODELAY` of every socket of this process connected to `peer`, read with getsockopt.
fn nodelay_of_sockets_to(peer: SocketAddr) -> Vec<bool> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd") {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:["));
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor was listed as open a moment ago and is only borrowed for
        // two getsockopt calls; were it closed and reused meanwhile, the calls fail or
        // read another socket, which the peer address check below then filters out.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let connected_to_peer = sock
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a == peer);
        if connected_to_peer && let Ok(on) = sock.tcp_nodelay() {
            found.push(on);
        }
    }
    found
}

fn peer_of(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).expect("URL");
    let port = u.port_or_known_default().expect("a port");
    (u.host_str().expect("a host"), port)
        .to_socket_addrs()
        .expect("resolves")
        .next()
        .expect("an address")
}

fn assert_all_nodelay(what: &str, peer: SocketAddr) {
    let sockets = nodelay_of_sockets_to(peer);
    assert!(!sockets.is_empty(), "{what}: no connection to {peer} found");
    assert!(
        sockets.iter().all(|on| *on),
        "{what}: {} of {} connections to {peer} without TCP_NODELAY",
        sockets.iter().filter(|on| !**on).count(),
        sockets.len()
    );
}

#[tokio::test]
async fn postgresql_connections_set_nodelay() {
    let db = common::TestDatabase::create(&common::fresh_tag()).await;
    let store = mailboxd::store::Store::connect(&db.url, 2)
        .await
        .expect("connect");
    store.ping().await.expect("ping");
    assert_all_nodelay("PostgreSQL (sqlx)", peer_of(&common::pg_server()));
}

#[tokio::test]
async fn rabbitmq_connections_set_nodelay() {
    let url = common::amqp_url();
    let conn = mailboxd::broker::connect(&url, "mailboxd nodelay test")
        .await
        .expect("connect to RabbitMQ");
    assert_all_nodelay("RabbitMQ (lapin)", peer_of(&url));
    conn.close(200, "done".into()).await.expect("close");
}

#[tokio::test]
async fn ldap_connections_set_nodelay() {
    let lab = common::start_lab(vec![common::seed("nodelay1")], lab::Latency::default(), 30).await;
    let cfg = mailboxd::tools::lab_setup::ldap_settings(
        &lab,
        lab::DEFAULT_USER,
        SecretString::from(common::LAB_PASSWORD),
    )
    .expect("the lab serves LDAP");
    let dir = Directory::from_config(&cfg)
        .expect("valid [ldap]")
        .expect("directory configured");
    let state = dir
        .read(&Lookup::Sam("nodelay1".into()), None)
        .await
        .expect("read");
    assert!(state.account.is_some());
    let url = lab.ldap_url().expect("LDAP URL");
    assert_all_nodelay("LDAP (ldap3)", peer_of(&url));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winrm_connections_set_nodelay_for_basic_and_ntlm() {
    let lab = common::start_lab(vec![], lab::Latency::default(), 30).await;
    let endpoint = lab.endpoint();
    for auth in [Auth::Basic, Auth::Ntlm] {
        let mut cfg = ClientConfig::new(
            endpoint.parse().expect("endpoint URL"),
            lab::DEFAULT_USER,
            SecretString::from(common::LAB_PASSWORD),
        );
        cfg.auth = auth;
        cfg.allow_unencrypted = auth == Auth::Basic;
        cfg.connect_timeout = Duration::from_secs(5);
        let client = WinrmClient::new(cfg).expect("client");
        let shell = client
            .open_shell(&ShellOptions::default())
            .await
            .expect("shell");
        shell.run("hostname", &[], None).await.expect("hostname");
        assert_all_nodelay(&format!("WinRM {auth:?}"), peer_of(&endpoint));
        shell.close().await.expect("close");
    }
}
