-- The audit trail: every operator action from every channel (dashboard, API, CLI: retry,
-- cancel, bulk actions, poison replay, publish, reconcile; dashboard sign-in and sign-out)
-- with who did it, what, on what and how it ended. Written beside the audit log line;
-- read with `mailboxd audit list` and GET /api/v1/audit. Only ever inserted into.
CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,   -- dashboard:CORP\jdoe, api:<token name>, cli:<OS user>
    action  text NOT NULL,   -- retry, cancel, bulk retry, replay, publish, reconcile, sign in…
    subject text NOT NULL,   -- job <id>, poison <id>, 12 jobs, …
    outcome text NOT NULL,   -- done, not found, refused: …, error
    client  text             -- the client's address (dashboard, API); none from the CLI
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, at);
