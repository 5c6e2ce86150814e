//! New jobs from a batch of events: idempotent on the event id, and the latest intent wins
//! per account — within the batch and against what is stored. The work is set-based (a
//! handful of statements per batch, not per event) so that ingest keeps up with a burst;
//! what each event becomes is decided in Rust, in between.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::event::{Event, EventKind};
use crate::job::JobState;
use crate::outcome::OutcomeResult;
use crate::store::outcomes::insert_outcomes_of;
use crate::store::{Store, StoreError};
use crate::trace::TraceParent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new job; it may have superseded older ones of the same account.
    New(Uuid),
    /// The event id was already known (a redelivery): nothing was written.
    Duplicate(Uuid),
    /// A newer event for the account is already queued: recorded as superseded.
    Stale(Uuid),
}

impl Inserted {
    pub fn job_id(self) -> Uuid {
        match self {
            Inserted::New(id) | Inserted::Duplicate(id) | Inserted::Stale(id) => id,
        }
    }
}

/// The newest stored job of an account's lane that carries its intent: when it happened,
/// which (keyed by [`lane`]).
type Newest = HashMap<String, (DateTime<Utc>, Uuid)>;

/// Where "latest intent wins" applies: an account's joiners and leavers decide whether it has
/// a visible mailbox, its movers what the mailbox's addresses are. A mover never supersedes a
/// pending joiner or leaver (the mailbox must still be made, or hidden), nor is superseded by
/// one; a newer mover supersedes an older one.
fn lane(account: &str, kind: EventKind) -> String {
    match kind {
        // A sAMAccountName holds no control character, so the marker cannot collide.
        EventKind::Mover => format!("{account}\u{1}mover"),
        EventKind::Joiner | EventKind::Leaver => account.to_owned(),
    }
}

/// A job row to write for the event at `index` of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NewRow {
    index: usize,
    id: Uuid,
    /// A newer event of the same account (stored, or later in the batch) makes it moot.
    superseded_by: Option<Uuid>,
}

impl NewRow {
    fn state(&self) -> JobState {
        match self.superseded_by {
            Some(_) => JobState::Superseded,
            None => JobState::Queued,
        }
    }
}

/// What a batch comes to: one answer per event, and the rows to write.
#[derive(Debug)]
struct Decision {
    inserted: Vec<Inserted>,
    rows: Vec<NewRow>,
}

impl Store {
    /// Inserts the jobs for a batch of events in one transaction (see the module doc).
    pub async fn insert_events(
        &self,
        events: &[Event],
        max_attempts: i32,
    ) -> Result<Vec<Inserted>, StoreError> {
        self.insert_deliveries(events, &[], max_attempts).await
    }

    /// `insert_events` with each event's AMQP `reply_to` (by index; missing ones have none),
    /// where its outcome goes as well. Jobs that are moot at once, and older pending jobs a
    /// new one supersedes, get their outcome in the same transaction.
    pub async fn insert_deliveries(
        &self,
        events: &[Event],
        reply_to: &[ReplyTo],
        max_attempts: i32,
    ) -> Result<Vec<Inserted>, StoreError> {
        self.insert_traced(events, reply_to, &[], max_attempts)
            .await
    }

    /// `insert_deliveries` with the `traceparent` each event came with (by index; missing
    /// ones have none), kept on its job.
    pub(crate) async fn insert_traced(
        &self,
        events: &[Event],
        reply_to: &[ReplyTo],
        traces: &[Option<TraceParent>],
        max_attempts: i32,
    ) -> Result<Vec<Inserted>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // The key that serialises work (`coalesce(account_guid::text, account)`, migration
        // 0023): the objectGUID when the event
        // gives one, else its name, until the worker re-keys it (`resolve_account`).
        let accounts: Vec<String> = events.iter().map(|e| e.account.key()).collect();
        let mut tx = self.pool.begin().await?;
        lock_accounts(&mut tx, &accounts).await?;
        let known = known_events(&mut tx, events).await?;
        let newest = newest_per_lane(&mut tx, &accounts).await?;
        let lanes: Vec<String> = events
            .iter()
            .zip(&accounts)
            .map(|(e, a)| lane(a, e.kind))
            .collect();
        let decision = decide(events, &lanes, &known, &newest);
        if !decision.rows.is_empty() {
            let batch = Batch {
                events,
                accounts: &accounts,
                reply_to,
                traces,
            };
            insert_rows(&mut tx, &batch, &decision.rows, max_attempts).await?;
            let mut moot =
                supersede_older(&mut tx, &batch, &lanes, &decision.rows, &newest).await?;
            moot.extend(
                decision
                    .rows
                    .iter()
                    .filter(|r| r.superseded_by.is_some())
                    .map(|r| r.id),
            );
            insert_outcomes_of(&mut tx, &moot, OutcomeResult::Superseded, self.channels).await?;
        }
        tx.commit().await?;
        self.jobs_inserted(decision.rows.len());
        Ok(decision.inserted)
    }
}

