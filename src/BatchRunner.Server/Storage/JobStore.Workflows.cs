using BatchRunner.Core;
using Npgsql;
using NpgsqlTypes;

namespace BatchRunner.Server.Storage;

// Arrays and dependencies: the rows the workflow engine reads and the transitions it makes. Every transition is safe to
// run on every node at once: rows are claimed with FOR UPDATE SKIP LOCKED, or serialised on the array's parent row.
// A transition made outside a Hangfire worker sets hangfire_sync in the same statement: JobQueue.SyncStatesAsync then
// brings the job's Hangfire state in line (an outbox: a crash in between leaves the flag for the next pass).
public sealed partial class JobStore
{
    private const string FinalStates = "('succeeded', 'failed', 'cancelled')";

    /// <summary>
    /// The job's dependencies, and the flag on each dependency's row that its end reads (<see cref="FinishAsync"/>): set
    /// with an update's row lock, always, so that this transaction and a dependency's end are ordered (see the migration
    /// 0105_has_dependents).
    /// </summary>
    private static async Task InsertDependenciesAsync(NpgsqlConnection conn, NpgsqlTransaction tx, JobRecord job, CancellationToken ct)
    {
        if (job.Spec.DependsOn.Count == 0) return;
        await using var cmd = new NpgsqlCommand("""
            with d as (
                insert into batchrunner.job_dependencies (job_id, depends_on, condition)
                select @id, d.job, d.condition from unnest(@jobs, @conditions) as d(job, condition)
                returning depends_on),
            -- Locked in id order, so that two submissions naming the same dependencies never wait for each other in a cycle.
            l as (select id from batchrunner.jobs where id in (select depends_on from d) order by id for no key update)
            update batchrunner.jobs set has_dependents = true where id in (select id from l)
            """, conn, tx);
        cmd.Parameters.AddWithValue("id", job.Id);
        cmd.Parameters.AddWithValue("jobs", job.Spec.DependsOn.Select(d => d.Job).ToArray());
        cmd.Parameters.AddWithValue("conditions", job.Spec.DependsOn.Select(d => d.Condition).ToArray());
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>
    /// The children of an array, in one statement however many: each a copy of the parent's row (spec without dependsOn:
    /// the parent waits for those), queued and undispatched, of the parent's tenant and submitter, with its secrets
    /// (secretEnv, still encrypted) and its inputs tar (each child unpacks it where it runs). Their spec is copied inside the database, so a 10,000-child array costs one round
    /// trip and no JSON per child.
    /// </summary>
    private static async Task InsertChildrenAsync(NpgsqlConnection conn, NpgsqlTransaction tx, JobRecord parent, CancellationToken ct)
    {
        var ids = new Guid[parent.Spec.Array!.Size];
        for (var i = 0; i < ids.Length; i++) ids[i] = Guid.CreateVersion7();
        await using var cmd = new NpgsqlCommand("""
            insert into batchrunner.jobs (id, name, image, queue, spec, state, created_at, tenant, submitted_by, secrets,
                                          inputs_digest, inputs_bytes, inputs_node, inputs_url, parent_id, array_index, dispatched_at)
            select c.id, p.name, p.image, p.queue, p.spec - 'dependsOn', 'queued', p.created_at, p.tenant, p.submitted_by, p.secrets,
                   p.inputs_digest, p.inputs_bytes, p.inputs_node, p.inputs_url, p.id, (c.n - 1)::int, null
              from batchrunner.jobs p cross join unnest(@ids) with ordinality as c(id, n)
             where p.id = @parent
            """, conn, tx);
        cmd.Parameters.AddWithValue("parent", parent.Id);
        cmd.Parameters.AddWithValue("ids", ids);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>The states of the jobs among <paramref name="ids"/> that exist in <paramref name="tenant"/> (null: any
    /// tenant): another tenant's job is left out, as one that does not exist.</summary>
    public async Task<IReadOnlyDictionary<Guid, string>> StatesAsync(IReadOnlyCollection<Guid> ids, string? tenant, CancellationToken ct)
    {
        var result = new Dictionary<Guid, string>();
        if (ids.Count == 0) return result;
        await using var cmd = db.CreateCommand("select id, state from batchrunner.jobs where id = any(@ids) and (@t::text is null or tenant = @t)");
        cmd.Parameters.AddWithValue("ids", ids.ToArray());
        cmd.Parameters.Add(new NpgsqlParameter("t", NpgsqlDbType.Text) { Value = (object?)tenant ?? DBNull.Value });
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) result[rd.GetGuid(0)] = rd.GetString(1);
        return result;
    }

    /// <summary>Child <paramref name="index"/> of array <paramref name="parent"/>, with its outputs; null also when it
    /// belongs to another tenant than <paramref name="tenant"/> (null: any tenant).</summary>
    public async Task<JobRecord?> GetChildAsync(Guid parent, int index, string? tenant, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("select id from batchrunner.jobs where parent_id = @p and array_index = @i");
        cmd.Parameters.AddWithValue("p", parent);
        cmd.Parameters.AddWithValue("i", index);
        return await cmd.ExecuteScalarAsync(ct) is Guid id ? await GetAsync(id, tenant, ct) : null;
    }

    /// <summary>An array's children in index order, after index <paramref name="afterIndex"/>, as summaries (list items:
    /// without args and env); the next cursor is the last index.</summary>
    public async Task<(IReadOnlyList<JobRecord> Items, int? NextAfter)> ListChildrenAsync(Guid parent, string? state, int limit, int afterIndex, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand($"""
            select {ListColumns(summary: false)} from {From}
             where j.parent_id = @p and j.array_index > @after {(state is null ? "" : "and j.state = @state")}
             order by j.array_index limit @limit
            """);
        cmd.Parameters.AddWithValue("p", parent);
        cmd.Parameters.AddWithValue("after", afterIndex);
        cmd.Parameters.AddWithValue("limit", limit + 1);
        if (state is not null) cmd.Parameters.AddWithValue("state", state);
        var items = new List<JobRecord>();
        await using (var rd = await cmd.ExecuteReaderAsync(ct))
            while (await rd.ReadAsync(ct)) items.Add(Read(rd) with { IsSummary = true, EnvNames = rd.GetFieldValue<string[]>(EnvNamesOrdinal) });
        int? next = null;
        if (items.Count > limit)
        {
            items.RemoveAt(items.Count - 1);
            next = items[^1].ArrayIndex;
        }
        return (items, next);
    }

    /// <summary>Children per state of each array among <paramref name="parents"/> (one grouped query).</summary>
    public async Task<IReadOnlyDictionary<Guid, IReadOnlyDictionary<string, int>>> CountChildrenAsync(IReadOnlyCollection<Guid> parents, CancellationToken ct)
    {
        if (parents.Count == 0) return new Dictionary<Guid, IReadOnlyDictionary<string, int>>();
        await using var cmd = db.CreateCommand(ChildCountsSql);
        cmd.Parameters.AddWithValue("ids", parents.ToArray());
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        return await ReadChildCountsAsync(rd, ct);
    }

    /// <summary>Rows (parent, state, count) of the children of the arrays in <c>@ids</c>; read by <see cref="ReadChildCountsAsync"/>.</summary>
    private const string ChildCountsSql = $"{ChildCountsSelect} where parent_id = any(@ids) {ChildCountsGroup}";

    /// <summary>As <see cref="ChildCountsSql"/> for one parent <c>@id</c>: a scalar, which PostgreSQL's generic plan serves
    /// (see <see cref="JobNodeLiveness.OneSql"/>).</summary>
    internal const string OneChildCountsSql = $"{ChildCountsSelect} where parent_id = @id {ChildCountsGroup}";

    private const string ChildCountsSelect = "select parent_id, state, count(*) from batchrunner.jobs";
    private const string ChildCountsGroup = "group by parent_id, state";

    private static async Task<IReadOnlyDictionary<Guid, IReadOnlyDictionary<string, int>>> ReadChildCountsAsync(NpgsqlDataReader rd, CancellationToken ct)
    {
        var result = new Dictionary<Guid, IReadOnlyDictionary<string, int>>();
        while (await rd.ReadAsync(ct))
        {
            var parent = rd.GetGuid(0);
            if (!result.TryGetValue(parent, out var counts)) result[parent] = counts = new Dictionary<string, int>();
            ((Dictionary<string, int>)counts)[rd.GetString(1)] = (int)rd.GetInt64(2);
        }
        return result;
    }

    /// <summary>One end of a dependency: the other job, the condition, and that job as it is now (null fields: it no longer exists).</summary>
    public sealed record DependencyLink(Guid Job, string Condition, string? State, string? Name, string? HangfireJobId);

    /// <summary>The jobs <paramref name="id"/> depends on (<paramref name="dependents"/>: the jobs that depend on it, at most 100).</summary>
    public async Task<IReadOnlyList<DependencyLink>> DependencyLinksAsync(Guid id, bool dependents, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand(dependents
            ? """
              select d.job_id, d.condition, j.state, j.name, j.hangfire_job_id from batchrunner.job_dependencies d
                join batchrunner.jobs j on j.id = d.job_id where d.depends_on = @id order by j.created_at limit 100
              """
            : """
              select d.depends_on, d.condition, j.state, j.name, j.hangfire_job_id from batchrunner.job_dependencies d
                left join batchrunner.jobs j on j.id = d.depends_on where d.job_id = @id order by d.depends_on
              """);
        cmd.Parameters.AddWithValue("id", id);
        var result = new List<DependencyLink>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct))
            result.Add(new DependencyLink(rd.GetGuid(0), rd.GetString(1), rd.IsDBNull(2) ? null : rd.GetString(2),
                rd.IsDBNull(3) ? null : rd.GetString(3), rd.IsDBNull(4) ? null : rd.GetString(4)));
        return result;
    }

