-- What a node lets its jobs ask for (network modes, capabilities, datasets): published with its record, so that
-- submission on any API node checks a job against the nodes that could run it, not against its own settings.
alter table batchrunner.nodes add column policy jsonb;
