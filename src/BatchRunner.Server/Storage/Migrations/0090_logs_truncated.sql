-- A job whose stdout or stderr went over its cap (and kept only its first and last parts) says so.
alter table batchrunner.jobs add column logs_truncated boolean not null default false;
