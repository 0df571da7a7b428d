-- A tenant made or removed wakes every node's fair share at once (TenantChanges listens on this channel through the
-- fetching worker's LISTEN connection), on every path that makes one (an API key for a new tenant, PUT of a tenant, SQL
-- by hand), whichever node made it. A node that knows of one tenant only orders its fetches without reading the tenants
-- again until this arrives, so a new tenant's first job is fetched at once rather than after that knowledge expires.
-- Delivered at commit, in commit order: before the notification of any job the new tenant then submits.
create function batchrunner.tenant_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('batchrunner_tenants', '');
    return null;
end
$$;
create trigger tenants_notify after insert or delete on batchrunner.tenants
    for each row execute function batchrunner.tenant_notify();
