-- A rolling update can be paused (Aurora's `update pause`): no batch moves on until it is resumed, and
-- a replacement of a lost instance keeps the version the update left it at, as while rolling.
ALTER TABLE job_updates DROP CONSTRAINT job_updates_status_check;
ALTER TABLE job_updates ADD CONSTRAINT job_updates_status_check
  CHECK (status IN ('rolling', 'paused', 'succeeded', 'failed', 'rolled_back', 'cancelled'));
