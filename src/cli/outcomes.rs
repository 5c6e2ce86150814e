//! `mailboxd outcomes list`: the outcome outbox — what was told to the IAM system, and what
//! is still waiting for the broker (with the last error).

use clap::{Subcommand, ValueEnum};

use crate::store::{OutcomeFilter, Store};

#[derive(Subcommand, Debug)]
pub enum OutcomesCommand {
    /// Outcomes, newest first.
    List {
        /// `all`, `unsent` (not confirmed yet) or `failing` (unsent after a failed publish).
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
