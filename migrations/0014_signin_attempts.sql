-- Failed dashboard sign-ins as one counter row per subject: `guid:<objectGUID>` (the
-- account, whatever spelling of its name was typed) and `addr:<address>` (IPv4) or
-- `addr:<prefix>/64` (IPv6). An attempt takes a unit with one INSERT … ON CONFLICT DO
-- UPDATE … WHERE failures < limit, so parallel requests cannot slip past the limit; the
-- count starts again once the last attempt is older than the window, like AD's
-- badPwdCount. `signin_failures` (0012) is no longer written; a later release drops it.
CREATE TABLE signin_attempts (
    subject  text PRIMARY KEY,
    failures integer NOT NULL,
    last_at  timestamptz NOT NULL DEFAULT now()
);
