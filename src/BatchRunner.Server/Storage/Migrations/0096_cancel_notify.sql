-- A cancel of a starting or running job wakes the node running it at once (CancelSignal listens on this channel), on
-- every path that sets the flag (the API, an array's cancel taking its children, a schedule's replace, a dashboard
-- delete of a processing job), and whichever node made the change: NOTIFY goes through the shared database and is
-- delivered when the transaction that set the flag commits (never when it rolls back). Only a hint: the flag in the row
-- stays the truth, read again by the woken attempt, and a listener that was away reads the flags of its jobs back.
create function batchrunner.job_cancel_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('batchrunner_cancel', new.id::text);
    return null;
end
$$;
create trigger jobs_cancel_notify after update of cancel_requested on batchrunner.jobs
    for each row when (new.cancel_requested and not old.cancel_requested and new.state in ('starting', 'running'))
    execute function batchrunner.job_cancel_notify();
