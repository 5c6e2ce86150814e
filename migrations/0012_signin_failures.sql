-- Failed dashboard sign-ins, per user name (`user:jdoe`) and per client address
-- (`addr:10.1.2.3`), so the limit on guessing holds across replicas. (Its own migration:
-- 0009 was already applied where issue 24's first part ran.)
CREATE TABLE signin_failures (
    subject text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX signin_failures_subject ON signin_failures (subject, at);
