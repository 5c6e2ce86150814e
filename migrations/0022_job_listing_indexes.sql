-- Listings in the order they are read (issue 35, `bench history`): with a month of history in
-- the table, the API's newest-first list and the dashboard's most-recently-updated list sorted
-- every matching row to show 100 of them (a top-N sort of 1,000,000 rows: 370-600 ms); with
-- these, they read the first rows of an index (under 1 ms). `jobs_state (state, updated_at)`
-- already serves the dashboard's lists of one state.
--
-- Expand only. CREATE INDEX (not CONCURRENTLY: sqlx runs a migration in a transaction) holds
-- writes to `jobs` while it builds: about 2 s per index per million jobs on 2 vCPU.
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at DESC, id);
CREATE INDEX IF NOT EXISTS jobs_updated ON jobs (updated_at DESC, id);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs (state, created_at DESC, id);

-- Time from creation to success per finished hour (the overview's "time to done"): an hour
-- that is over never changes, so its median and 95th percentile are computed once, by the
-- first read after it ends, and read from here after; only the current hour is computed from
-- `jobs` on every read (with a month of history, the last 24 hours hold ~34,000 successes:
-- 140 ms per overview before).
CREATE TABLE job_done_hours (
    hour  timestamptz PRIMARY KEY,
    p50   double precision,   -- seconds; NULL: no job succeeded in that hour
    p95   double precision
);
