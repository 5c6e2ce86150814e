//! The queue filter the job list, the failures view and bulk actions share: the store's
//! `JobFilter` (states, kind, error class, account, a time range) and an error signature. Read from the query string (or
//! a confirmation form), checked strictly — a bulk action must never run on a filter it
//! silently dropped — and written back as links, hidden fields and words.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;

use super::esc;
use crate::alert::signature;
use crate::event::EventKind;
use crate::job::{ErrorClass, JobState};
use crate::store::{JobFilter, QueueRow};

/// Rows a view or bulk action reads at most; the pages say when a filter matches more.
pub(super) const MAX_ROWS: i64 = 5000;

/// The filter as sent: every field optional text, `state` a comma-separated list.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct FilterForm {
    pub state: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub class: Option<String>,
    pub signature: Option<String>,
    pub account: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// A checked filter: the store's job filter, and the error signature the rows it returns
/// must also have (computed here, from the text of the last error).
#[derive(Debug, Clone, Default)]
pub(super) struct QueueFilter {
    pub jobs: JobFilter,
    /// The error signature (as `alert::signature` makes it) the last error must have.
    pub signature: Option<String>,
}

/// A filter field that names nothing: which, and what it held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the filter's {field} {value:?} is not valid: {hint}")]
pub(super) struct BadFilter {
    pub field: &'static str,
    pub value: String,
    pub hint: &'static str,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// `2026-12-06` or `2026-12-06T01:30` (a datetime-local input), read as UTC.
fn parse_time(field: &'static str, v: &str) -> Result<DateTime<Utc>, BadFilter> {
    let t = NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| {
            NaiveDate::parse_from_str(v, "%Y-%m-%d").map(|d| d.and_time(Default::default()))
        });
    t.map(|t| t.and_utc()).map_err(|_| BadFilter {
        field,
        value: v.to_owned(),
        hint: "write a date as 2026-12-06 or 2026-12-06T01:30 (UTC)",
    })
}

impl FilterForm {
    pub(super) fn check(&self) -> Result<QueueFilter, BadFilter> {
        let mut states = Vec::new();
        for s in given(&self.state).unwrap_or("").split(',').map(str::trim) {
            if s.is_empty() {
                continue;
            }
            states.push(s.parse::<JobState>().map_err(|_| BadFilter {
                field: "state",
                value: s.to_owned(),
                hint: "use the states the overview lists",
            })?);
        }
        let kind = match given(&self.kind) {
            Some(k) => Some(k.parse::<EventKind>().map_err(|_| BadFilter {
                field: "type",
                value: k.to_owned(),
                hint: "joiner or leaver",
            })?),
            None => None,
        };
        let error_class = match given(&self.class) {
            Some(c) => Some(c.parse::<ErrorClass>().map_err(|_| BadFilter {
                field: "class",
                value: c.to_owned(),
                hint: "transient, not_synced, permanent or systemic",
            })?),
            None => None,
        };
        let jobs = JobFilter {
            states,
            kind,
            error_class,
            account: given(&self.account).map(str::to_owned),
            since: given(&self.since)
                .map(|v| parse_time("since", v))
                .transpose()?,
            until: given(&self.until)
                .map(|v| parse_time("until", v))
                .transpose()?,
            limit: MAX_ROWS,
            offset: 0,
        };
        Ok(QueueFilter {
            jobs,
            signature: given(&self.signature).map(str::to_owned),
        })
    }
}

/// The signature of a job's last error: what the failures view groups by. The stored one;
/// computed for a job whose error was written before signatures were stored.
fn row_signature(row: &QueueRow) -> String {
    match row.last_error.as_deref() {
        Some(error) if row.error_signature.is_empty() => signature(error, &row.account),
        _ => row.error_signature.clone(),
    }
}

impl QueueFilter {
    /// What the store selects: the filter without its signature, at most [`MAX_ROWS`].
    pub(super) fn query(&self) -> JobFilter {
        JobFilter {
            limit: MAX_ROWS,
            offset: 0,
            ..self.jobs.clone()
        }
    }

