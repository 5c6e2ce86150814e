-- One Exchange session budget for every replica sharing this database (issue 22): a row per
-- session slot (0 .. exchange.max_sessions - 1), held by one replica under a lease that its
-- heartbeat renews, so a killed replica's slots come back by themselves once the lease runs
-- out. A slot is one WinRM shell with one Exchange session in it (a cold batch or a warm
-- process), so the same rows bound PowerShellMaxConcurrency and MaxShellsPerUser.
CREATE TABLE exchange_session_slots (
    slot          integer PRIMARY KEY CHECK (slot >= 0),
    holder        text,                 -- replica name; NULL: free
    lease         uuid,                 -- this holding, so a late release frees nothing newer
    purpose       text,                 -- batch / warm
    acquired_at   timestamptz,
    leased_until  timestamptz
);

-- Exchange refused a session anyway (someone else uses the account): counted per replica
-- so that /readyz and the dashboard show the whole cluster's refusals, not one process's.
CREATE TABLE exchange_throttle_events (
    id        bigserial PRIMARY KEY,
    replica   text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    wait_ms   bigint,                   -- the wait Exchange stated, if any
    message   text NOT NULL
);
CREATE INDEX exchange_throttle_events_at ON exchange_throttle_events (at);
