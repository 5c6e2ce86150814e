-- The job queue (design §3). Every state change is a column update here plus, for
-- attempts, a row in job_attempts: nothing about a job lives only in memory.

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    event_id         text NOT NULL UNIQUE,          -- dedup of redelivered messages
    kind             text NOT NULL CHECK (kind IN ('joiner', 'leaver')),
    account          text NOT NULL,                 -- lower-cased sAMAccountName: serialises work per account
    payload          jsonb NOT NULL,                -- the validated event
    source           text,
    state            text NOT NULL DEFAULT 'queued' CHECK (state IN
                       ('queued', 'running', 'retrying', 'waiting_for_sync',
                        'succeeded', 'failed', 'cancelled', 'superseded')),
    outcome          text,                          -- enabled / already / hidden / not_remote …
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    locked_by        text,
    locked_until     timestamptz,
    last_error       text,
    last_error_class text CHECK (last_error_class IN ('transient', 'not_synced', 'permanent', 'systemic')),
    occurred_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    superseded_by    uuid REFERENCES jobs (id)
);

-- At most one running job per account.
CREATE UNIQUE INDEX jobs_one_running_per_account ON jobs (account) WHERE state = 'running';
CREATE INDEX jobs_claimable ON jobs (next_attempt_at) WHERE state IN ('queued', 'retrying', 'waiting_for_sync');
CREATE INDEX jobs_expired_leases ON jobs (locked_until) WHERE state = 'running';
CREATE INDEX jobs_account ON jobs (account, created_at DESC);
CREATE INDEX jobs_state ON jobs (state, updated_at DESC);

CREATE TABLE job_attempts (
    id                bigserial PRIMARY KEY,
    job_id            uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt           integer NOT NULL,
    replica           text NOT NULL,
    host              text,                         -- the WinRM endpoint that ran it
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL DEFAULT now(),
    outcome           text NOT NULL,                -- succeeded / retrying / failed / …
    error_class       text,
    error_message     text,
    transcript        text                          -- excerpt, secrets redacted
);
CREATE INDEX job_attempts_job ON job_attempts (job_id, attempt);

-- Deliveries that could not become a job: kept with the reason and the raw bytes.
CREATE TABLE poison_messages (
    id            bigserial PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    reason        text NOT NULL,
    routing_key   text NOT NULL,
    exchange      text NOT NULL,
    content_type  text,
    message_id    text,
    headers       jsonb,
    body          bytea NOT NULL,                   -- capped at 256 KiB
    body_size     integer NOT NULL,
    truncated     boolean NOT NULL,
    replayed_at   timestamptz
);

-- The alert outbox: written in the same transaction as the failure it reports.
CREATE TABLE alerts (
    id          bigserial PRIMARY KEY,
    job_id      uuid REFERENCES jobs (id) ON DELETE SET NULL,
    kind        text NOT NULL,
    subject     text NOT NULL,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),  -- SMTP retries back off
    last_error  text
);
CREATE INDEX alerts_unsent ON alerts (next_attempt_at) WHERE sent_at IS NULL;

-- Wake idle workers as soon as a job becomes claimable.
CREATE FUNCTION mailboxd_notify_job() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('mailboxd_jobs', NEW.kind);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.state IN ('queued', 'retrying'))
    EXECUTE FUNCTION mailboxd_notify_job();
