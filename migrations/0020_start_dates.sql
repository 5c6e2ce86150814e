-- Start dates (issue 33): a joiner with mailbox.start_date creates the mailbox hidden from the
-- address lists and schedules a second job, the step that makes it visible on that day. The
-- step is an ordinary job of the account (kind 'joiner', so its outcome is joiner.visible):
-- step = 'make_visible', state 'scheduled' until next_attempt_at (the start instant), then
-- claimed like any due job (SKIP LOCKED + lease), superseded by any newer event of the account.
ALTER TABLE jobs ADD COLUMN step text CHECK (step IN ('make_visible'));

ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN
    ('queued', 'running', 'retrying', 'waiting_for_sync', 'scheduled',
     'succeeded', 'failed', 'cancelled', 'superseded'));

-- The claim's partial index covers every claimable state (JobState::CLAIMABLE).
DROP INDEX jobs_claimable;
CREATE INDEX jobs_claimable ON jobs (next_attempt_at) WHERE state IN ('queued', 'retrying', 'waiting_for_sync', 'scheduled');
