-- A job's secrets (secretEnv values, its webhook's key), encrypted with ASP.NET Core Data Protection; the job's
-- spec column never holds them.
alter table batchrunner.jobs add column secrets bytea;

-- The Data Protection key ring, shared by every node so that any node decrypts what another encrypted
-- (DataProtectionKeyRepository). Keys are only ever added; Data Protection rotates them itself.
create table batchrunner.data_protection_keys (
    id            bigint generated always as identity primary key,
    friendly_name text,
    xml           text not null,
    created_at    timestamptz not null default now()
);
