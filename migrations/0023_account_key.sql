-- Accounts found by what the sender has (issue 34): an event may name its account by the
-- sAMAccountName, distinguishedName, objectGUID or userPrincipalName. Work is serialised per
-- account on the objectGUID (docs/decisions.md, "One account, whichever name the event
-- uses"): the event's when it gives one, else the one AD showed the worker on its first read
-- (`store::Store::resolve_account`). Until then a job is keyed on the name it came with. The
-- key is the expression `coalesce(account_guid::text, account)`, written the same in every
-- statement that serialises on it (src/store/jobs), so that these indexes serve them.
--
-- Expand only: `account` keeps its meaning (the name people search by, lower-cased), and
-- `jobs_one_running_per_account` stays, so a replica of the previous version running beside
-- this one keeps its own rule; the key needs nothing of that replica's inserts. An indexed
-- expression rather than a stored generated column: adding one of those rewrites `jobs` with
-- every read and write held (22 s for a million jobs, measured on a busy 2-vCPU machine);
-- this adds a nullable column (no rewrite) and builds two indexes (writes held meanwhile).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS account_guid uuid;

-- At most one running job per account, whichever name its event used.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_running_per_key
    ON jobs ((coalesce(account_guid::text, account))) WHERE state = 'running';
-- The newest job of an account (supersede, at insert and at resolution).
CREATE INDEX IF NOT EXISTS jobs_account_key
    ON jobs ((coalesce(account_guid::text, account)), occurred_at DESC);
