-- Exchange's own session limit, learned from its refusal (issue 35): "… exceeded the maximum
-- number of connections allowed : N for the policy party : MaxConcurrency". One row for the
-- cluster, so that every replica's next slot look-up uses it at once; absent: the configured
-- exchange.max_sessions holds. Raised by one after a quiet period (no refusal), until it
-- reaches the configured value again and is deleted; a refusal at the raised level re-learns.
CREATE TABLE exchange_learned_limit (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    max_sessions  integer NOT NULL CHECK (max_sessions > 0),
    learned_at    timestamptz NOT NULL DEFAULT now(),
    raised_at     timestamptz,
    replica       text NOT NULL,        -- the replica that was refused
    message       text NOT NULL         -- Exchange's refusal, as it said it
);