/// Serialises with other replicas' inserts for the same accounts, so that "latest intent
/// wins" holds across replicas; in sorted order, so two batches cannot deadlock.
pub(super) async fn lock_accounts(
    tx: &mut Transaction<'_, Postgres>,
    accounts: &[String],
) -> Result<(), StoreError> {
    let mut sorted = accounts.to_vec();
    sorted.sort();
    sorted.dedup();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(a, 7)) FROM unnest($1::text[]) AS a",
    )
    .bind(&sorted)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The jobs already stored for the batch's event ids (redeliveries).
async fn known_events(
    tx: &mut Transaction<'_, Postgres>,
    events: &[Event],
) -> Result<HashMap<String, Uuid>, StoreError> {
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let rows: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT event_id, id FROM jobs WHERE event_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// The newest stored event per account and [`lane`], pending or already processed.
async fn newest_per_lane(
    tx: &mut Transaction<'_, Postgres>,
    accounts: &[String],
) -> Result<Newest, StoreError> {
    let rows: Vec<(String, bool, DateTime<Utc>, Uuid)> = sqlx::query_as(
        "SELECT DISTINCT ON (coalesce(account_guid::text, account), kind = $3)
                coalesce(account_guid::text, account), kind = $3, occurred_at, id FROM jobs
          WHERE coalesce(account_guid::text, account) = ANY($1) AND state = ANY($2)
          ORDER BY coalesce(account_guid::text, account), kind = $3, occurred_at DESC,
                   created_at DESC",
    )
    .bind(accounts)
    .bind(&JobState::INTENDED[..])
    .bind(EventKind::Mover)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(a, mover, t, id)| {
            let kind = if mover {
                EventKind::Mover
            } else {
                EventKind::Joiner
            };
            (lane(&a, kind), (t, id))
        })
        .collect())
}

/// Decides every event: a duplicate (of a stored job or of an earlier event in the batch),
/// a new job, or a new job that is stale at once because a newer event of its account is
/// stored or comes later in the batch.
fn decide(
    events: &[Event],
    lanes: &[String],
    known: &HashMap<String, Uuid>,
    newest: &Newest,
) -> Decision {
    let ids = assign_ids(events, known);
    let winners = batch_winners(events, lanes, &ids);
    let mut decision = Decision {
        inserted: Vec::with_capacity(events.len()),
        rows: Vec::new(),
    };
    for (i, slot) in ids.iter().enumerate() {
        let id = match slot {
            Slot::Duplicate(id) => {
                decision.inserted.push(Inserted::Duplicate(*id));
                continue;
            }
            Slot::Fresh(id) => *id,
        };
        let stored_newer = newest
            .get(&lanes[i])
            .filter(|(t, _)| *t > events[i].occurred_at)
            .map(|(_, id)| *id);
        let winner = winners[lanes[i].as_str()];
        let superseded_by = stored_newer.or_else(|| (winner != i).then(|| ids[winner].id()));
        decision.inserted.push(match superseded_by {
            Some(_) => Inserted::Stale(id),
            None => Inserted::New(id),
        });
        decision.rows.push(NewRow {
            index: i,
            id,
            superseded_by,
        });
    }
    decision
}

/// The job id for each event of the batch: the known one, or a fresh one.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Duplicate(Uuid),
    Fresh(Uuid),
}

impl Slot {
    fn id(self) -> Uuid {
        match self {
            Slot::Duplicate(id) | Slot::Fresh(id) => id,
        }
    }
}

fn assign_ids(events: &[Event], known: &HashMap<String, Uuid>) -> Vec<Slot> {
    let mut fresh: HashMap<&str, Uuid> = HashMap::new();
    events
        .iter()
        .map(|e| match known.get(&e.id).or(fresh.get(e.id.as_str())) {
            Some(id) => Slot::Duplicate(*id),
            None => {
                let id = Uuid::new_v4();
                fresh.insert(e.id.as_str(), id);
                Slot::Fresh(id)
            }
        })
        .collect()
}

/// Per account and [`lane`], the index of the newest new event of the batch (a later one
/// wins a tie).
fn batch_winners<'a>(
    events: &[Event],
    lanes: &'a [String],
    ids: &[Slot],
) -> HashMap<&'a str, usize> {
    let mut winner: HashMap<&str, usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if matches!(ids[i], Slot::Duplicate(_)) {
            continue;
        }
        let w = winner.entry(lanes[i].as_str()).or_insert(i);
        if e.occurred_at >= events[*w].occurred_at {
            *w = i;
        }
    }
    winner
}

