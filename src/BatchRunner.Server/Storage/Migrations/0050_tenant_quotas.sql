-- Quotas and fair-share weights per tenant (issue 18). A null limit is no limit. maxQueuedJobs refuses submissions
-- (429); the maxRunning amounts hold jobs in the queue, counted over the tenant's starting and running jobs across
-- the cluster; weight is the tenant's share of the cluster when several tenants wait (Scheduling/FairShare).
alter table batchrunner.tenants
    add column max_queued_jobs          int    check (max_queued_jobs >= 0),
    add column max_running_cpus         float8 check (max_running_cpus >= 0),
    add column max_running_memory_bytes bigint check (max_running_memory_bytes >= 0),
    add column max_running_gpus         int    check (max_running_gpus >= 0),
    add column weight                   float8 not null default 1 check (weight > 0);
