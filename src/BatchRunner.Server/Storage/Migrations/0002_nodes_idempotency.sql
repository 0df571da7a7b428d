-- Worker nodes: registered at start, heartbeated; a node whose heartbeat is older than its lease is dead.
create table batchrunner.nodes (
    name          text primary key,
    instance_id   uuid not null,
    labels        jsonb not null default '{}',
    capacity      jsonb not null,
    queues        text[] not null,
    started_at    timestamptz not null,
    heartbeat_at  timestamptz not null,
    lease_seconds integer not null,
    stopped_at    timestamptz
);

-- A repeated POST with the same Idempotency-Key returns the job the first one created.
create table batchrunner.idempotency_keys (
    key          text primary key,
    job_id       uuid not null references batchrunner.jobs(id) on delete cascade,
    request_hash text not null,
    created_at   timestamptz not null default now()
);

-- When the next attempt may start (retry back-off); null: now.
alter table batchrunner.jobs add column not_before timestamptz;

create index jobs_node_active_idx on batchrunner.jobs (node) where state in ('starting', 'running');

-- Which process (node instance) runs the current attempt: a restarted node is a new instance, and the
-- attempts of its previous instance are lost.
alter table batchrunner.jobs add column node_instance uuid;
