-- BatchRunner's own tables, beside Hangfire's schema in the same database.
create table batchrunner.jobs (
    id              uuid primary key,
    name            text,
    image           text not null,
    image_digest    text,
    queue           text not null,
    spec            jsonb not null,
    state           text not null,
    reason          text,
    message         text,
    exit_code       integer,
    -- Attempt number of the current or last run; fences late writes from an earlier attempt.
    attempt         integer not null default 0,
    created_at      timestamptz not null,
    started_at      timestamptz,
    finished_at     timestamptz,
    usage           jsonb,
    pull_progress   jsonb,
    hangfire_job_id text,
    cancel_requested boolean not null default false,
    node            text
);

-- Newest-first listing and keyset pagination, with and without a state filter.
create index jobs_created_idx on batchrunner.jobs (created_at desc, id desc);
create index jobs_state_created_idx on batchrunner.jobs (state, created_at desc, id desc);

create table batchrunner.attempts (
    job_id      uuid not null references batchrunner.jobs(id) on delete cascade,
    attempt     integer not null,
    node        text not null,
    state       text not null,
    reason      text,
    message     text,
    exit_code   integer,
    started_at  timestamptz not null,
    finished_at timestamptz,
    primary key (job_id, attempt)
);

create table batchrunner.outputs (
    job_id  uuid not null references batchrunner.jobs(id) on delete cascade,
    path    text not null,
    size    bigint not null,
    sha256  text not null,
    primary key (job_id, path)
);
