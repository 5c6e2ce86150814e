//! The alert outbox: alerts are written here (a job's in the transaction of its failure),
//! then delivered by `alert::delivery` in rounds that lock what is due, so two replicas never
//! send one alert. What goes out when (digests, the hourly cap, retries) is the alert
//! module's policy; this file only keeps the rows and the locks. Also the pairing of the
//! circuit's opened/closed alerts across replicas, which needs a cluster-wide lock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::attempts::{HistoryLine, history};
use super::{Store, StoreError, secs};
use crate::alert::draft::{AlertKind, CircuitAlert, CircuitChange, NewAlert};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Alert {
    pub id: i64,
    pub job_id: Option<Uuid>,
    pub kind: AlertKind,
    pub subject: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub digest_key: Option<String>,
    pub account: Option<String>,
    pub folded_into: Option<i64>,
    pub suppressed: bool,
}

/// A circuit that opens again within this long after a recovery alert is the same problem
/// (another replica noticing late, or a flapping host), not a new email.
pub(crate) const CIRCUIT_REOPEN_QUIET: Duration = Duration::from_secs(60);

/// Writes a failed job's alert with its attempts so far appended to the body.
pub(super) async fn insert_job_alert(
    tx: &mut Transaction<'_, Postgres>,
    job_id: Uuid,
    alert: &NewAlert,
) -> Result<(), StoreError> {
    let mut body = alert.body.clone();
    body.push_str(&history_text(&history(tx, job_id).await?));
    sqlx::query(
        "INSERT INTO alerts (job_id, kind, subject, body, digest_key, account)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(job_id)
    .bind(alert.kind)
    .bind(&alert.subject)
    .bind(&body)
    .bind(&alert.digest_key)
    .bind(&alert.account)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The attempts with their times: what support needs to see the history at a glance.
fn history_text(lines: &[HistoryLine]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut text = String::from("\nAttempts:\n");
    for l in lines {
        text.push_str(&format!(
            "  #{}  {}  {}{}{}{}\n",
            l.attempt,
            l.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            l.outcome,
            l.error_class.map(|c| format!(" ({c})")).unwrap_or_default(),
            l.host
                .as_ref()
                .map(|h| format!(" on {h}"))
                .unwrap_or_default(),
            l.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
        ));
    }
    text
}

impl Store {
    /// An alert not tied to one job (e.g. the circuit opened), written unless the same
    /// subject was raised within `quiet`: one email per real problem, not a storm.
    pub(crate) async fn raise_alert(
        &self,
        alert: &NewAlert,
        quiet: Duration,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO alerts (kind, subject, body)
             SELECT $1, $2, $3
              WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE subject = $2
                                   AND created_at > now() - make_interval(secs => $4))",
        )
        .bind(alert.kind)
        .bind(&alert.subject)
        .bind(&alert.body)
        .bind(secs(quiet))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A circuit alert, paired across replicas per endpoint: `opened` is written unless the
    /// outage was announced already (the newest of the endpoint's pair is an `opened`),
    /// `closed` only after an `opened` — so each outage is one alert and one recovery,
    /// whichever replica sees it first and however many see it. The pair is found by what it
    /// is about (`alerts.circuit_endpoint`, `circuit_change`), never by its subject text.
    pub async fn raise_circuit_alert(&self, circuit: &CircuitAlert) -> Result<bool, StoreError> {
        let opening = circuit.change == CircuitChange::Opened;
        let alert = &circuit.alert;
        let mut tx = self.pool.begin().await?;
        // One decision at a time per endpoint, cluster-wide.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mailboxd circuit alert ' || $1))")
            .bind(&circuit.endpoint)
            .execute(&mut *tx)
            .await?;
        let latest: Option<(CircuitChange, bool)> = sqlx::query_as(
            "SELECT circuit_change, created_at > now() - make_interval(secs => $2)
               FROM alerts WHERE circuit_endpoint = $1
              ORDER BY id DESC LIMIT 1",
        )
        .bind(&circuit.endpoint)
        .bind(secs(CIRCUIT_REOPEN_QUIET))
        .fetch_optional(&mut *tx)
        .await?;
        let latest = latest.map(|(change, recent)| (change == CircuitChange::Opened, recent));
        let write = circuit_alert_due(latest, opening);
        if write {
            sqlx::query(
                "INSERT INTO alerts (kind, subject, body, circuit_endpoint, circuit_change)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(alert.kind)
            .bind(&alert.subject)
            .bind(&alert.body)
            .bind(&circuit.endpoint)
            .bind(circuit.change)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(write)
    }

    /// Locks the alerts due now for one delivery round (at most `limit`; those with a
    /// digest key only once the oldest of their key is `digest_window` old, so a burst
    /// becomes one email). What becomes of them is written through the round.
    pub(crate) async fn alert_round(
        &self,
        limit: i64,
        digest_window: Duration,
    ) -> Result<AlertRound, StoreError> {
        let mut tx = self.pool.begin().await?;
        let due = sqlx::query_as(
            "SELECT * FROM alerts WHERE sent_at IS NULL AND next_attempt_at <= now()
                AND (digest_key IS NULL OR digest_key IN (
                        SELECT digest_key FROM alerts
                         WHERE sent_at IS NULL AND digest_key IS NOT NULL
                           AND created_at <= now() - make_interval(secs => $2)))
              ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(limit)
        .bind(secs(digest_window))
        .fetch_all(&mut *tx)
        .await?;
        Ok(AlertRound { tx, due })
    }

    pub async fn list_alerts(&self, limit: i64) -> Result<Vec<Alert>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM alerts ORDER BY id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Every alert in the outbox, sent or not.
    pub(crate) async fn count_alerts(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM alerts")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Unsent alerts: (all pending, those whose last send failed).
    pub(crate) async fn alert_outbox_depth(&self) -> Result<(i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE last_error IS NOT NULL)
               FROM alerts WHERE sent_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Whether a circuit alert is written, given the newest of its pair (whether it is the
/// `opened` one, whether it is recent).
fn circuit_alert_due(latest: Option<(bool, bool)>, opening: bool) -> bool {
    match (latest, opening) {
        // An outage is announced once; its recovery only after it was announced.
        (Some((true, _)), true) => false,
        // Another replica seeing the same outage late, or a host flapping: the recovery
        // just written stands for it.
        (Some((false, recent)), true) => !recent,
        (None, true) => true,
        (latest, false) => latest.is_some_and(|(opened, _)| opened),
    }
}

/// One delivery round of the outbox: the due alerts, locked until `commit`, and what
/// became of each, written in the same transaction — so a crash between a send and the
/// commit sends that alert again at most once (with the same Message-ID).
pub(crate) struct AlertRound {
    tx: Transaction<'static, Postgres>,
    due: Vec<Alert>,
}

impl AlertRound {
    /// The locked alerts, oldest first (taken: the round keeps only the locks).
    pub(crate) fn take_due(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.due)
    }

    /// Emails sent within the last hour (a digest counts once; suppressed ones not at all).
    pub(crate) async fn sent_last_hour(&mut self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM alerts WHERE sent_at > now() - interval '1 hour'
                AND NOT suppressed AND folded_into IS NULL",
        )
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// `ids` went out as one email: the first carried it, the others are folded into it.
    pub(crate) async fn mark_sent(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        let Some(first) = ids.first() else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE alerts SET sent_at = now(), attempts = attempts + 1, last_error = NULL,
                    folded_into = CASE WHEN id = $2 THEN NULL ELSE $2 END
              WHERE id = ANY($1)",
        )
        .bind(ids)
        .bind(first)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// `ids` are not emailed, for `reason`: done with, and kept for `mailboxd alerts list`.
    pub(crate) async fn mark_suppressed(
        &mut self,
        ids: &[i64],
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alerts SET sent_at = now(), suppressed = true, last_error = $2
              WHERE id = ANY($1)",
        )
        .bind(ids)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Sending `ids` failed with `error`: tried again after `delay`.
    pub(crate) async fn reschedule(
        &mut self,
        ids: &[i64],
        error: &str,
        delay: Duration,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alerts SET attempts = attempts + 1, last_error = $2,
                    next_attempt_at = now() + make_interval(secs => $3) WHERE id = ANY($1)",
        )
        .bind(ids)
        .bind(error)
        .bind(secs(delay))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Writes what became of the round's alerts and releases their locks.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::circuit_alert_due;

    #[test]
    fn each_outage_is_one_alert_and_one_recovery() {
        assert!(
            circuit_alert_due(None, true),
            "the first outage is announced"
        );
        assert!(
            !circuit_alert_due(Some((true, false)), true),
            "announced already"
        );
        assert!(
            !circuit_alert_due(Some((false, true)), true),
            "flapping: recovery stands"
        );
        assert!(
            circuit_alert_due(Some((false, false)), true),
            "a new outage"
        );
        assert!(
            circuit_alert_due(Some((true, true)), false),
            "recovery after the alert"
        );
        assert!(
            !circuit_alert_due(Some((false, false)), false),
            "recovered already"
        );
        assert!(!circuit_alert_due(None, false), "nothing was announced");
    }
}
