//! `mailboxd poison …`: the messages that could not become a job, and replaying one (as it
//! was, or with a corrected body) once the sender or mailboxd is fixed.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;

use super::table::{self, Align, Table};
use crate::config::Settings;
use crate::publish::{ReplayError, replay_poison};
use crate::store::{PoisonMessage, Store};

#[derive(Subcommand, Debug)]
pub enum PoisonCommand {
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Publish the stored message again (optionally with a corrected body).
    Replay {
        id: i64,
        /// Replace the body with this file's content (after fixing it).
        #[arg(long)]
        body_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(
    cmd: PoisonCommand,
    store: &Store,
    settings: &Settings,
) -> anyhow::Result<i32> {
    match cmd {
        PoisonCommand::List { limit, json } => list(store, limit, json).await,
        PoisonCommand::Show { id, json } => show(store, id, json).await,
        PoisonCommand::Replay {
            id,
            body_file,
            json,
        } => {
            let body = body_file
                .map(|f| std::fs::read(&f).with_context(|| format!("reading {}", f.display())))
                .transpose()?;
            replay(store, settings, id, body, json).await
        }
    }
}

async fn list(store: &Store, limit: i64, json: bool) -> anyhow::Result<i32> {
    let list = store.list_poison(limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    let mut t = Table::new(&[
        ("ID", Align::Right),
        ("RECEIVED", Align::Left),
        ("ROUTING KEY", Align::Left),
        ("BYTES", Align::Right),
        ("REASON", Align::Left),
    ]);
    for p in &list {
        t.row(vec![
            p.id.to_string(),
            p.received_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            p.routing_key.clone(),
            p.body_size.to_string(),
            p.reason.clone(),
        ]);
    }
    print!("{}", t.render());
    let total = store.count_poison().await?;
    if let Some(more) = table::more(list.len() as i64, total, "use a larger --limit") {
        println!("{more}");
    }
    Ok(0)
}

async fn show(store: &Store, id: i64, json: bool) -> anyhow::Result<i32> {
    let Some(p) = store.get_poison(id).await? else {
        eprintln!("no poison message {id}");
        return Ok(1);
    };
    let body = String::from_utf8_lossy(&p.body).into_owned();
    if json {
        let mut v = serde_json::to_value(&p)?;
        v["body"] = serde_json::json!(body);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_message(&p, &body);
    }
    Ok(0)
}

fn print_message(p: &PoisonMessage, body: &str) {
    println!("poison message {} received {}", p.id, p.received_at);
    println!("reason       {}", p.reason);
    println!("routing key  {} (exchange {})", p.routing_key, p.exchange);
    println!("content type {}", p.content_type.as_deref().unwrap_or("-"));
    println!("message id   {}", p.message_id.as_deref().unwrap_or("-"));
    let truncated = if p.truncated {
        " (stored truncated)"
    } else {
        ""
    };
    println!("size         {} bytes{truncated}", p.body_size);
    println!("body\n{body}");
}

async fn replay(
    store: &Store,
    settings: &Settings,
    id: i64,
    body: Option<Vec<u8>>,
    json: bool,
) -> anyhow::Result<i32> {
    let edited = if body.is_some() {
        " with a corrected body"
    } else {
        ""
    };
    let r = replay_poison(store, &settings.amqp, id, body).await;
    let outcome = match &r {
        Ok(key) => format!("done: to {key}"),
        Err(e) => format!("refused: {e}"),
    };
    let actor = crate::audit::cli_actor();
    let entry =
        crate::audit::Entry::new(&actor, "replay", &format!("poison {id}{edited}"), &outcome);
    crate::audit::record(store, entry).await;
    match r {
        Ok(key) => {
            if json {
                println!("{}", serde_json::json!({"id": id, "replayed_to": key}));
            } else {
                println!("replayed poison message {id} to routing key {key}");
            }
            Ok(0)
        }
        Err(ReplayError::NotFound(_)) => {
            eprintln!("no poison message {id}");
            Ok(1)
        }
        Err(ReplayError::Truncated(_)) => {
            bail!("poison message {id} was stored truncated; replay it with --body-file")
        }
        Err(e) => Err(e.into()),
    }
}