/// The batch being inserted: the events, their account keys (see `insert_deliveries`) and
/// reply-to addresses.
struct Batch<'a> {
    events: &'a [Event],
    accounts: &'a [String],
    reply_to: &'a [ReplyTo],
    traces: &'a [Option<TraceParent>],
}

/// Where an event's outcome goes back besides the outcome exchange: its AMQP `reply_to` as
/// the intake judged it (the queue its outcome goes to as well, or the one it named and was
/// refused, with why), kept on the job; and whether it came over the HTTP intake, whose
/// senders hear outcomes on the HTTP callback (`[outcome_callback]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyTo {
    pub queue: Option<String>,
    pub refused: Option<String>,
    pub http_intake: bool,
}

/// Writes the new job rows in one statement.
async fn insert_rows(
    tx: &mut Transaction<'_, Postgres>,
    batch: &Batch<'_>,
    rows: &[NewRow],
    max_attempts: i32,
) -> Result<(), StoreError> {
    let Batch {
        events,
        reply_to,
        traces,
        ..
    } = batch;
    let event = |r: &NewRow| &events[r.index];
    let payloads = rows
        .iter()
        .map(|r| serde_json::to_value(event(r)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Corrupt(format!("cannot serialise event: {e}")))?;
    sqlx::query(
        "INSERT INTO jobs (id, event_id, kind, account, payload, source, state, max_attempts,
                           occurred_at, superseded_by, finished_at, reply_to, reply_to_refused,
                           trace_parent, account_guid, http_intake)
         SELECT u.id, u.event_id, u.kind, u.account, u.payload, u.source, u.state, $10,
                u.occurred_at, u.superseded_by,
                CASE WHEN u.superseded_by IS NULL THEN NULL ELSE now() END, u.reply_to,
                u.reply_to_refused, u.trace_parent, u.account_guid, u.http_intake
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[],
                       $7::text[], $8::timestamptz[], $9::uuid[], $11::text[], $12::text[],
                       $13::text[], $14::uuid[], $15::bool[])
                AS u(id, event_id, kind, account, payload, source, state, occurred_at, superseded_by,
                     reply_to, reply_to_refused, trace_parent, account_guid, http_intake)",
    )
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| event(r).id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| event(r).kind).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| event(r).account.name_key())
            .collect::<Vec<_>>(),
    )
    .bind(payloads)
    .bind(rows.iter().map(|r| event(r).source.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(NewRow::state).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| event(r).occurred_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.superseded_by).collect::<Vec<_>>())
    .bind(max_attempts)
    .bind(
        rows.iter()
            .map(|r| reply_to.get(r.index).and_then(|t| t.queue.clone()))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| reply_to.get(r.index).and_then(|t| t.refused.clone()))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| traces.get(r.index).and_then(|t| t.as_ref().map(|t| t.to_string())))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| event(r).account.object_guid)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| reply_to.get(r.index).is_some_and(|t| t.http_intake))
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Latest intent wins: older pending jobs of each account that got a new queued job are
/// moot now. Only accounts with stored jobs can have any. Returns the ones it superseded.
async fn supersede_older(
    tx: &mut Transaction<'_, Postgres>,
    batch: &Batch<'_>,
    lanes: &[String],
    rows: &[NewRow],
    newest: &Newest,
) -> Result<Vec<Uuid>, StoreError> {
    let Batch {
        events, accounts, ..
    } = batch;
    let winners: Vec<&NewRow> = rows
        .iter()
        .filter(|r| r.state() == JobState::Queued && newest.contains_key(&lanes[r.index]))
        .collect();
    if winners.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "UPDATE jobs SET state = $5, superseded_by = u.id, finished_at = now(), updated_at = now()
           FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $6::bool[])
                AS u(account, id, occurred_at, mover)
          WHERE coalesce(jobs.account_guid::text, jobs.account) = u.account AND jobs.id <> u.id
            AND jobs.state = ANY($4)
            AND jobs.occurred_at <= u.occurred_at
            AND (jobs.kind = $7) = u.mover
         RETURNING jobs.id",
    )
    .bind(
        winners
            .iter()
            .map(|r| accounts[r.index].as_str())
            .collect::<Vec<_>>(),
    )
    .bind(winners.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(
        winners
            .iter()
            .map(|r| events[r.index].occurred_at)
            .collect::<Vec<_>>(),
    )
    .bind(&JobState::CLAIMABLE[..])
    .bind(JobState::Superseded)
    .bind(
        winners
            .iter()
            .map(|r| events[r.index].kind == EventKind::Mover)
            .collect::<Vec<_>>(),
    )
    .bind(EventKind::Mover)
    .fetch_all(&mut **tx)
    .await?)
}
