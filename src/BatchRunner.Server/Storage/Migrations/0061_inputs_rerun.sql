-- The files a job was given at submission (what /inputs holds), listed like its outputs: path, size, sha256.
create table batchrunner.inputs (
    job_id  uuid not null references batchrunner.jobs(id) on delete cascade,
    path    text not null,
    size    bigint not null,
    sha256  text not null,
    primary key (job_id, path)
);

-- A job made by POST /api/v1/jobs/{id}/rerun names the job it reruns.
alter table batchrunner.jobs add column rerun_of uuid;
