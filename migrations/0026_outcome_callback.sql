-- Outcomes sent back to an HTTP callback (`[outcome_callback]`, issue 34), tracked apart from
-- the AMQP publish and the IdentityIQ launch like those of 0008: NULL = not for the callback
-- (not configured when the row was written, or its event did not come over the HTTP intake
-- while `outcome_callback.outcomes = "http_intake"`), pending, sent, or refused (a lasting
-- 4xx: alerted, not retried).
--
-- Expand only: nullable columns, or NOT NULL with a constant default (no table rewrite); the
-- CHECK is NOT VALID, so existing rows (all NULL) are not scanned, and new ones are checked.
-- A binary without this feature ignores the columns.

-- Whether the job's event came over the HTTP intake (the callback's default scope).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS http_intake boolean NOT NULL DEFAULT false;

ALTER TABLE outcomes ADD COLUMN IF NOT EXISTS callback_state text;
ALTER TABLE outcomes ADD CONSTRAINT outcomes_callback_state_check
    CHECK (callback_state IN ('pending', 'sent', 'refused')) NOT VALID;
ALTER TABLE outcomes ADD COLUMN IF NOT EXISTS callback_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE outcomes ADD COLUMN IF NOT EXISTS callback_next_attempt_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE outcomes ADD COLUMN IF NOT EXISTS callback_locked_by text;
ALTER TABLE outcomes ADD COLUMN IF NOT EXISTS callback_locked_until timestamptz;
ALTER TABLE outcomes ADD COLUMN IF NOT EXISTS callback_last_error text;
-- The claim's "oldest still due per account" and the pending counts read this.
CREATE INDEX IF NOT EXISTS outcomes_callback_pending ON outcomes (account, seq)
    WHERE callback_state = 'pending';
