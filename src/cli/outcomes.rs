//! `mailboxd outcomes list`: the outcome outbox — what was told to the IAM system, and what
//! is still waiting for the broker, IdentityIQ or the HTTP callback (with the last error),
//! or was refused by them.

use clap::{Subcommand, ValueEnum};

use crate::store::{OutcomeFilter, Store};

#[derive(Subcommand, Debug)]
pub enum OutcomesCommand {
    /// Outcomes, newest first.
    List {
        /// `all`, `unsent` (not confirmed yet everywhere it is due), `failing` (unsent after a
        /// failed delivery) or `refused` (refused for good by IdentityIQ or the callback).
        #[arg(long, value_enum, default_value_t = Which::All)]
        status: Which,
        /// Only this account's (sAMAccountName).
        #[arg(long)]
        account: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Which {
    All,
    Unsent,
    Failing,
    Refused,
}

pub(super) async fn run(cmd: OutcomesCommand, store: &Store) -> anyhow::Result<i32> {
    let OutcomesCommand::List {
        status,
        account,
        limit,
        json,
    } = cmd;
    let filter = match status {
        Which::All => OutcomeFilter::All,
        Which::Unsent => OutcomeFilter::Unsent,
        Which::Failing => OutcomeFilter::Failing,
        Which::Refused => OutcomeFilter::Refused,
    };
    let rows = store
        .list_outcomes(filter, account.as_deref(), limit)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{:<36}  {:<20}  {:<20}  {:<24}  {:<4}  STATUS",
        "ID", "CREATED", "ACCOUNT", "ROUTING KEY", "TRY"
    );
    for r in rows {
        let status = match (&r.sent_at, &r.last_error) {
            (Some(at), _) => format!(
                "sent {} to {}",
                at.format("%H:%M:%S"),
                r.delivered.as_deref().unwrap_or("?")
            ),
            (None, Some(e)) => format!("FAILING: {e}"),
            (None, None) => "pending".to_owned(),
        };
        let status = [
            ("identityiq", r.iiq_state, &r.iiq_last_error),
            ("callback", r.callback_state, &r.callback_last_error),
        ]
        .into_iter()
        .filter_map(|(name, state, error)| {
            let state = state?;
            Some(match error {
                Some(e) => format!("{name} {state}: {e}"),
                None => format!("{name} {state}"),
            })
        })
        .fold(status, |all, one| format!("{all}; {one}"));
        println!(
            "{:<36}  {:<20}  {:<20}  {:<24}  {:<4}  {status}",
            r.id,
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.account,
            r.routing_key,
            r.attempts,
        );
    }
    Ok(0)
}
