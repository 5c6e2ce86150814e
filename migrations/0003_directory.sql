-- What the directory showed for each attempt: the domain controller that answered (the one
-- Exchange was told to use) and the account before the Exchange step and after it
-- (verification), so a job's final state is what AD says, not what a script printed.
ALTER TABLE job_attempts ADD COLUMN domain_controller text;
ALTER TABLE job_attempts ADD COLUMN directory jsonb;
