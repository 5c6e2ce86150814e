//! The column encoding of the enums the database keeps as text — job states, job effects,
//! error classes, attempt ends, operator actions, outcome results, alert kinds, roles —
//! each read and written as the text its vocabulary module gives it (`text_enum!`), so SQL
//! binds and reads the enums themselves and no string of a state is written anywhere else
//! in Rust. The vocabulary itself lives beside `event`: `job`, `outcome`, `alert::draft`.

use crate::access::Role;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use crate::alert::draft::{AlertKind, CircuitChange};
use crate::budget::slot::SlotPurpose;
use crate::event::EventKind;
use crate::job::{ActionKind, AttemptEnd, ErrorClass, JobEffect, JobState, JobStep};
use crate::outcome::{CloudSourceName, HttpDelivery, OutcomeResult};

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

text_encoding!(Role);

// The vocabulary modules name the states; the store only stores them.
text_encoding!(JobState);
text_encoding!(JobEffect);
text_encoding!(JobStep);
text_encoding!(ErrorClass);
text_encoding!(AttemptEnd);
text_encoding!(ActionKind);
text_encoding!(OutcomeResult);
text_encoding!(HttpDelivery);
text_encoding!(AlertKind);
text_encoding!(CircuitChange);
text_encoding!(EventKind);
text_encoding!(SlotPurpose);
text_encoding!(CloudSourceName);

/// `('queued', 'retrying', …)`: for the statements that must name states in their text,
/// so that the planner can match a partial index (a bound parameter cannot).
pub(super) fn sql_list(states: &[JobState]) -> String {
    let quoted: Vec<String> = states.iter().map(|s| format!("'{s}'")).collect();
    format!("({})", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim names its states in its text to use the partial indexes of migration
    /// 0001 (`jobs_claimable` as 0027 made it again): the indexes and the enums must name
    /// the same states.
    #[test]
    fn the_claims_partial_indexes_cover_the_states_it_names() {
        let migration = [
            include_str!("../../migrations/0001_jobs.sql"),
            include_str!("../../migrations/0027_claim_order.sql"),
        ]
        .concat();
        let running = format!("WHERE state = '{}';", JobState::Running);
        for index in [
            format!(
                "CREATE INDEX jobs_claimable ON jobs (next_attempt_at, created_at) WHERE state IN {};",
                sql_list(&JobState::CLAIMABLE)
            ),
            format!("CREATE UNIQUE INDEX jobs_one_running_per_account ON jobs (account) {running}"),
            format!("CREATE INDEX jobs_expired_leases ON jobs (locked_until) {running}"),
        ] {
            assert!(migration.contains(&index), "{index}");
        }
    }
}
