-- Claims that walk their index in the order they take and stop after their batch (issue 35,
-- `bench load`), however many jobs or outcomes wait and however stale the planner's
-- statistics are.
--
-- Jobs. The claim takes the due jobs `ORDER BY next_attempt_at, created_at`. `jobs_claimable`
-- held `next_attempt_at` alone, so the order needed a sort, and while an initial load was
-- being queued (statistics taken before it: 38 claimable rows estimated, 18,000 there) the
-- planner read every claimable job, anti-joined each to the running ones and sorted them all
-- to take 100: 90-150 ms per claim. In the order of the claim, the index gives the first 100
-- in order, and no plan needs a sort. Same name and states, so every statement that named it
-- (the claim, the next due time, the comments) means the same index.
DROP INDEX jobs_claimable;
CREATE INDEX jobs_claimable ON jobs (next_attempt_at, created_at) WHERE state IN ('queued', 'retrying', 'waiting_for_sync', 'scheduled');

-- Outcomes. A channel's claim takes the oldest outcomes still due there, `ORDER BY seq`; the
-- only index on due outcomes was (account, seq), which serves the per-account order check but
-- not the global order, so every claim read every due outcome and sorted them: 30-65 ms per
-- claim with 6,000 waiting, growing with the backlog. With these a claim walks the due
-- outcomes in `seq` order (0.7 ms).
CREATE INDEX IF NOT EXISTS outcomes_unsent_seq ON outcomes (seq) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS outcomes_iiq_pending_seq ON outcomes (seq) WHERE iiq_state = 'pending';
CREATE INDEX IF NOT EXISTS outcomes_callback_pending_seq ON outcomes (seq)
    WHERE callback_state = 'pending';

-- CREATE INDEX (not CONCURRENTLY: sqlx runs a migration in a transaction) holds writes to
-- the table while it builds; these are partial indexes over waiting work, never the history.
