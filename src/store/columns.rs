//! The enums the database keeps in text columns — job states, job outcomes, error classes,
//! attempt outcomes, operator actions — each mapped to and from its text in one place: the
//! table in its `text_column!` below. That table gives the enum its `as_str`/`parse`, its
//! `Display` and JSON form, and its sqlx encoding, so SQL binds and reads the enums
//! themselves and no string of a state is written anywhere else in Rust.

use std::fmt;
use std::str::FromStr;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use crate::event::EventKind;

/// A text column's value that names no variant of the enum read from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a {what}")]
pub struct UnknownText {
    pub what: &'static str,
    pub text: String,
}

/// Stores an enum that has `as_str` and `parse` in a Postgres text column (arrays too).
macro_rules! text_encoding {
    ($name:ident) => {
        impl Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl PgHasArrayType for $name {
            fn array_type_info() -> PgTypeInfo {
                <&str as PgHasArrayType>::array_type_info()
            }
            fn array_compatible(ty: &PgTypeInfo) -> bool {
                <&str as PgHasArrayType>::array_compatible(ty)
            }
        }

        impl Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $name {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<Postgres>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }
    };
}

/// An enum and the text each variant is stored as, with everything derived from that pair.
macro_rules! text_column {
    (
        $(#[$meta:meta])*
        pub enum $name:ident as $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownText;
            fn from_str(text: &str) -> Result<$name, UnknownText> {
                $name::parse(text).ok_or_else(|| UnknownText {
                    what: $what,
                    text: text.to_owned(),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        text_encoding!($name);
    };
}

text_column! {
    /// Where a job is in its life (ARCHITECTURE.md, "Job states", has every transition).
    pub enum JobState as "job state" {
        Queued = "queued",
        Running = "running",
        Retrying = "retrying",
        WaitingForSync = "waiting_for_sync",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        Superseded = "superseded",
    }
}

impl JobState {
    /// Waiting for a worker to claim them: a claim, a supersede and an operator cancel take
    /// jobs in these states, and the `jobs_claimable` index covers exactly them.
    pub const PENDING: [JobState; 3] = [
        JobState::Queued,
        JobState::Retrying,
        JobState::WaitingForSync,
    ];
    /// Not finished yet: pending, or running now.
    pub const UNFINISHED: [JobState; 4] = [
        JobState::Queued,
        JobState::Retrying,
        JobState::WaitingForSync,
        JobState::Running,
    ];
    /// What an operator may run again: what ended without success, or is waiting.
    pub const RETRYABLE: [JobState; 4] = [
        JobState::Failed,
        JobState::Cancelled,
        JobState::Retrying,
        JobState::WaitingForSync,
    ];
    /// States that carry the account's intent (the newest of them decides whether an older
    /// event is stale): everything but what was cancelled or superseded.
    pub const INTENDED: [JobState; 6] = [
        JobState::Queued,
        JobState::Retrying,
        JobState::WaitingForSync,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
    ];
    /// Finished and of no further interest after the retention: failed jobs are kept
    /// until an operator has looked at them.
    pub const PRUNABLE: [JobState; 3] = [
        JobState::Succeeded,
        JobState::Cancelled,
        JobState::Superseded,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Superseded
        )
    }

    /// `('queued', 'retrying', …)`: for the statements that must name states in their text,
    /// so that the planner can match a partial index (a bound parameter cannot).
    pub fn sql_list(states: &[JobState]) -> String {
        let quoted: Vec<String> = states.iter().map(|s| format!("'{s}'")).collect();
        format!("({})", quoted.join(", "))
    }
}

text_column! {
    /// What a job that ended without an error came to: what Exchange reported (`enabled`,
    /// `unhidden`, `hidden`, `already`, `not_remote`), what the directory showed before
    /// Exchange was asked (`already`, `not_remote`, `gone`), or a stale event (`stale`).
    pub enum JobOutcome as "job outcome" {
        /// A remote mailbox was enabled.
        Enabled = "enabled",
        /// A hidden remote mailbox (a rehire) was made visible again.
        Unhidden = "unhidden",
        /// The remote mailbox was hidden from the address lists.
        Hidden = "hidden",
        /// It was true already: nothing to do.
        Already = "already",
        /// A leaver without a remote mailbox: nothing to hide.
        NotRemote = "not_remote",
        /// A leaver whose account no longer exists.
        Gone = "gone",
        /// Cancelled: the directory shows the event no longer applies.
        Stale = "stale",
    }
}

text_column! {
    /// Why an attempt failed, which decides what happens next (docs/decisions.md, "What an
    /// attempt's error leads to").
    pub enum ErrorClass as "error class" {
        /// Network, WinRM timeouts, throttling, replication lag: retry with backoff.
        Transient = "transient",
        /// The directory says wait for cloud sync.
        NotSynced = "not_synced",
        /// The account or request is wrong: retrying cannot help; alert support.
        Permanent = "permanent",
        /// Authentication refused, host down for long: pause, alert operations once.
        Systemic = "systemic",
    }
}

text_column! {
    /// What one attempt came to, as its `job_attempts` row records it.
    pub enum AttemptOutcome as "attempt outcome" {
        Succeeded = "succeeded",
        Retrying = "retrying",
        WaitingForSync = "waiting_for_sync",
        Failed = "failed",
        Cancelled = "cancelled",
        /// Not the job's fault (circuit open, waiting for the sync): no attempt used.
        Deferred = "deferred",
        /// The replica running it stopped; another one took the job over.
        LeaseExpired = "lease_expired",
        /// The replica shut down before the attempt ended and gave the job back.
        Released = "released",
    }
}

text_column! {
    /// What an operator did to a job.
    pub enum ActionKind as "operator action" {
        Retry = "retry",
        Cancel = "cancel",
    }
}

text_column! {
    /// What an outcome message reports: how the job ended, or that it waits for the sync.
    pub enum OutcomeResult as "outcome result" {
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        Superseded = "superseded",
        WaitingForSync = "waiting_for_sync",
    }
}

impl OutcomeResult {
    /// The result a job's new state reports, if it reports one.
    pub fn of(state: JobState) -> Option<OutcomeResult> {
        match state {
            JobState::Succeeded => Some(OutcomeResult::Succeeded),
            JobState::Failed => Some(OutcomeResult::Failed),
            JobState::Cancelled => Some(OutcomeResult::Cancelled),
            JobState::Superseded => Some(OutcomeResult::Superseded),
            JobState::WaitingForSync => Some(OutcomeResult::WaitingForSync),
            JobState::Queued | JobState::Running | JobState::Retrying => None,
        }
    }
}

text_column! {
    /// What a signed-in person may do on the dashboard: viewers read, operators also act.
    pub enum Role as "dashboard role" {
        Viewer = "viewer",
        Operator = "operator",
    }
}

// The event's own module names its kinds; the store only stores them.
text_encoding!(EventKind);

impl FromStr for EventKind {
    type Err = UnknownText;
    fn from_str(text: &str) -> Result<EventKind, UnknownText> {
        EventKind::parse(text).ok_or_else(|| UnknownText {
            what: "job kind",
            text: text.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_reads_back_from_its_text() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
        }
        for o in JobOutcome::ALL {
            assert_eq!(JobOutcome::parse(o.as_str()), Some(o));
        }
        for c in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(c.as_str()), Some(c));
        }
        for a in AttemptOutcome::ALL {
            assert_eq!(AttemptOutcome::parse(a.as_str()), Some(a));
        }
        let err = "Queued".parse::<JobState>().unwrap_err();
        assert_eq!(err.to_string(), "\"Queued\" is not a job state");
        assert_eq!(
            serde_json::json!(JobState::WaitingForSync),
            "waiting_for_sync"
        );
    }

    /// The claim names its states in its text to use the partial indexes of migration
    /// 0001: the indexes and the enums must name the same states.
    #[test]
    fn the_claims_partial_indexes_cover_the_states_it_names() {
        let migration = include_str!("../../migrations/0001_jobs.sql");
        let running = format!("WHERE state = '{}';", JobState::Running);
        for index in [
            format!(
                "CREATE INDEX jobs_claimable ON jobs (next_attempt_at) WHERE state IN {};",
                JobState::sql_list(&JobState::PENDING)
            ),
            format!("CREATE UNIQUE INDEX jobs_one_running_per_account ON jobs (account) {running}"),
            format!("CREATE INDEX jobs_expired_leases ON jobs (locked_until) {running}"),
        ] {
            assert!(migration.contains(&index), "{index}");
        }
    }
}

text_column! {
    /// What an Exchange session slot is held for.
    pub enum SlotPurpose as "session slot purpose" {
        /// One cold batch: a new shell and Exchange session, closed when the batch ends.
        Batch = "batch",
        /// A warm PowerShell process, for as long as it lives.
        Warm = "warm",
    }
}
