//! A test that fails leaves nothing behind: its database is dropped, its broker queues and
//! exchanges deleted, its lab and daemon stopped — by the guards' `Drop`, with no cleanup
//! call the failing test never reached.

use crate::common;

use std::time::{Duration, Instant};

use common::scratch::{database_exists, exchange_exists, queue_exists};
use common::{TestEnv, seed};

/// What a doomed test started, recorded before it panics.
struct Started {
    database: String,
    queue: String,
    exchange: String,
    lab: std::net::SocketAddr,
    ldap: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    child_pid: u32,
}

/// Waits (bounded) until nothing accepts connections at `addr`.
async fn wait_closed(addr: std::net::SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{what} at {addr} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_panics_leaves_no_database_queue_lab_or_daemon_behind() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The doomed test runs as a task: its panic unwinds it and drops what it holds, as
    // the test harness does for a failing test.
    let doomed = tokio::spawn(async move {
        let env = TestEnv::new(vec![seed("doomed")]).await;
        let app = env.start_daemon().await;
        // The intake declared the topology once the daemon reports the broker connected.
        let readyz = format!("http://{}/readyz", app.admin_addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        while env.get_json(&readyz).await["ready"] != true {
            assert!(Instant::now() < deadline, "the daemon never got ready");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let child = env.spawn_daemon(&[]);
        let started = Started {
            database: env.database_name().to_owned(),
            queue: env.settings.amqp.queue.clone(),
            exchange: env.settings.amqp.exchange.clone(),
            lab: env.lab.addr,
            ldap: env.lab.ldap_addr.expect("the test lab serves LDAP"),
            admin: app.admin_addr,
            child_pid: child.id(),
        };
        assert!(database_exists(&started.database).await);
        assert!(queue_exists(&env.settings.amqp.url, &started.queue).await);
        let _ = tx.send(started);
        panic!("this test fails on purpose");
    });
    let err = doomed.await.expect_err("the doomed test panicked");
    assert!(err.is_panic(), "{err:?}");
    let started = rx.await.expect("the doomed test got far enough");
    then_nothing_it_started_is_left(&started).await;
}

/// The guards finished before the unwinding went on: gone at once; aborted tasks let go
/// of their sockets as the runtime gets to them.
async fn then_nothing_it_started_is_left(started: &Started) {
    assert!(
        !database_exists(&started.database).await,
        "database {} left behind",
        started.database
    );
    let amqp = common::amqp_url();
    assert!(
        !queue_exists(&amqp, &started.queue).await,
        "queue {} left behind",
        started.queue
    );
    assert!(
        !exchange_exists(&amqp, &started.exchange).await,
        "exchange {} left behind",
        started.exchange
    );
    // Killed and reaped: no such process any more.
    assert!(
        !std::path::Path::new(&format!("/proc/{}", started.child_pid)).exists(),
        "the spawned daemon {} still runs",
        started.child_pid
    );
    wait_closed(started.lab, "the lab's WinRM listener").await;
    wait_closed(started.ldap, "the lab's domain controller").await;
    wait_closed(started.admin, "the in-process daemon's admin listener").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_dropped_mid_connection_takes_its_connections_along() {
    let lab = common::start_lab(vec![seed("gone")], lab::Latency::default(), 30).await;
    let addr = lab.addr;
    let mut open = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    drop(lab);
    wait_closed(addr, "a dropped lab").await;
    // The accepted connection ended too: reading finds its end.
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), open.read(&mut buf))
        .await
        .expect("the connection ends");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
