-- Job counts per state kept as the jobs change (issue 35): /metrics reads a few rows here
-- instead of counting the whole jobs table with its history. Every statement that changes
-- jobs appends its net change per state: insert-only, so concurrent workers finishing jobs
-- never wait on a shared counter row. Readers sum the rows per state; the scrape folds
-- them back into one row per state (Store::job_counts).
CREATE TABLE job_state_counts (
    state text NOT NULL,
    n     bigint NOT NULL
);

CREATE FUNCTION job_state_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_state_counts (state, n)
    SELECT state, count(*) FROM new_rows GROUP BY state;
    RETURN NULL;
END $$;

CREATE FUNCTION job_state_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_state_counts (state, n)
    SELECT state, sum(d) FROM (SELECT state, 1 AS d FROM new_rows
                               UNION ALL SELECT state, -1 FROM old_rows) c
     GROUP BY state HAVING sum(d) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION job_state_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_state_counts (state, n)
    SELECT state, -count(*) FROM old_rows GROUP BY state;
    RETURN NULL;
END $$;

CREATE FUNCTION job_state_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_state_counts;
    RETURN NULL;
END $$;

-- No write to jobs between the triggers' start and the initial counts (until commit).
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

INSERT INTO job_state_counts (state, n) SELECT state, count(*) FROM jobs GROUP BY state;
