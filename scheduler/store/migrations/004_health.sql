-- The health check verdict the agent last reported for a workload (unknown, healthy, unhealthy).
ALTER TABLE workloads ADD COLUMN health text;
