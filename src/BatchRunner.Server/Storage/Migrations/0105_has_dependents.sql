-- A job that another job depends on says so on its own row, so that its end finds out whether to wake the workflow
-- sweeper in the statement that records the end (RETURNING), instead of a query of job_dependencies after the commit.
-- The dependent's submission sets it in its transaction, with the row lock of an update: a dependent submitted while
-- its dependency ends either commits first (the end's update waits for it and returns the flag) or waits for the end's
-- commit (so its own submission's pass sees the end).
alter table batchrunner.jobs add column has_dependents boolean not null default false;
update batchrunner.jobs j set has_dependents = true
 where exists (select 1 from batchrunner.job_dependencies d where d.depends_on = j.id);
