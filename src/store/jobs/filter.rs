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

/// The order of a listing: newest first by creation (the API, the CLI) or by the last change
/// (the dashboard), ties broken by id.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) enum Newest {
    Created,
    Updated,
}

impl Newest {
    fn order_by(self) -> &'static str {
        match self {
            Newest::Created => " ORDER BY created_at DESC, id",
            Newest::Updated => " ORDER BY updated_at DESC, id",
        }
    }
}

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
        self.push_other_conditions(q);
    }

    /// Every condition but the states.
    fn push_other_conditions(&self, q: &mut QueryBuilder<Postgres>) {
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

    /// `SELECT {columns} FROM jobs` as this filter selects them, in `order`, `limit` rows from
    /// `offset`. Several states are read one state at a time and merged: PostgreSQL 15 cannot
    /// read `state = ANY(…)` from a (state, time) index in time order and walks the whole
    /// time index instead (170 ms for 5,000 of 40,000 failed jobs among a million; each
    /// state's own index read: a few ms). `columns` must hold `id` and the order's column.
    pub(in crate::store) fn push_listing(
        &self,
        q: &mut QueryBuilder<Postgres>,
        columns: &str,
        order: Newest,
        (limit, offset): (i64, i64),
    ) {
        if self.states.len() < 2 {
            q.push(format!("SELECT {columns} FROM jobs"));
            self.push_where(q);
        } else {
            q.push("SELECT * FROM (");
            for (i, state) in self.states.iter().enumerate() {
                if i > 0 {
                    q.push(" UNION ALL ");
                }
                q.push(format!("(SELECT {columns} FROM jobs WHERE state = "))
                    .push_bind(*state);
                self.push_other_conditions(q);
                q.push(order.order_by())
                    .push(" LIMIT ")
                    .push_bind(limit + offset)
                    .push(")");
            }
            q.push(") merged");
        }
        q.push(order.order_by())
            .push(" LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
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
        let mut q = QueryBuilder::new("");
        let page = (f.page_limit(), f.offset.max(0));
        f.push_listing(&mut q, JOB_COLUMNS, Newest::Created, page);
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(Job::from_row).collect::<Result<_, _>>()?)
    }

    /// [`Store::list_jobs`], and how many more jobs there are after this page (counted up
    /// to [`JobPage::COUNTED`]), so that a listing can say so.
    pub(crate) async fn page_jobs(&self, f: &JobFilter) -> Result<JobPage, StoreError> {
        let jobs = self.list_jobs(f).await?;
        let mut q = QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM jobs");
        f.push_where(&mut q);
        // How many rows lie past the page does not depend on their order: none is asked for,
        // so the planner may count through whichever index or scan is cheapest.
        q.push(" OFFSET ")
            .push_bind(f.offset.max(0) + f.page_limit())
            .push(" LIMIT ")
            .push_bind(JobPage::COUNTED)
            .push(") after_this_page");
        let more: i64 = q.build_query_scalar().fetch_one(&self.pool).await?;
        Ok(JobPage { jobs, more })
    }
}
