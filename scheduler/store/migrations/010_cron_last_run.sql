-- Cron jobs: when the last run was launched (or skipped by CANCEL_NEW), so a restarted coordinator
-- knows what it missed.
ALTER TABLE jobs ADD COLUMN last_run_at timestamptz;
