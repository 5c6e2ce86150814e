-- Failure groups kept as the jobs change (issue 35): the dashboard's failures page and the
-- overview's largest groups grouped up to 5,000 failed and retrying jobs in Rust on every
-- view; with a month of history (40,000 failed jobs) that was 46 ms against 4 ms empty, and
-- capped. Now each job carries the signature of its last error (the normalisation the alert
-- digests use, `alert::signature`, computed in Rust where the error is written), and every
-- statement that changes jobs appends its net change per (error class, signature, state) for
-- failed and retrying jobs here, as job_state_counts does per state: insert-only, so
-- concurrent workers never wait on a shared counter row; reads fold. A group's details (when
-- first and last seen, the newest error, a few accounts) are read through the partial index
-- below, a few rows per group.
--
-- '' (not NULL) for "no class" and "no error", so that one index and one equality serve every
-- group. Expand only: old replicas neither read nor write error_signature; rows written
-- before this migration (or by an old replica) have '' until `mailboxd run` or `migrate`
-- signs them (Store::sign_failures), which moves their counts to the right group.
ALTER TABLE jobs ADD COLUMN error_signature text NOT NULL DEFAULT '';

CREATE INDEX jobs_failure_groups
    ON jobs (coalesce(last_error_class, ''), error_signature, updated_at DESC)
    WHERE state IN ('failed', 'retrying');

CREATE TABLE failure_group_counts (
    class     text NOT NULL,
    signature text NOT NULL,
    state     text NOT NULL,
    n         bigint NOT NULL
);

CREATE FUNCTION failure_group_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO failure_group_counts (class, signature, state, n)
    SELECT coalesce(last_error_class, ''), error_signature, state, count(*)
      FROM new_rows WHERE state IN ('failed', 'retrying') GROUP BY 1, 2, 3;
    RETURN NULL;
END $$;

CREATE FUNCTION failure_group_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO failure_group_counts (class, signature, state, n)
    SELECT class, signature, state, sum(d)
      FROM (SELECT coalesce(last_error_class, '') AS class, error_signature AS signature,
                   state, 1 AS d
              FROM new_rows WHERE state IN ('failed', 'retrying')
            UNION ALL
            SELECT coalesce(last_error_class, ''), error_signature, state, -1
              FROM old_rows WHERE state IN ('failed', 'retrying')) c
     GROUP BY 1, 2, 3 HAVING sum(d) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION failure_group_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO failure_group_counts (class, signature, state, n)
    SELECT coalesce(last_error_class, ''), error_signature, state, -count(*)
      FROM old_rows WHERE state IN ('failed', 'retrying') GROUP BY 1, 2, 3;
    RETURN NULL;
END $$;

CREATE FUNCTION failure_group_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM failure_group_counts;
    RETURN NULL;
END $$;

-- No write to jobs between the triggers' creation and the initial counts (until commit).
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER jobs_failure_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION failure_group_counts_insert();
CREATE TRIGGER jobs_failure_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION failure_group_counts_update();
CREATE TRIGGER jobs_failure_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION failure_group_counts_delete();
CREATE TRIGGER jobs_failure_truncate AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION failure_group_counts_truncate();

INSERT INTO failure_group_counts (class, signature, state, n)
SELECT coalesce(last_error_class, ''), error_signature, state, count(*)
  FROM jobs WHERE state IN ('failed', 'retrying') GROUP BY 1, 2, 3;
