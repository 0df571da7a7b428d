-- Tenants own jobs; every API key belongs to one tenant and has one role (issue 18). Quotas and fair-share
-- weights are added as columns of batchrunner.tenants by a later migration.
create table batchrunner.tenants (
    name       text primary key,
    created_at timestamptz not null default now()
);
insert into batchrunner.tenants (name) values ('default');

-- A key is 32 random bytes: its SHA-256 is stored and looked up (nothing to guess, so no slow hash is needed);
-- the key itself is shown once, when it is created. prefix: its first characters, to tell keys apart in lists.
-- The bootstrap key (BATCHRUNNER_API_KEY or DATA/api-key) is not stored: each node knows it from its settings.
create table batchrunner.api_keys (
    id           uuid primary key,
    name         text not null,
    tenant       text not null references batchrunner.tenants(name),
    role         text not null check (role in ('admin', 'user', 'viewer')),
    key_hash     bytea not null unique,
    prefix       text not null,
    created_at   timestamptz not null default now(),
    created_by   text,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
