-- Storm control: alerts with the same problem are folded into one digest email, and an
-- hourly cap suppresses the rest (kept here, visible in `mailboxd alerts list`).
ALTER TABLE alerts ADD COLUMN digest_key text;     -- same key = same problem
ALTER TABLE alerts ADD COLUMN account text;        -- the account it is about, if one
ALTER TABLE alerts ADD COLUMN folded_into bigint;  -- the alert whose email carried this one
ALTER TABLE alerts ADD COLUMN suppressed boolean NOT NULL DEFAULT false;
CREATE INDEX alerts_digest ON alerts (digest_key) WHERE sent_at IS NULL;
