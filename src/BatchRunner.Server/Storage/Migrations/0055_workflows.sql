-- Workflows (issue 12): job arrays, dependencies, schedules.

-- An array is one parent row (array_size set; it runs no container) and one row per child (parent_id, array_index)
-- sharing its spec. Children are inserted undispatched (dispatched_at null): the workflow dispatcher gives them a
-- Hangfire message, at most the array's parallelism at a time. Every other job is dispatched when it is inserted.
alter table batchrunner.jobs
    add column parent_id     uuid references batchrunner.jobs(id) on delete cascade,
    add column array_index   integer,
    add column array_size    integer,
    add column schedule_id   uuid,
    add column dispatched_at timestamptz default now(),
    -- Set in the transaction that changed the job's state outside a Hangfire worker (a dependency resolved, an array
    -- ended): the job's Hangfire state must follow. An outbox, drained by the workflow sweeper.
    add column hangfire_sync boolean not null default false;

create unique index jobs_array_child_idx on batchrunner.jobs (parent_id, array_index) where parent_id is not null;
-- Children per state (the parent's counts, ?state= listings, how many run).
create index jobs_parent_state_idx on batchrunner.jobs (parent_id, state, array_index) where parent_id is not null;
-- The dispatcher: which children wait for a slot, and how many of an array's slots are taken.
create index jobs_undispatched_idx on batchrunner.jobs (parent_id, array_index) where dispatched_at is null and state = 'queued';
create index jobs_dispatched_active_idx on batchrunner.jobs (parent_id)
    where parent_id is not null and dispatched_at is not null and state not in ('succeeded', 'failed', 'cancelled');
-- Array parents not ended (finished_at is null) or ended lately (the progress gauge).
create index jobs_array_parents_idx on batchrunner.jobs (finished_at) where array_size is not null;
create index jobs_hangfire_sync_idx on batchrunner.jobs (id) where hangfire_sync;
create index jobs_schedule_created_idx on batchrunner.jobs (schedule_id, created_at desc, id desc) where schedule_id is not null;
-- A run started by its schedule's Hangfire job is found again by that job's id when Hangfire delivers it again.
create index jobs_schedule_hangfire_idx on batchrunner.jobs (hangfire_job_id) where schedule_id is not null;
-- The stranded-job rescue: jobs without a Hangfire message (an array's undispatched children have a null dispatched_at).
create index jobs_without_message_idx on batchrunner.jobs (dispatched_at) where hangfire_job_id is null and state in ('queued', 'waiting');
-- GET /api/v1/jobs lists top-level jobs (children are under their parent): newest first, with and without a state.
create index jobs_top_created_idx on batchrunner.jobs (created_at desc, id desc) where parent_id is null;
create index jobs_top_state_created_idx on batchrunner.jobs (state, created_at desc, id desc) where parent_id is null;

-- dependsOn: job_id waits until depends_on has ended as condition says. No foreign key on depends_on: a dependency
-- that no longer exists is one whose condition can never hold.
create table batchrunner.job_dependencies (
    job_id     uuid not null references batchrunner.jobs(id) on delete cascade,
    depends_on uuid not null,
    condition  text not null,
    primary key (job_id, depends_on)
);
create index job_dependencies_depends_on_idx on batchrunner.job_dependencies (depends_on);

-- Recurring jobs: each is a Hangfire recurring job ("batchrunner-schedule:ID") that submits spec as a new job.
create table batchrunner.schedules (
    id                uuid primary key,
    name              text not null,
    cron              text not null,
    time_zone         text not null,
    spec              jsonb not null,
    concurrency       text not null,
    paused            boolean not null default false,
    created_at        timestamptz not null,
    updated_at        timestamptz not null,
    runs              integer not null default 0,
    last_run_at       timestamptz,
    last_job_id       uuid,
    skipped_runs      integer not null default 0,
    last_skipped_at   timestamptz,
    last_skip_message text
);
create index schedules_created_idx on batchrunner.schedules (created_at desc, id desc);
