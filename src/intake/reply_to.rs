//! Where an event's outcome may be sent besides `outcomes.exchange`: the queue its AMQP
//! `reply_to` names, if an RPC client could legitimately have named it. A publisher must not
//! make mailboxd write into queues it does not own — least of all mailboxd's own.

use crate::config;

/// Queue names the broker gives out itself: server-named (exclusive) queues, and direct
/// reply-to, which RabbitMQ expands into `amq.rabbitmq.reply-to.<opaque>` on the way.
const BROKER_NAMED: [&str; 2] = ["amq.gen-", "amq.rabbitmq.reply-to"];

/// The `reply_to` rule of one deployment (`amqp.reply_to_allowed`).
#[derive(Debug, Clone)]
pub(crate) struct ReplyToRule {
    allowed: Vec<String>,
    own: Vec<String>,
}

impl ReplyToRule {
    pub(super) fn new(cfg: &config::Amqp) -> ReplyToRule {
        ReplyToRule {
            allowed: cfg.reply_to_allowed.clone(),
            own: vec![cfg.queue.clone(), crate::broker::dead_letter_queue(cfg)],
        }
    }

    /// `Ok` if outcomes may go to `queue`; else why not (for the log and the job).
    pub(super) fn check(&self, queue: &str) -> Result<(), String> {
        if queue.is_empty() || queue.len() > 255 || queue.chars().any(char::is_control) {
            return Err(
                "it is not a queue name (empty, over 255 bytes or with control characters)".into(),
            );
        }
        if self.own.iter().any(|q| q == queue) {
            return Err("it is one of mailboxd's own queues".into());
        }
        let broker_named = BROKER_NAMED.iter().any(|p| queue.starts_with(p));
        let configured = self.allowed.iter().any(|a| match a.strip_suffix('*') {
            Some(prefix) => queue.starts_with(prefix),
            None => a == queue,
        });
        if broker_named || configured {
            return Ok(());
        }
        Err(
            "it is neither a broker-named queue (amq.gen-…, amq.rabbitmq.reply-to…) nor in amqp.reply_to_allowed"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_queues_an_rpc_client_names_are_allowed() {
        let cfg = config::Amqp {
            reply_to_allowed: vec!["iam.replies".into(), "rpc.*".into()],
            ..config::Amqp::default()
        };
        let rule = ReplyToRule::new(&cfg);
        for ok in [
            "amq.gen-JzTY20BRgKO-HjmUJj0wLg",
            "amq.rabbitmq.reply-to",
            "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAyNzk1NjQzMgAAAGkAAAAAAAAAAA==.+ZTa",
            "iam.replies",
            "rpc.client-7",
        ] {
            assert_eq!(rule.check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "mailboxd.events",
            "mailboxd.events.dead",
            "iam.replies.other",
            "billing.orders",
            "amq.direct",
            "",
            "amq.gen-\0x",
        ] {
            assert!(rule.check(bad).is_err(), "{bad:?}");
        }
        // Not even a configured wildcard reaches mailboxd's own queues.
        let all = config::Amqp {
            reply_to_allowed: vec!["*".into()],
            ..config::Amqp::default()
        };
        assert!(ReplyToRule::new(&all).check("mailboxd.events").is_err());
    }
}