    /// <summary>
    /// Moves waiting jobs on: to <c>queued</c> once every condition holds, to <c>cancelled</c> / dependency_failed (naming the
    /// dependency) once one never can, with an array's undispatched children; the others get a message naming what they
    /// still wait for. Returns how many waiting jobs moved (their dependents may move too: the caller runs it again until
    /// none) and the jobs that ended (cancelled, with the cancelled arrays' children).
    /// </summary>
    public async Task<(int Moved, IReadOnlyList<EndedJob> Ended)> ResolveWaitingAsync(CancellationToken ct)
    {
        await using var cmd = db.CreateCommand($"""
            with w as (
                select j.id from batchrunner.jobs j where j.state = 'waiting' and not j.cancel_requested
                 order by j.created_at limit 500 for update skip locked),
            dd as (
                select w.id, d.depends_on, d.condition, dep.state, dep.reason,
                       dep.state is not null and case d.condition when 'succeeded' then dep.state = 'succeeded'
                                                                  when 'failed' then dep.state in ('failed', 'cancelled')
                                                                  else dep.state in {FinalStates} end as holds,
                       dep.state is null or dep.state in {FinalStates} as ended
                  from w left join batchrunner.job_dependencies d on d.job_id = w.id
                  left join batchrunner.jobs dep on dep.id = d.depends_on),
            ev as (
                select id,
                       coalesce(bool_and(holds) filter (where depends_on is not null), true) as ready,
                       min(case when depends_on is not null and ended and not holds
                                then 'dependency ' || depends_on ||
                                     case when state is null then ' no longer exists'
                                          else ' ended ' || state || coalesce(' (' || reason || ')', '') end ||
                                     ', so its condition "' || condition || '" can never hold' end) as why,
                       count(*) filter (where depends_on is not null and not holds) as pending,
                       array_to_string((array_agg(depends_on::text order by depends_on) filter (where depends_on is not null and not holds))[1:3], ', ') as named
                  from dd group by id),
            moved as (
                update batchrunner.jobs j set
                       state = case when ev.why is not null then 'cancelled' else 'queued' end,
                       reason = case when ev.why is not null then 'dependency_failed' end,
                       message = ev.why,
                       finished_at = case when ev.why is not null then now() end,
                       hangfire_sync = true
                  from ev where j.id = ev.id and (ev.why is not null or ev.ready)
                returning j.id, j.state, j.reason, j.message, j.queue),
            children as (
                update batchrunner.jobs c set state = 'cancelled', reason = 'dependency_failed', cancel_requested = true, finished_at = now(),
                       message = 'its array ' || moved.id || ' was cancelled: ' || moved.message
                  from moved where c.parent_id = moved.id and moved.state = 'cancelled' and c.state not in {FinalStates}
                returning c.queue),
            told as (
                update batchrunner.jobs j set message = m.text
                  from (select id, 'waiting for ' || case when pending = 1 then 'dependency ' || named
                                                          else pending || ' dependencies: ' || named || case when pending > 3 then ', …' else '' end end as text
                          from ev where why is null and not ready) m
                 where j.id = m.id and j.message is distinct from m.text)
            select queue, state, reason from moved
            union all select queue, 'cancelled', 'dependency_failed' from children
            """);
        var moved = 0;
        var ended = new List<EndedJob>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct))
        {
            var state = rd.GetString(1);
            if (state == JobState.Queued) moved++;
            else ended.Add(new EndedJob(rd.GetString(0), state, rd.IsDBNull(2) ? null : rd.GetString(2)));
        }
        return (moved + ended.Count, ended);
    }

    /// <summary>A job that reached a final state in a transition of the workflow engine (for the finished-jobs counter).</summary>
    public sealed record EndedJob(string Queue, string State, string? Reason);

    /// <summary>
    /// Ends the arrays whose children have all ended: <c>succeeded</c> when every child did, <c>cancelled</c> when the array
    /// was cancelled, else <c>failed</c> / children_failed with the counts. Returns the arrays that ended.
    /// </summary>
    public async Task<IReadOnlyList<EndedJob>> FinishArraysAsync(CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        return await FinishArraysAsync(conn, null, null, ct);
    }

    private static async Task<IReadOnlyList<EndedJob>> FinishArraysAsync(NpgsqlConnection conn, NpgsqlTransaction? tx, Guid? only, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand($"""
            with p as (
                select id from batchrunner.jobs
                 where array_size is not null and finished_at is null and state not in {FinalStates} {(only is null ? "" : "and id = @only")}
                 for update skip locked),
            c as (
                select c.parent_id, count(*) as n,
                       count(*) filter (where c.state = 'succeeded') as ok,
                       count(*) filter (where c.state = 'failed') as failed,
                       count(*) filter (where c.state = 'cancelled') as cancelled,
                       count(*) filter (where c.state not in {FinalStates}) as active
                  from batchrunner.jobs c join p on c.parent_id = p.id group by c.parent_id)
            update batchrunner.jobs j set
                   state = case when j.cancel_requested then 'cancelled' when c.ok = c.n then 'succeeded' else 'failed' end,
                   reason = case when j.cancel_requested then 'cancelled' when c.ok = c.n then null else 'children_failed' end,
                   message = case when c.ok = c.n then c.n || ' children succeeded'
                                  else (c.n - c.ok) || ' of ' || c.n || ' children did not succeed (' || c.failed || ' failed, ' || c.cancelled || ' cancelled)' end,
                   exit_code = case when c.ok = c.n and not j.cancel_requested then 0 end,
                   finished_at = now(),
                   hangfire_sync = true
              from c where j.id = c.parent_id and c.active = 0
            returning j.queue, j.state, j.reason
            """, conn, tx);
        if (only is { } id) cmd.Parameters.AddWithValue("only", id);
        var ended = new List<EndedJob>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) ended.Add(new EndedJob(rd.GetString(0), rd.GetString(1), rd.IsDBNull(2) ? null : rd.GetString(2)));
        return ended;
    }

    /// <summary>Cancels an array's children that have not ended, in the caller's transaction: those not started at once,
    /// running ones by their flag. Returns the Hangfire messages to delete and how many were cancelled at once.</summary>
    private static async Task<(IReadOnlyList<string> HangfireJobIds, int CancelledNow)> CancelChildrenAsync(
        NpgsqlConnection conn, NpgsqlTransaction tx, Guid parent, string reason, string message, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand($"""
            with c as (select id, state from batchrunner.jobs where parent_id = @p and state not in {FinalStates} for update)
            update batchrunner.jobs t set cancel_requested = true,
                   state = case when c.state in ('queued', 'waiting') then 'cancelled' else t.state end,
                   reason = case when c.state in ('queued', 'waiting') then @reason else t.reason end,
                   message = case when c.state in ('queued', 'waiting') then @message else t.message end,
                   finished_at = case when c.state in ('queued', 'waiting') then now() else t.finished_at end
              from c where t.id = c.id
            returning t.hangfire_job_id, c.state in ('queued', 'waiting')
            """, conn, tx);
        cmd.Parameters.AddWithValue("p", parent);
        cmd.Parameters.AddWithValue("reason", reason);
        cmd.Parameters.AddWithValue("message", message);
        var ids = new List<string>();
        var now = 0;
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct))
        {
            if (!rd.IsDBNull(0)) ids.Add(rd.GetString(0));
            if (rd.GetBoolean(1)) now++;
        }
        return (ids, now);
    }

    /// <summary>Arrays (queued or running, not cancelled) that have children waiting for a slot.</summary>
    public async Task<IReadOnlyList<Guid>> ArraysToDispatchAsync(CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            select p.id from batchrunner.jobs p
             where p.array_size is not null and p.finished_at is null and p.state in ('queued', 'running') and not p.cancel_requested
               and exists (select 1 from batchrunner.jobs c where c.parent_id = p.id and c.dispatched_at is null and c.state = 'queued')
             limit 100
            """);
        var result = new List<Guid>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) result.Add(rd.GetGuid(0));
        return result;
    }

    /// <summary>A child given a slot of its array: it needs its Hangfire message now.</summary>
    public sealed record DispatchedChild(Guid Id, string DisplayName, string Queue, string Tenant);

    /// <summary>
    /// Marks up to <paramref name="max"/> children of <paramref name="parent"/> dispatched, in index order, as long as fewer than
    /// the array's parallelism are dispatched and not ended. Serialised on the parent's row (cluster-wide), and counted
    /// after taking its lock (a statement of its own, so it sees what the previous holder committed): never more than
    /// parallelism. A crash before the caller enqueued them leaves them dispatched without a message, which the stranded-job
    /// rescue enqueues (<see cref="NodeStore.StrandedJobsAsync"/>).
    /// </summary>
    public async Task<IReadOnlyList<DispatchedChild>> ReserveChildrenAsync(Guid parent, int max, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        int parallelism;
        await using (var lk = new NpgsqlCommand("""
            select (spec->'array'->>'parallelism')::int from batchrunner.jobs
             where id = @p and state in ('queued', 'running') and not cancel_requested for update
            """, conn, tx))
        {
            lk.Parameters.AddWithValue("p", parent);
            if (await lk.ExecuteScalarAsync(ct) is not int p) return [];
            parallelism = p;
        }
        var result = new List<DispatchedChild>();
        await using (var cmd = new NpgsqlCommand($"""
            with next as (
                select c.id from batchrunner.jobs c
                 where c.parent_id = @p and c.dispatched_at is null and c.state = 'queued'
                 order by c.array_index
                 limit greatest(0, least(@max, @parallelism - (
                     select count(*) from batchrunner.jobs a
                      where a.parent_id = @p and a.dispatched_at is not null and a.state not in {FinalStates}))))
            update batchrunner.jobs c set dispatched_at = now() from next where c.id = next.id
            returning c.id, coalesce(c.name, c.image) || ' [' || c.array_index || ']', c.queue, c.tenant
            """, conn, tx))
        {
            cmd.Parameters.AddWithValue("p", parent);
            cmd.Parameters.AddWithValue("max", max);
            cmd.Parameters.AddWithValue("parallelism", parallelism);
            await using var rd = await cmd.ExecuteReaderAsync(ct);
            while (await rd.ReadAsync(ct)) result.Add(new DispatchedChild(rd.GetGuid(0), rd.GetString(1), rd.GetString(2), rd.GetString(3)));
        }
        await tx.CommitAsync(ct);
        return result;
    }

    /// <summary>A job whose Hangfire state must follow its row (see the remarks at the top of this file).</summary>
    public sealed record HangfireSyncItem(Guid Id, string HangfireJobId, string State, string? Reason, string? Message, string Queue, ArraySpec? Array, string Tenant);

    /// <summary>
    /// Hands up to 50 flagged jobs to <paramref name="apply"/> and clears their flags in the same transaction, holding their
    /// rows meanwhile: a crash or an error leaves the flags for the next pass (<paramref name="apply"/> must be idempotent).
    /// Jobs whose Hangfire message does not exist yet keep their flag until it does.
    /// </summary>
    public async Task<int> SyncHangfireStatesAsync(Func<HangfireSyncItem, Task> apply, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        var items = new List<HangfireSyncItem>();
        await using (var cmd = new NpgsqlCommand("""
            select id, hangfire_job_id, state, reason, message, queue, array_size, (spec->'array'->>'parallelism')::int, tenant from batchrunner.jobs
             where hangfire_sync and hangfire_job_id is not null order by id limit 50 for update skip locked
            """, conn, tx))
        await using (var rd = await cmd.ExecuteReaderAsync(ct))
        {
            while (await rd.ReadAsync(ct))
                items.Add(new HangfireSyncItem(rd.GetGuid(0), rd.GetString(1), rd.GetString(2), rd.IsDBNull(3) ? null : rd.GetString(3),
                    rd.IsDBNull(4) ? null : rd.GetString(4), rd.GetString(5), rd.IsDBNull(6) ? null : new ArraySpec(rd.GetInt32(6), rd.GetInt32(7)), rd.GetString(8)));
        }
        if (items.Count == 0) return 0;
        foreach (var item in items) await apply(item);
        await using (var clear = new NpgsqlCommand("update batchrunner.jobs set hangfire_sync = false where id = any(@ids)", conn, tx))
        {
            clear.Parameters.AddWithValue("ids", items.Select(i => i.Id).ToArray());
            await clear.ExecuteNonQueryAsync(ct);
        }
        await tx.CommitAsync(ct);
        return items.Count;
    }

    /// <summary>The outputs a job produced, as a consumer of them needs: one entry for a plain job, one per child (in index
    /// order) for an array. Empty when the job does not exist.</summary>
    public async Task<IReadOnlyList<ProducedOutputs>> GetProducedOutputsAsync(Guid producer, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            select j.id, j.array_index, j.node, o.path, o.size, o.sha256
              from batchrunner.jobs j left join batchrunner.outputs o on o.job_id = j.id
             where (j.id = @id and j.array_size is null) or j.parent_id = @id
             order by j.array_index nulls first, j.id, o.path
            """);
        cmd.Parameters.AddWithValue("id", producer);
        var result = new List<ProducedOutputs>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        List<OutputFile>? files = null;
        while (await rd.ReadAsync(ct))
        {
            var id = rd.GetGuid(0);
            if (result.Count == 0 || result[^1].JobId != id)
            {
                files = [];
                result.Add(new ProducedOutputs(id, rd.IsDBNull(1) ? null : rd.GetInt32(1), rd.IsDBNull(2) ? null : rd.GetString(2), files));
            }
            if (!rd.IsDBNull(3)) files!.Add(new OutputFile(rd.GetString(3), rd.GetInt64(4), rd.GetString(5)));
        }
        return result;
    }

    /// <summary>Children per state of the arrays not ended, or ended in the last 15 minutes (at most 100 arrays, newest first).</summary>
    public async Task<IReadOnlyList<(Guid Id, string Name, string State, long Count)>> ArrayProgressAsync(CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            with p as (
                select id, coalesce(name, image) as name from batchrunner.jobs
                 where array_size is not null and (finished_at is null or finished_at > now() - interval '15 minutes')
                 order by created_at desc limit 100)
            select p.id, p.name, c.state, count(*) from p join batchrunner.jobs c on c.parent_id = p.id group by p.id, p.name, c.state
            """);
        cmd.CommandTimeout = 5;
        var result = new List<(Guid, string, string, long)>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) result.Add((rd.GetGuid(0), rd.GetString(1), rd.GetString(2), rd.GetInt64(3)));
        return result;
    }
}

/// <summary>What one job (an array's child, or a plain job) left in /outputs, and the node that holds the files.</summary>
public sealed record ProducedOutputs(Guid JobId, int? ArrayIndex, string? Node, IReadOnlyList<OutputFile> Outputs);
