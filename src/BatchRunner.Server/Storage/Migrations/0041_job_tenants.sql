-- Every job belongs to a tenant and records the key that submitted it ('bootstrap' for the configured key).
-- Jobs from before tenants existed belong to 'default'. (A constant default: no table rewrite.)
alter table batchrunner.jobs add column tenant text not null default 'default' references batchrunner.tenants(name);
alter table batchrunner.jobs add column submitted_by text;

-- A tenant's jobs newest first (its listing, with and without a state filter), as jobs_created_idx is for admins.
create index jobs_tenant_created_idx on batchrunner.jobs (tenant, created_at desc, id desc);
create index jobs_tenant_state_created_idx on batchrunner.jobs (tenant, state, created_at desc, id desc);

-- Idempotency keys are per tenant: a key another tenant happens to use neither finds nor blocks this tenant's job.
alter table batchrunner.idempotency_keys add column tenant text not null default 'default';
alter table batchrunner.idempotency_keys drop constraint idempotency_keys_pkey;
alter table batchrunner.idempotency_keys add primary key (tenant, key);
