-- A restart (no config change) rolls through the same machinery as an update, to the same version.
ALTER TABLE job_updates ADD COLUMN restart boolean NOT NULL DEFAULT false;
