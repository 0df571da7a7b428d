-- Listing filters (issue 19): each filter has an index that yields its jobs newest first, so that a page of a
-- filtered list reads about one page of rows; keyset pagination on (created_at, id) stays correct with any filter.
-- (state, created_at, id) exists since 0001.
create index jobs_queue_created_idx on batchrunner.jobs (queue, created_at desc, id desc);
-- ?name=exact and ?name=prefix*: text_pattern_ops serves LIKE 'prefix%' under any collation, and equality too.
create index jobs_name_created_idx on batchrunner.jobs (name text_pattern_ops, created_at desc, id desc);
-- ?label=k=v (repeatable, all must match): spec->'labels' @> '{"k":"v",...}'.
create index jobs_labels_idx on batchrunner.jobs using gin ((spec -> 'labels') jsonb_path_ops);
-- ?queue=&state= together: which states occur in which queue (an MCV list of the pairs). Without it the planner
-- multiplies the two frequencies, and for a pair that is rare or absent (queued jobs of a queue that has none)
-- walks the whole newest-first index looking for rows that are not there.
create statistics batchrunner.jobs_queue_state_stats (mcv) on queue, state from batchrunner.jobs;
