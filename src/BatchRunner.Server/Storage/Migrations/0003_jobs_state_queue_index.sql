-- /metrics counts jobs by state and queue on every scrape: keep that an index-only scan.
create index jobs_state_queue_idx on batchrunner.jobs (state, queue);
