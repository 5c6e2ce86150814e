-- Dashboard sessions of people signed in with their AD account. Only the SHA-256 of the
-- session id is kept: a copy of this table cannot be used to sign in. Any replica reads
-- them, so a sign-out (ended_at) ends the session everywhere at once.
CREATE TABLE operator_sessions (
    id_hash           bytea PRIMARY KEY,
    person            text NOT NULL,          -- CORP\jdoe, what actions are recorded as
    user_dn           text NOT NULL,          -- where the group check reads again
    role              text NOT NULL,          -- viewer / operator
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_seen_at      timestamptz NOT NULL DEFAULT now(),
    groups_checked_at timestamptz NOT NULL DEFAULT now(),
    ended_at          timestamptz,
    ended_reason      text
);
CREATE INDEX operator_sessions_open ON operator_sessions (created_at) WHERE ended_at IS NULL;
