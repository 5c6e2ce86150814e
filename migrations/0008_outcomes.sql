-- The outcome outbox (issue 23): one row per job that reached a final state or started
-- waiting for the cloud sync, written in the transaction that moved the job, published
-- with confirms to the outcome exchange and to the event's reply_to, marked sent after.
ALTER TABLE jobs ADD COLUMN reply_to text;      -- the event's AMQP reply_to, if it had one

CREATE TABLE outcomes (
    id              uuid PRIMARY KEY,           -- the message_id: stable across resends
    seq             bigserial NOT NULL UNIQUE,  -- per-account order
    job_id          uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    account         text NOT NULL,
    event_id        text NOT NULL,              -- the correlation_id
    result          text NOT NULL,              -- succeeded / failed / cancelled / superseded / waiting_for_sync
    routing_key     text NOT NULL,              -- <kind>.<result>
    reply_to        text,
    body            jsonb NOT NULL,             -- mailboxd.outcome/v1
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_by       text,
    locked_until    timestamptz,
    last_error      text,
    delivered       text                        -- where it went: the exchange, reply_to, or nowhere
);
CREATE INDEX outcomes_unsent ON outcomes (account, seq) WHERE sent_at IS NULL;
CREATE INDEX outcomes_job ON outcomes (job_id);
