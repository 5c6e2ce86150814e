-- Accounts found by what the sender has (issue 34): an event may name its account by the
-- sAMAccountName, distinguishedName, objectGUID or userPrincipalName. Work is serialised per
-- account on the objectGUID (docs/decisions.md, "One account, whichever name the event
-- uses"): the event's when it gives one, else the one AD showed the worker on its first read
-- (`store::Store::resolve_account`). Until then a job is keyed on the name it came with.
--
-- Expand only: `account` keeps its meaning (the name people search by, lower-cased), and
-- `jobs_one_running_per_account` stays, so a replica of the previous version running beside
-- this one keeps its own rule; `account_key` is generated, so that replica's inserts get one
-- too. Adding a stored generated column rewrites `jobs` once (about 3 s per million jobs).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS account_guid uuid;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS account_key text
    GENERATED ALWAYS AS (coalesce(account_guid::text, account)) STORED;

-- At most one running job per account, whichever name its event used.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_running_per_key ON jobs (account_key)
    WHERE state = 'running';
-- The newest job of an account (supersede, at insert and at resolution).
CREATE INDEX IF NOT EXISTS jobs_account_key ON jobs (account_key, occurred_at DESC);
