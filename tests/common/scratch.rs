//! What a test creates on the shared services — its PostgreSQL database, its RabbitMQ
//! exchanges and queues — held by guards that remove it when dropped, so a test that fails
//! (panics) leaves nothing behind, just as one that passes.
//!
//! `Drop` cannot await, and blocking on the test's own runtime would deadlock a
//! current-thread runtime; so the removal runs to completion on a thread of its own with a
//! small runtime of its own, and `drop` returns once it is done.

use std::future::Future;
use std::time::Duration;

use mailboxd::config::Amqp;
use mailboxd::store::Store;
use sqlx::Connection;

use super::pg_server;

/// How long a removal may take before the guard gives up (a service that hangs must not
/// hang the test run).
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `work` to completion on a fresh thread and runtime, from sync code inside or outside
/// a tokio runtime.
pub fn run_detached_to_end<F>(work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for cleaning up");
        rt.block_on(async {
            if tokio::time::timeout(REMOVAL_TIMEOUT, work).await.is_err() {
                eprintln!("test cleanup did not finish within {REMOVAL_TIMEOUT:?}");
            }
        });
    });
    if thread.join().is_err() {
        eprintln!("test cleanup panicked");
    }
}

/// A fresh, migrated database of this test's own; dropped (`WITH (FORCE)`, whoever is still
/// connected) when the guard is. Derefs to its [`Store`].
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    pub store: Store,
}

impl TestDatabase {
    /// `mailboxd_test_<tag>` on the test server, created and migrated.
    pub async fn create(tag: &str) -> TestDatabase {
        let db = TestDatabase::create_empty(tag, 4).await;
        db.store.migrate().await.expect("migrate");
        db
    }

    /// `mailboxd_test_<tag>`, created but not migrated, with a pool of `connections`.
    pub async fn create_empty(tag: &str, connections: u32) -> TestDatabase {
        let name = format!("mailboxd_test_{tag}");
        let url = format!("{}/{name}", pg_server());
        mailboxd::store::ensure_database(&url)
            .await
            .expect("test database can be created");
        let store = Store::connect(&url, connections).await.expect("connect");
        TestDatabase { name, url, store }
    }
}

impl std::ops::Deref for TestDatabase {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        run_detached_to_end(async move {
            if let Err(e) = drop_database(&name).await {
                eprintln!("cannot drop test database {name}: {e}");
            }
        });
    }
}

async fn drop_database(name: &str) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", pg_server())).await?;
    let sql = format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "\"\"")
    );
    // The name is this guard's own (`mailboxd_test_<hex>`), quoted: no outside input.
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

/// Whether a database of that name exists on the test server.
pub async fn database_exists(name: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", pg_server()))
        .await
        .expect("the test server answers");
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .expect("pg_database answers")
}

/// This test's exchanges and queues (`test.<tag>.…`), deleted when the guard is dropped
/// (they would also expire on their own, minutes later).
pub struct TestBroker {
    pub amqp: Amqp,
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let amqp = self.amqp.clone();
        run_detached_to_end(async move { delete_topology(&amqp).await });
    }
}

async fn delete_topology(a: &Amqp) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(conn) = mailboxd::broker::connect(&a.url, "test cleanup").await else {
        eprintln!("cannot reach RabbitMQ to delete {}", a.queue);
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    let dead = mailboxd::broker::dead_letter_queue(a);
    for q in [a.queue.as_str(), dead.as_str()] {
        let _ = ch
            .queue_delete(q.into(), QueueDeleteOptions::default())
            .await;
    }
    for e in [a.exchange.as_str(), a.dead_letter_exchange.as_str()] {
        let _ = ch
            .exchange_delete(e.into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "test cleanup done".into()).await;
}

/// Whether the broker has a queue of that name (a passive declare succeeds).
pub async fn queue_exists(amqp_url: &str, queue: &str) -> bool {
    let conn = mailboxd::broker::connect(amqp_url, "test check")
        .await
        .expect("RabbitMQ answers");
    let ch = conn.create_channel().await.expect("a channel");
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let found = ch
        .queue_declare(queue.into(), passive, Default::default())
        .await
        .is_ok();
    let _ = conn.close(200, "test check done".into()).await;
    found
}

/// Whether the broker has an exchange of that name (a passive declare succeeds).
pub async fn exchange_exists(amqp_url: &str, exchange: &str) -> bool {
    let conn = mailboxd::broker::connect(amqp_url, "test check")
        .await
        .expect("RabbitMQ answers");
    let ch = conn.create_channel().await.expect("a channel");
    let passive = lapin::options::ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let found = ch
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Topic,
            passive,
            Default::default(),
        )
        .await
        .is_ok();
    let _ = conn.close(200, "test check done".into()).await;
    found
}
