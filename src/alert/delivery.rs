//! What goes out when from the alert outbox. Alerts of one problem (one digest key) go out
//! as one email; at most `hourly_cap` emails an hour, the last one allowed saying how many
//! are held back and the rest kept, marked suppressed; a failed send is tried again after a
//! doubling delay. The store locks each round's alerts, so two replicas never send one.

use std::future::Future;
use std::time::Duration;

use crate::backoff;
use crate::store::{Alert, Store, StoreError};

/// The longest wait between two tries of one email.
const RETRY_CAP: Duration = Duration::from_secs(900);

/// Why an alert over the hourly cap was not emailed (kept as its last error).
const CAPPED: &str = "not emailed: the hourly cap (smtp.hourly_cap) was reached";

/// How the alert outbox is emailed.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryPolicy {
    /// Alerts read per round.
    pub limit: i64,
    /// The wait after a first failed send; it doubles per further failure.
    pub retry_base: Duration,
    /// Alerts of one problem within this window go out as one digest.
    pub digest_window: Duration,
    /// Emails per hour at most; the rest are kept, marked suppressed.
    pub hourly_cap: u32,
}

/// What one round did: emails sent, emails that failed (and will be tried again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub sent: u32,
    pub failed: u32,
}

/// Delivers the alerts due now with `send` (one call per email: the alerts it carries and
/// an optional note to append), each marked sent, suppressed or rescheduled in the round
/// that locked it.
pub(crate) async fn deliver<F, Fut>(
    store: &Store,
    policy: &DeliveryPolicy,
    send: F,
) -> Result<Delivered, StoreError>
where
    F: Fn(Vec<Alert>, Option<String>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut round = store
        .alert_round(policy.limit, policy.digest_window)
        .await?;
    let emails = digests(round.take_due());
    let mut delivered = Delivered::default();
    if emails.is_empty() {
        round.commit().await?;
        return Ok(delivered);
    }
    let mut room = i64::from(policy.hourly_cap) - round.sent_last_hour().await?;
    let total = emails.len();
    for (i, email) in emails.into_iter().enumerate() {
        let ids: Vec<i64> = email.iter().map(|a| a.id).collect();
        if room <= 0 {
            round.mark_suppressed(&ids, CAPPED).await?;
            continue;
        }
        let note = (room == 1)
            .then(|| held_back_note(total - i - 1, policy.hourly_cap))
            .flatten();
        let delay = retry_delay(policy.retry_base, email[0].attempts);
        match send(email, note).await {
            Ok(()) => {
                round.mark_sent(&ids).await?;
                delivered.sent += 1;
                room -= 1;
            }
            Err(e) => {
                round.reschedule(&ids, &e, delay).await?;
                delivered.failed += 1;
            }
        }
    }
    round.commit().await?;
    Ok(delivered)
}

/// One email per digest key (or per alert without one), in the order the oldest alert of
/// each came in.
fn digests(due: Vec<Alert>) -> Vec<Vec<Alert>> {
    let mut emails: Vec<Vec<Alert>> = Vec::new();
    for alert in due {
        let same = alert.digest_key.as_ref().and_then(|k| {
            emails
                .iter()
                .position(|e| e[0].digest_key.as_ref() == Some(k))
        });
        match same {
            Some(i) => emails[i].push(alert),
            None => emails.push(vec![alert]),
        }
    }
    emails
}

/// What the last email allowed this hour says about the `more` held back after it.
fn held_back_note(more: usize, hourly_cap: u32) -> Option<String> {
    (more > 0).then(|| {
        format!(
            "{more} more alert email(s) are suppressed this hour (smtp.hourly_cap = {hourly_cap}); see `mailboxd alerts list`."
        )
    })
}

/// base, 2·base, 4·base … up to 15 min after an email's `attempts` earlier tries.
fn retry_delay(base: Duration, attempts: i32) -> Duration {
    let tries = u32::try_from(attempts).unwrap_or(0).saturating_add(1);
    backoff::doubling(tries, base, RETRY_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: i64, key: Option<&str>) -> Alert {
        Alert {
            id,
            job_id: None,
            kind: crate::alert::AlertKind::Permanent,
            subject: format!("alert {id}"),
            body: String::new(),
            created_at: chrono::Utc::now(),
            sent_at: None,
            attempts: 0,
            next_attempt_at: chrono::Utc::now(),
            last_error: None,
            digest_key: key.map(str::to_owned),
            account: None,
            folded_into: None,
            suppressed: false,
        }
    }

    #[test]
    fn one_email_per_digest_key_in_arrival_order() {
        let due = vec![
            alert(1, Some("a")),
            alert(2, None),
            alert(3, Some("b")),
            alert(4, Some("a")),
            alert(5, None),
        ];
        let ids: Vec<Vec<i64>> = digests(due)
            .iter()
            .map(|e| e.iter().map(|a| a.id).collect())
            .collect();
        assert_eq!(ids, vec![vec![1, 4], vec![2], vec![3], vec![5]]);
    }

    #[test]
    fn the_last_email_allowed_counts_the_held_back_ones() {
        assert_eq!(held_back_note(0, 10), None);
        let note = held_back_note(3, 10).unwrap();
        assert!(note.starts_with("3 more alert email(s)"), "{note}");
        assert!(note.contains("smtp.hourly_cap = 10"), "{note}");
    }

    #[test]
    fn retries_double_up_to_a_quarter_of_an_hour() {
        let base = Duration::from_secs(30);
        assert_eq!(retry_delay(base, 0), base);
        assert_eq!(retry_delay(base, 2), base * 4);
        assert_eq!(retry_delay(base, 100), RETRY_CAP);
        assert_eq!(retry_delay(base, -1), base);
    }
}
