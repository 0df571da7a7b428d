-- A job's inputs travel with it: a tar of them, named by its digest, is kept by the node that took the
-- submission (inputs_node, reachable at inputs_url); the node that runs the job fetches and checks it.
alter table batchrunner.jobs
    add column inputs_digest text,
    add column inputs_bytes  bigint,
    add column inputs_node   text,
    add column inputs_url    text;

-- Job files (logs, outputs, inputs) that a node must still remove after their job's record was deleted (by
-- DELETE or retention): the record goes at once, this row stays until that node has removed its files, also
-- when it is down at the time and removes them when it comes back.
create table batchrunner.file_removals (
    node          text not null,
    job_id        uuid not null,
    inputs_digest text,
    requested_at  timestamptz not null default now(),
    primary key (node, job_id)
);

-- Retention finds the oldest finished jobs without reading the others.
create index jobs_finished_at_idx on batchrunner.jobs (finished_at) where state in ('succeeded', 'failed', 'cancelled');
-- Whether a stored inputs tar is still some job's.
create index jobs_inputs_digest_idx on batchrunner.jobs (inputs_digest) where inputs_digest is not null;
