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
