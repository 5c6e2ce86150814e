-- The cloud confirmation of joiners (issue 32): after a joiner's on-premises success, a
-- watch waits for its Exchange Online mailbox (`[cloud]`), written in the statement that
-- finished the job. The cloud service claims due watches with SKIP LOCKED and a lease,
-- reads the accounts in batches, and ends each watch with a second outcome row
-- (cloud_confirmed / cloud_failed) in the transaction that marks it resolved.
CREATE TABLE cloud_watches (
    job_id        uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    account       text NOT NULL,               -- the sAMAccountName searched for
    object_guid   uuid,                        -- the account AD showed at the success, if read
    source        text NOT NULL,               -- where the state is learnt: directory (later: graph)
    created_at    timestamptz NOT NULL DEFAULT now(),
    deadline_at   timestamptz NOT NULL,
    next_check_at timestamptz NOT NULL,
    checks        integer NOT NULL DEFAULT 0,
    last_seen     text,                        -- what the last check saw, for operators
    locked_by     text,
    locked_until  timestamptz,
    resolved_at   timestamptz,
    result        text                         -- cloud_confirmed / cloud_failed once resolved
);
CREATE INDEX cloud_watches_due ON cloud_watches (next_check_at) WHERE resolved_at IS NULL;