    /// Whether a row the store returned for [`Self::query`] also has the signature.
    pub(super) fn keeps(&self, row: &QueueRow) -> bool {
        self.signature
            .as_ref()
            .is_none_or(|s| *s == row_signature(row))
    }

    /// The (name, value) pairs that write this filter back.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let fmt = |t: &DateTime<Utc>| t.format("%Y-%m-%dT%H:%M").to_string();
        let j = &self.jobs;
        let states: Vec<&str> = j.states.iter().map(|s| s.as_str()).collect();
        [
            ("state", (!states.is_empty()).then(|| states.join(","))),
            ("type", j.kind.map(|k| k.to_string())),
            ("class", j.error_class.map(|c| c.as_str().to_owned())),
            ("signature", self.signature.clone()),
            ("account", j.account.clone()),
            ("since", j.since.as_ref().map(fmt)),
            ("until", j.until.as_ref().map(fmt)),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }

    /// The filter as a query string (without `?`), URL-encoded.
    pub(super) fn to_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.pairs() {
            q.append_pair(k, &v);
        }
        q.finish()
    }

    /// The filter as hidden form fields, HTML-escaped.
    pub(super) fn hidden_fields(&self) -> String {
        self.pairs()
            .iter()
            .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v)))
            .collect()
    }

    /// The filter in words, as a confirmation states it and the record keeps it.
    pub(super) fn describe(&self) -> String {
        let j = &self.jobs;
        let states: Vec<&str> = j.states.iter().map(|s| s.as_str()).collect();
        let parts: Vec<String> = [
            (!states.is_empty()).then(|| format!("state {}", states.join(" or "))),
            j.kind.map(|k| format!("type {k}")),
            j.error_class.map(|c| format!("error class {}", c.as_str())),
            self.signature.as_ref().map(|s| format!("error “{s}”")),
            j.account.as_ref().map(|a| format!("account {a}")),
            j.since
                .map(|t| format!("created from {} UTC", t.format("%Y-%m-%d %H:%M"))),
            j.until
                .map(|t| format!("created before {} UTC", t.format("%Y-%m-%d %H:%M"))),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "every job".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> FilterForm {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        read(&q)
    }

    fn read(q: &str) -> FilterForm {
        let uri: axum::http::Uri = format!("/jobs?{q}").parse().unwrap();
        axum::extract::Query::<FilterForm>::try_from_uri(&uri)
            .unwrap()
            .0
    }

    #[test]
    fn a_filter_reads_back_from_its_own_query_string() {
        let f = form(&[
            ("state", "failed,retrying"),
            ("type", "joiner"),
            ("class", "permanent"),
            ("signature", "proxy <account>@x in use & #"),
            ("account", "o'brien"),
            ("since", "2026-12-06"),
            ("until", "2026-12-06T01:30"),
        ])
        .check()
        .unwrap();
        let again = read(&f.to_query()).check().unwrap();
        assert_eq!(again.describe(), f.describe());
        assert_eq!(
            f.describe(),
            "state failed or retrying, type joiner, error class permanent, error “proxy <account>@x in use & #”, \
             account o'brien, created from 2026-12-06 00:00 UTC, created before 2026-12-06 01:30 UTC"
        );
        assert!(!f.hidden_fields().contains("o'brien"), "escaped");
    }

    #[test]
    fn a_filter_it_cannot_read_is_refused_not_dropped() {
        let e = form(&[("state", "failed,broken")]).check().unwrap_err();
        assert_eq!(e.field, "state");
        assert_eq!(
            form(&[("class", "nope")]).check().unwrap_err().field,
            "class"
        );
        assert_eq!(
            form(&[("since", "yesterday")]).check().unwrap_err().field,
            "since"
        );
        assert_eq!(form(&[]).check().unwrap().describe(), "every job");
    }
}
