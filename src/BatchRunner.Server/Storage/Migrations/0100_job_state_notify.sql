-- A job's state change wakes the API requests waiting for it (GET /api/v1/jobs/{id}?waitSeconds=), on whichever node
-- they wait and whichever node made the change: JobStateSignal LISTENs on this channel only while a request waits.
-- NOTIFY is delivered when the transaction that changed the state commits (never when it rolls back). Only a hint: the
-- row stays the truth, read again by the woken request, and a waiting request also reads it every few seconds.
create function batchrunner.job_state_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('batchrunner_job_state', new.id::text);
    return null;
end
$$;
create trigger jobs_state_notify after update of state on batchrunner.jobs
    for each row when (new.state is distinct from old.state)
    execute function batchrunner.job_state_notify();
