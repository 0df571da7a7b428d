-- Workflows meet tenants (issues 12 and 18). A schedule belongs to the tenant of the key that created it; its runs are
-- submitted as that tenant and key, with the secrets of its job (secretEnv, encrypted as jobs.secrets is).
-- Schedules from before tenants belong to 'default'. (Constant defaults: no table rewrite.)
alter table batchrunner.schedules add column tenant text not null default 'default' references batchrunner.tenants(name);
alter table batchrunner.schedules add column created_by text;
alter table batchrunner.schedules add column secrets bytea;
create index schedules_tenant_created_idx on batchrunner.schedules (tenant, created_at desc, id desc);

-- A tenant's top-level jobs newest first (its listing; arrays' children are listed under their parent): without these,
-- the first page after a 10,000-child array would read past every child (they share their parent's created_at).
create index jobs_tenant_top_created_idx on batchrunner.jobs (tenant, created_at desc, id desc) where parent_id is null;
create index jobs_tenant_top_state_created_idx on batchrunner.jobs (tenant, state, created_at desc, id desc) where parent_id is null;
