-- Webhook deliveries (a job's notify.url): one row per job that asked for one, created with the job.
-- state: waiting (the job has not ended) → pending (due at next_attempt_at; retried with back-off) → delivered | failed.
-- A sender claims a due row by setting locked_until; a sender that dies leaves it to be claimed again after that.
create table batchrunner.notifications (
    job_id          uuid primary key references batchrunner.jobs(id) on delete cascade,
    url             text not null,
    state           text not null default 'waiting' check (state in ('waiting', 'pending', 'delivered', 'failed')),
    attempts        integer not null default 0,
    last_error      text,
    next_attempt_at timestamptz,
    locked_until    timestamptz,
    delivered_at    timestamptz
);
create index notifications_due_idx on batchrunner.notifications (next_attempt_at) where state = 'pending';

-- A job ends by many paths (its worker, a cancel while queued, a lost node, the Hangfire reconciler): the
-- database makes its webhook due on every one of them, in the transaction that ends the job.
create function batchrunner.job_ended_notify() returns trigger language plpgsql as $$
begin
    update batchrunner.notifications set state = 'pending', next_attempt_at = now()
     where job_id = new.id and state = 'waiting';
    return null;
end
$$;
create trigger jobs_ended_notify after update of state on batchrunner.jobs
    for each row when (new.state in ('succeeded', 'failed', 'cancelled') and old.state is distinct from new.state)
    execute function batchrunner.job_ended_notify();
