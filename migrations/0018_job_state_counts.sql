-- Job counts kept as the jobs change (issue 35): /metrics and the overview's throughput
-- charts read a few rows here instead of counting the jobs table with all its history.
-- Every statement that changes jobs appends its net change per state and, for succeeded and
-- failed jobs, per hour of finished_at (UTC; NULL for other states): insert-only, so
-- concurrent workers finishing jobs never wait on a shared counter row. Readers sum the
-- rows; reads fold them back into one row per state and hour (Store::job_counts).
CREATE TABLE job_state_counts (
    state text NOT NULL,
    hour  timestamptz,
    n     bigint NOT NULL
);

-- The hour a job counts in for the throughput charts: succeeded and failed ones only.
CREATE FUNCTION job_finished_hour(state text, finished_at timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN state IN ('succeeded', 'failed') THEN date_trunc('hour', finished_at, 'UTC') END
$$;

CREATE FUNCTION job_state_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_state_counts (state, hour, n)
    SELECT state, job_finished_hour(state, finished_at), count(*) FROM new_rows GROUP BY 1, 2;
    RETURN NULL;
END $$;

CREATE FUNCTION job_state_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_state_counts (state, hour, n)
    SELECT state, hour, sum(d)
      FROM (SELECT state, job_finished_hour(state, finished_at) AS hour, 1 AS d FROM new_rows
            UNION ALL
            SELECT state, job_finished_hour(state, finished_at), -1 FROM old_rows) c
     GROUP BY 1, 2 HAVING sum(d) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION job_state_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_state_counts (state, hour, n)
    SELECT state, job_finished_hour(state, finished_at), -count(*) FROM old_rows GROUP BY 1, 2;
    RETURN NULL;
END $$;

CREATE FUNCTION job_state_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_state_counts;
    RETURN NULL;
END $$;

-- No write to jobs between the triggers' creation and the initial counts (until commit).
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION job_state_counts_insert();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION job_state_counts_update();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION job_state_counts_delete();
CREATE TRIGGER jobs_count_truncate AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_state_counts_truncate();

INSERT INTO job_state_counts (state, hour, n)
SELECT state, job_finished_hour(state, finished_at), count(*) FROM jobs GROUP BY 1, 2;
