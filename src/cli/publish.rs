//! `mailboxd publish`: one event from flags, or every line of a JSON-lines file as it is.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use crate::config::Settings;
use crate::event::{EventKind, MailboxType};
use crate::publish::{EventSpec, Publisher};

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// joiner or leaver (omit with --file; a mover's `rename` goes in a file).
    #[arg(value_parser = ["joiner", "leaver"])]
    pub kind: Option<String>,
    /// sAMAccountName of the account.
    #[arg(long)]
    pub sam: Option<String>,
    /// Event id (default: a new UUID).
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub guid: Option<String>,
    #[arg(long)]
    pub upn: Option<String>,
    #[arg(long)]
    pub remote_routing_address: Option<String>,
    #[arg(long)]
    pub alias: Option<String>,
    #[arg(long)]
    pub primary_smtp_address: Option<String>,
    /// The DC the account was created on.
    #[arg(long)]
    pub dc: Option<String>,
    /// A joiner's mailbox.type: user, shared, room or equipment (absent: user).
    #[arg(long)]
    pub mailbox_type: Option<MailboxType>,
    /// A joiner's mailbox.start_date: the first day (2027-01-04) or an RFC 3339 date-time;
    /// the mailbox stays hidden from the address lists until then.
    #[arg(long)]
    pub start_date: Option<String>,
    /// Publish every line of this file (JSON events, one per line) as it is.
    #[arg(long, conflicts_with_all = ["kind", "sam"])]
    pub file: Option<PathBuf>,
}

/// Publishes, and puts what was published on the audit trail (when the database can be
/// reached: publishing needs only the broker, so a missing database is a warning).
pub(super) async fn run(mut args: PublishArgs, settings: &Settings) -> anyhow::Result<i32> {
    let publisher = Publisher::connect(&settings.amqp).await?;
    let (r, subject) = match args.file.take() {
        Some(path) => {
            let subject = format!("events from {}", path.display());
            (publish_file(&publisher, &path).await, subject)
        }
        None => {
            let subject = format!(
                "{} event for {}",
                args.kind.as_deref().unwrap_or("?"),
                args.sam.as_deref().unwrap_or("?")
            );
            (publish_one(&publisher, args).await, subject)
        }
    };
    let outcome = match &r {
        Ok(_) => "done".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    let entry = crate::audit::Entry::new(&crate::audit::cli_actor(), "publish", &subject, &outcome);
    match super::store(settings).await {
        Ok(store) => crate::audit::record(&store, entry).await,
        Err(e) => {
            tracing::warn!(error = %e, "the publish is not on the audit trail: the database cannot be reached")
        }
    }
    r
}

/// One line of a JSON-lines file, ready to publish: its routing key (from its type), the
/// line itself and its id (the message id).
struct Line<'a> {
    routing_key: &'static str,
    body: &'a [u8],
    id: Option<String>,
}

async fn publish_file(publisher: &Publisher, path: &Path) -> anyhow::Result<i32> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !line.trim().is_empty() {
            lines.push(read_line(line, path, i + 1)?);
        }
    }
    let refs: Vec<(&str, &[u8], Option<&str>)> = lines
        .iter()
        .map(|l| (l.routing_key, l.body, l.id.as_deref()))
        .collect();
    let n = publisher.publish_many(&refs, 1000).await?;
    println!("published {n} events from {}", path.display());
    Ok(0)
}

fn read_line<'a>(line: &'a str, path: &Path, number: usize) -> anyhow::Result<Line<'a>> {
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("{} line {number}: not JSON", path.display()))?;
    let Some(kind) = v
        .get("type")
        .and_then(|t| t.as_str())
        .and_then(EventKind::parse)
    else {
        bail!(
            "{} line {number}: \"type\" must be joiner, leaver or mover",
            path.display()
        );
    };
    Ok(Line {
        routing_key: kind.routing_key(),
        body: line.as_bytes(),
        id: v.get("id").and_then(|x| x.as_str()).map(str::to_owned),
    })
}

async fn publish_one(publisher: &Publisher, args: PublishArgs) -> anyhow::Result<i32> {
    let (Some(kind), Some(sam)) = (args.kind.as_deref().and_then(EventKind::parse), args.sam)
    else {
        bail!("say what to publish: `mailboxd publish joiner --sam NAME` or `--file events.jsonl`");
    };
    let mut spec = EventSpec::new(kind, sam);
    if let Some(id) = args.id {
        spec.id = id;
    }
    spec.object_guid = args.guid;
    spec.user_principal_name = args.upn;
    spec.remote_routing_address = args.remote_routing_address;
    spec.alias = args.alias;
    spec.primary_smtp_address = args.primary_smtp_address;
    spec.created_on_server = args.dc;
    spec.mailbox_type = args.mailbox_type;
    spec.start_date = args.start_date;
    publisher.publish(&spec).await?;
    println!(
        "published {} event {} for {}",
        spec.kind, spec.id, spec.sam_account_name
    );
    Ok(0)
}
