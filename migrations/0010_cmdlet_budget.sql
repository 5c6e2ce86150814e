-- Exchange's cmdlet budget (PowerShellMaxCmdlets per PowerShellMaxCmdletsTimePeriod, per
-- service account) shared by every replica on this database (issue 22): a batch takes a grant
-- for the cmdlets it may run before it runs, so batches are paced to the budget instead of
-- being refused by it. A grant counts in the window until `counts_until`: while its batch runs,
-- a lease plus the window, renewed by the replica (a killed replica's grant runs out by
-- itself); once the batch is back, until then plus the window, lowered to the cmdlets that ran.
CREATE TABLE exchange_cmdlet_grants (
    id            bigserial PRIMARY KEY,
    holder        text NOT NULL,          -- replica name
    cmdlets       integer NOT NULL CHECK (cmdlets >= 0),
    granted_at    timestamptz NOT NULL DEFAULT now(),
    counts_until  timestamptz NOT NULL
);
CREATE INDEX exchange_cmdlet_grants_counts_until ON exchange_cmdlet_grants (counts_until);
