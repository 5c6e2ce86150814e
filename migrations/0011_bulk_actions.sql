-- One row per bulk action from the dashboard (retry or cancel every job matching a filter):
-- who, when, the filter in words and how many jobs it moved. Each job it moved also has its
-- own operator_actions row pointing here in its detail, so the job page shows it too.
CREATE TABLE bulk_actions (
    id      bigserial PRIMARY KEY,
    action  text NOT NULL,               -- retry / cancel
    actor   text NOT NULL,               -- e.g. dashboard:admin
    at      timestamptz NOT NULL DEFAULT now(),
    filter  text NOT NULL,               -- as the confirmation stated it
    jobs    integer NOT NULL
);

-- The overview's throughput and time-to-done charts read the last 30 days of finished jobs;
-- retention's prune reads the oldest. Unfinished jobs are not indexed here.
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
