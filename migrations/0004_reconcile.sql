-- Reconciliation runs: what was compared, what differed, what was queued. Shown on the
-- dashboard and by `mailboxd reconcile`; the differences are a capped sample.
CREATE TABLE reconcile_runs (
    id            bigserial PRIMARY KEY,
    replica       text NOT NULL,
    dry_run       boolean NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    domain_controller text,
    scanned       integer NOT NULL DEFAULT 0,
    differences   integer NOT NULL DEFAULT 0,
    by_kind       jsonb NOT NULL DEFAULT '{}',
    sample        jsonb NOT NULL DEFAULT '[]',
    jobs_created  integer NOT NULL DEFAULT 0,
    skipped_pending integer NOT NULL DEFAULT 0,
    capped        boolean NOT NULL DEFAULT false,
    error         text
);
CREATE INDEX reconcile_runs_started ON reconcile_runs (started_at DESC);
