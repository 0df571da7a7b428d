-- The data directory of each node as its last heartbeat saw it: size, free space, the reserve (MinFreeDisk),
-- and why no job starts there while the free space is below the reserve (null otherwise).
alter table batchrunner.nodes add column if not exists disk jsonb;
