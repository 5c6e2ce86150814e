-- Every operator action (retry, cancel, bulk retry), with who did it and through what, so
-- the job shows its own history next to its attempts.
CREATE TABLE operator_actions (
    id       bigserial PRIMARY KEY,
    job_id   uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    action   text NOT NULL,               -- retry / cancel
    actor    text NOT NULL,               -- e.g. api:ops-oncall, dashboard:admin, cli:alice
    at       timestamptz NOT NULL DEFAULT now(),
    detail   text
);
CREATE INDEX operator_actions_job ON operator_actions (job_id, at);
