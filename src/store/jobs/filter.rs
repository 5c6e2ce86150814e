//! The one job filter of the API, the dashboard, the CLI and bulk actions, and the listing
//! read with it. Its SQL holds only the conditions a filter sets (built with sqlx's
//! `QueryBuilder`, every value bound): a statement full of `$n IS NULL OR …` branches gets a
//! generic plan that can use no index, and a listing with a million jobs of history then
//! reads them all (issue 35, `bench history`).

use chrono::{DateTime, Utc};
use sqlx::{FromRow, Postgres, QueryBuilder};

use super::{JOB_COLUMNS, Job};
use crate::event::EventKind;
use crate::job::{ErrorClass, JobState};
use crate::store::{Store, StoreError};

/// Which jobs a listing, a queue view or a bulk action takes: every field narrows, `None`
/// (or no states) takes all. Each channel reads it from its own query string or arguments.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Any of these states (none: every state).
    pub states: Vec<JobState>,
    /// The account's name, any case.
    pub account: Option<String>,
    pub kind: Option<EventKind>,
    /// Of the last error.
    pub error_class: Option<ErrorClass>,
    /// Created at or after / before.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    /// Rows to skip (pagination; newest first).
    pub offset: i64,
}

/// One page of a job listing.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobPage {
    pub jobs: Vec<Job>,
    /// Jobs the filter selects after this page, counted up to [`JobPage::COUNTED`]: counting
    /// every match would read the whole history.
    pub more: i64,
}

impl JobPage {
    /// How far the jobs after a page are counted; `more == COUNTED` means "at least".
    pub(crate) const COUNTED: i64 = 10_000;
}

/// A page's size when the filter gives none.
const DEFAULT_LIMIT: i64 = 100;

impl JobFilter {
    /// Appends ` WHERE …` with the conditions this filter sets, and only those.
    pub(in crate::store) fn push_where(&self, q: &mut QueryBuilder<Postgres>) {
        q.push(" WHERE true");
        match self.states.as_slice() {
            [] => {}
            [one] => {
                q.push(" AND state = ").push_bind(*one);
            }
            many => {
                q.push(" AND state = ANY(").push_bind(many).push(")");
            }
        }
        if let Some(account) = &self.account {
            q.push(" AND account = lower(").push_bind(account).push(")");
        }
        if let Some(kind) = self.kind {
            q.push(" AND kind = ").push_bind(kind);
        }
        if let Some(class) = self.error_class {
            q.push(" AND last_error_class = ").push_bind(class);
        }
        if let Some(since) = self.since {
            q.push(" AND created_at >= ").push_bind(since);
        }
        if let Some(until) = self.until {
            q.push(" AND created_at < ").push_bind(until);
        }
    }

    fn page_limit(&self) -> i64 {
        if self.limit > 0 {
            self.limit
        } else {
            DEFAULT_LIMIT
        }
    }
}

impl Store {
    /// The jobs `f` selects: its `limit` from its `offset`, newest first.
    pub async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let mut q = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs"));
        f.push_where(&mut q);
        q.push(" ORDER BY created_at DESC, id LIMIT ")
            .push_bind(f.page_limit())
            .push(" OFFSET ")
            .push_bind(f.offset.max(0));
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(Job::from_row).collect::<Result<_, _>>()?)
    }

    /// [`Store::list_jobs`], and how many more jobs there are after this page (counted up
    /// to [`JobPage::COUNTED`]), so that a listing can say so.
    pub(crate) async fn page_jobs(&self, f: &JobFilter) -> Result<JobPage, StoreError> {
        let jobs = self.list_jobs(f).await?;
        let mut q = QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM jobs");
        f.push_where(&mut q);
        q.push(" ORDER BY created_at DESC, id OFFSET ")
            .push_bind(f.offset.max(0) + f.page_limit())
            .push(" LIMIT ")
            .push_bind(JobPage::COUNTED)
            .push(") after_this_page");
        let more: i64 = q.build_query_scalar().fetch_one(&self.pool).await?;
        Ok(JobPage { jobs, more })
    }
}
