//! Dashboard sessions of people signed in with AD (`operator_sessions`): only the hash of
//! the session id is stored, expiry is decided by the database's clock so every replica
//! agrees, and an ended session stays on record with why it ended. Failed sign-ins are
//! counted here too (`signin_attempts`, per account and per client network), one atomic
//! statement per attempt, so every replica and every parallel request sees the same count.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::access::Role;

/// A session to record at sign-in.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// SHA-256 of the session id the cookie carries.
    pub id_hash: &'a [u8],
    /// Who the person is, as actions record them (`CORP\jdoe`).
    pub person: &'a str,
    pub user_dn: &'a str,
    pub role: Role,
}

/// An open session as a request sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OpenSession {
    pub person: String,
    pub user_dn: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub groups_checked_at: DateTime<Utc>,
}

/// How long sessions live: unused for `idle`, or `lifetime` after sign-in, they end.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub idle: Duration,
    pub lifetime: Duration,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Store {
    pub async fn create_session(&self, s: &NewSession<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO operator_sessions (id_hash, person, user_dn, role) VALUES ($1, $2, $3, $4)",
        )
        .bind(s.id_hash)
        .bind(s.person)
        .bind(s.user_dn)
        .bind(s.role)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The open session with this id hash, marked as used now; `None` when there is none,
    /// it was ended, or it expired (then it is ended here, with the reason).
    pub async fn use_session(
        &self,
        id_hash: &[u8],
        limits: SessionLimits,
    ) -> Result<Option<OpenSession>, StoreError> {
        let open: Option<OpenSession> = sqlx::query_as(
            "UPDATE operator_sessions SET last_seen_at = now()
              WHERE id_hash = $1 AND ended_at IS NULL
                AND last_seen_at > now() - make_interval(secs => $2)
                AND created_at > now() - make_interval(secs => $3)
             RETURNING person, user_dn, role, created_at, groups_checked_at",
        )
        .bind(id_hash)
        .bind(secs(limits.idle))
        .bind(secs(limits.lifetime))
        .fetch_optional(&self.pool)
        .await?;
        if open.is_none() {
            self.end_session(id_hash, "expired").await?;
        }
        Ok(open)
    }

    /// Ends the session (sign-out, expiry, groups left); a session already ended keeps
    /// its first reason.
    pub async fn end_session(&self, id_hash: &[u8], reason: &str) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE operator_sessions SET ended_at = now(), ended_reason = $2
              WHERE id_hash = $1 AND ended_at IS NULL",
        )
        .bind(id_hash)
        .bind(reason)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Records that the person's groups were read again and what role they give now.
    pub(crate) async fn session_checked(
        &self,
        id_hash: &[u8],
        role: Role,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE operator_sessions SET groups_checked_at = now(), role = $2
              WHERE id_hash = $1 AND ended_at IS NULL",
        )
        .bind(id_hash)
        .bind(role)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes sessions that ended (or started) longer than `keep` ago.
    pub(crate) async fn purge_sessions(&self, keep: Duration) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM operator_sessions
              WHERE coalesce(ended_at, created_at) < now() - make_interval(secs => $1)",
        )
        .bind(secs(keep))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Takes one attempt from `subject`'s budget of `limit` failed sign-ins (`guid:…` an
    /// account, `addr:…` a client network), in one statement: parallel requests are
    /// serialised on the row, so no more than `limit` of them get through. The count
    /// starts again once the last attempt is `window` old (as AD's own counter does).
    /// `false`: the budget is spent, the attempt must not reach the directory.
    pub(crate) async fn take_signin_attempt(
        &self,
        subject: &str,
        limit: u32,
        window: Duration,
    ) -> Result<bool, StoreError> {
        let taken: Option<i32> = sqlx::query_scalar(
            "INSERT INTO signin_attempts AS a (subject, failures) VALUES ($1, 1)
             ON CONFLICT (subject) DO UPDATE
                SET failures = CASE WHEN a.last_at < now() - make_interval(secs => $3)
                                    THEN 1 ELSE a.failures + 1 END,
                    last_at = now()
              WHERE a.last_at < now() - make_interval(secs => $3) OR a.failures < $2
             RETURNING failures",
        )
        .bind(subject)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .bind(secs(window))
        .fetch_optional(&self.pool)
        .await?;
        Ok(taken.is_some())
    }

    /// Gives an attempt back (it never reached a verdict: the directory did not answer,
    /// or it succeeded and the network's budget is for failures).
    pub(crate) async fn give_back_signin_attempt(&self, subject: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE signin_attempts SET failures = greatest(failures - 1, 0) WHERE subject = $1",
        )
        .bind(subject)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a subject's failures (the person signed in), and budgets idle for a day.
    pub(crate) async fn clear_signin_attempts(&self, subject: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM signin_attempts WHERE subject = $1 OR last_at < now() - interval '1 day'",
        )
        .bind(subject)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
