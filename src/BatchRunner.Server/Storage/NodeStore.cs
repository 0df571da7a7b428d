using System.Text.Json;
using BatchRunner.Core;
using Npgsql;
using NpgsqlTypes;

namespace BatchRunner.Server.Storage;

/// <summary>
/// Node records in batchrunner.nodes. Liveness is judged by the database's clock: a node is alive
/// while its heartbeat is younger than its lease, so no two machines' clocks need to agree. The lease
/// counts from the later of the heartbeat and the moment the database last began to accept connections
/// (<see cref="DatabaseUpSince"/>): after a database restart (an outage no node could heartbeat through)
/// every node has a full lease to heartbeat again before it is dead, however long the crash recovery took.
/// </summary>
public sealed class NodeStore(NpgsqlDataSource db)
{
    private static readonly JsonSerializerOptions Json = JobStore.Json;

    /// <summary>
    /// When the database last began to accept connections. The postmaster's start is not that moment: crash recovery
    /// (WAL replay and its checkpoint) runs between the two, and took longer than a one-second heartbeat's lease on a
    /// loaded machine, so every node looked dead to the first requests after a restart. The WAL writer is started when
    /// recovery has ended, just before connections are accepted; its start is read where the role may see it (a
    /// superuser or pg_read_all_stats; otherwise null, and the postmaster's start remains).
    /// </summary>
    public const string DatabaseUpSince =
        "greatest(pg_postmaster_start_time(), (select a.backend_start from pg_stat_get_activity(null) a where a.backend_type = 'walwriter'))";

    /// <summary>A live node <c>n</c>. The restart's part is a subquery PostgreSQL runs at most once per statement, and only
    /// for a node whose own heartbeat is older than its lease.</summary>
    public const string AliveCondition =
        "n.stopped_at is null and (n.heartbeat_at > now() - make_interval(secs => n.lease_seconds) or " + RestartedWithinLease + ")";

    /// <summary>The database began to accept connections less than node <c>n</c>'s lease ago.</summary>
    private const string RestartedWithinLease = DatabaseUpSince + " > now() - make_interval(secs => n.lease_seconds)";

    public async Task RegisterAsync(string name, Guid instance, IReadOnlyDictionary<string, string> labels, NodeCapacity capacity,
        IReadOnlyList<string> queues, TimeSpan lease, CancellationToken ct, NodePolicy? policy = null)
    {
        await using var cmd = db.CreateCommand("""
            insert into batchrunner.nodes (name, instance_id, labels, capacity, queues, started_at, heartbeat_at, lease_seconds, stopped_at, policy)
            values (@n, @i, @l, @c, @q, now(), now(), @lease, null, @p)
            on conflict (name) do update set instance_id = excluded.instance_id, labels = excluded.labels,
                capacity = excluded.capacity, queues = excluded.queues, started_at = now(), heartbeat_at = now(),
                lease_seconds = excluded.lease_seconds, stopped_at = null, policy = excluded.policy
            """);
        cmd.Parameters.Add(new NpgsqlParameter("p", NpgsqlDbType.Jsonb) { Value = policy is null ? DBNull.Value : JsonSerializer.Serialize(policy, Json) });
        cmd.Parameters.AddWithValue("n", name);
        cmd.Parameters.AddWithValue("i", instance);
        cmd.Parameters.Add(new NpgsqlParameter("l", NpgsqlDbType.Jsonb) { Value = JsonSerializer.Serialize(labels, Json) });
        cmd.Parameters.Add(new NpgsqlParameter("c", NpgsqlDbType.Jsonb) { Value = JsonSerializer.Serialize(capacity, Json) });
        cmd.Parameters.AddWithValue("q", queues.ToArray());
        cmd.Parameters.AddWithValue("lease", (int)Math.Ceiling(lease.TotalSeconds));
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>Renews the node's lease and records where it answers HTTP (<paramref name="apiUrl"/>; null: unchanged) and
    /// its data directory (<paramref name="disk"/>; null: unchanged). False when another instance has taken over this
    /// node name (this process must stop working).</summary>
    /// <remarks>A database restart leaves the pool's idle connections dead (Npgsql does not clear its pool then), and the
    /// first statement on one fails although the database answers. Heartbeats are what a node's fencing counts, so such a
    /// failure clears the pool and the heartbeat is tried once more at once, on a new connection.</remarks>
    public async Task<bool> HeartbeatAsync(string name, Guid instance, CancellationToken ct, string? apiUrl = null, NodeDiskRecord? disk = null)
    {
        try { return await BeatAsync(name, instance, apiUrl, disk, ct); }
        catch (Exception e) when (DatabaseErrors.IsOutage(e) && !ct.IsCancellationRequested)
        {
            db.Clear();
            return await BeatAsync(name, instance, apiUrl, disk, ct);
        }
    }

    private async Task<bool> BeatAsync(string name, Guid instance, string? apiUrl, NodeDiskRecord? disk, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.nodes set heartbeat_at = now(), api_url = coalesce(@u, api_url), disk = coalesce(@d, disk)
             where name = @n and instance_id = @i
            """);
        cmd.Parameters.AddWithValue("n", name);
        cmd.Parameters.AddWithValue("i", instance);
        cmd.Parameters.Add(new NpgsqlParameter("u", NpgsqlDbType.Text) { Value = (object?)apiUrl ?? DBNull.Value });
        cmd.Parameters.Add(new NpgsqlParameter("d", NpgsqlDbType.Jsonb) { Value = disk is null ? DBNull.Value : JsonSerializer.Serialize(disk, Json) });
        return await cmd.ExecuteNonQueryAsync(ct) == 1;
    }

    /// <summary>The node's HTTP address and whether its lease is current; null when no such node is recorded.</summary>
    public async Task<(string? ApiUrl, bool Alive)?> GetApiUrlAsync(string name, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand($"select n.api_url, {AliveCondition} from batchrunner.nodes n where n.name = @n");
        cmd.Parameters.AddWithValue("n", name);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        if (!await r.ReadAsync(ct)) return null;
        return (r.IsDBNull(0) ? null : r.GetString(0), r.GetBoolean(1));
    }

    /// <summary>The cluster setting <paramref name="name"/>, set to <paramref name="proposed"/> by whichever node asks first.</summary>
    public async Task<string> GetOrAddSettingAsync(string name, string proposed, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            with added as (
                insert into batchrunner.cluster_settings (name, value) values (@n, @v) on conflict (name) do nothing returning value)
            select value from added union all select value from batchrunner.cluster_settings where name = @n limit 1
            """);
        cmd.Parameters.AddWithValue("n", name);
        cmd.Parameters.AddWithValue("v", proposed);
        return (string)(await cmd.ExecuteScalarAsync(ct))!;
    }

    public async Task MarkStoppedAsync(string name, Guid instance, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("update batchrunner.nodes set stopped_at = now() where name = @n and instance_id = @i");
        cmd.Parameters.AddWithValue("n", name);
        cmd.Parameters.AddWithValue("i", instance);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>How long past its lease a node that did not stop still counts for <see cref="ListLiveAsync"/>.</summary>
    public static readonly TimeSpan SubmissionGrace = TimeSpan.FromSeconds(60);

    /// <summary>
    /// A node <c>n</c> that submissions are checked against: not stopped, and its heartbeat less than its lease plus
    /// <see cref="SubmissionGrace"/> ago (or the database's restart less than its lease ago, as for <see cref="AliveCondition"/>). A node whose heartbeat is late, on a loaded machine or while
    /// the database comes back, is not a reason to refuse a job: with a 1 s heartbeat, a node's beat was once held up for
    /// 7.5 s right after a restart of its embedded database, and every submission meanwhile was refused "no live worker
    /// node". Lost attempts are still judged by the lease alone (<see cref="AliveCondition"/>).
    /// </summary>
    private const string SubmittableCondition =
        "n.stopped_at is null and (n.heartbeat_at > now() - make_interval(secs => n.lease_seconds + @grace) or " + RestartedWithinLease + ")";

    /// <summary>Name, labels, capacity and policy of every node a job could be run on soon (<see cref="SubmittableCondition"/>):
    /// what submission checks a job against.</summary>
    public async Task<IReadOnlyList<LiveNode>> ListLiveAsync(CancellationToken ct)
    {
        await using var cmd = db.CreateCommand($"select n.name, n.labels, n.capacity, n.policy from batchrunner.nodes n where {SubmittableCondition}");
        cmd.Parameters.AddWithValue("grace", (int)SubmissionGrace.TotalSeconds);
        var list = new List<LiveNode>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct))
            list.Add(new LiveNode(rd.GetString(0),
                JsonSerializer.Deserialize<Dictionary<string, string>>(rd.GetString(1), Json)!,
                JsonSerializer.Deserialize<NodeCapacity>(rd.GetString(2), Json)!)
            {
                Policy = rd.IsDBNull(3) ? null : JsonSerializer.Deserialize<NodePolicy>(rd.GetString(3), Json),
            });
        return list;
    }

    /// <summary>Node records with their allocation (what all their starting and running jobs requested) and running
    /// jobs: all of them, or (<paramref name="tenant"/>) only that tenant's.</summary>
    public async Task<IReadOnlyList<NodeInfo>> ListAsync(bool aliveOnly, CancellationToken ct, string? tenant = null)
    {
        await using var cmd = db.CreateCommand($"""
            select n.name, n.labels, n.capacity, n.queues, ({AliveCondition}) as alive, n.started_at, n.heartbeat_at,
                   coalesce(array_agg(j.id) filter (where j.id is not null and (@t::text is null or j.tenant = @t)), array[]::uuid[]) as jobs,
                   {JobStore.ResourceSums},
                   coalesce(sum(coalesce((j.spec->'resources'->>'diskBytes')::int8, 0)), 0)::int8 as disk_bytes,
                   n.disk,
                   n.policy
              from batchrunner.nodes n
              left join batchrunner.jobs j on j.node = n.name and j.node_instance = n.instance_id and j.state in ('starting', 'running')
             {(aliveOnly ? $"where {AliveCondition}" : "")}
             group by n.name
             order by n.name
            """);
        cmd.Parameters.Add(new NpgsqlParameter("t", NpgsqlTypes.NpgsqlDbType.Text) { Value = (object?)tenant ?? DBNull.Value });
        var result = new List<NodeInfo>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct))
        {
            result.Add(new NodeInfo(
                rd.GetString(0),
                JsonSerializer.Deserialize<Dictionary<string, string>>(rd.GetString(1), Json)!,
                JsonSerializer.Deserialize<NodeCapacity>(rd.GetString(2), Json)!,
                rd.GetFieldValue<string[]>(3),
                rd.GetBoolean(4),
                rd.GetFieldValue<DateTimeOffset>(5),
                rd.GetFieldValue<DateTimeOffset>(6),
                new NodeAllocation(rd.GetDouble(8), rd.GetInt64(9), (int)rd.GetInt64(10), rd.GetInt64(11)),
                rd.GetFieldValue<Guid[]>(7),
                rd.IsDBNull(12) ? null : JsonSerializer.Deserialize<NodeDiskRecord>(rd.GetString(12), Json))
            {
                Policy = rd.IsDBNull(13) ? null : JsonSerializer.Deserialize<NodePolicy>(rd.GetString(13), Json),
            });
        }
        return result;
    }

    public sealed record LostAttempt(Guid JobId, int Attempt, string? HangfireJobId, string Node, JobSpec Spec);

    /// <summary>
    /// Closes, as node_lost, the attempts whose node instance is no longer alive and returns them. Safe
    /// to run on every node at once: each attempt is closed (and returned) by exactly one caller.
    /// </summary>
    public async Task<IReadOnlyList<LostAttempt>> ReapLostAttemptsAsync(CancellationToken ct)
    {
        await using var cmd = db.CreateCommand($"""
            with lost as (
                -- A job with no node has no attempt to lose: an array's parent is running while its children run.
                select j.id from batchrunner.jobs j
                 where j.state in ('starting', 'running') and j.node is not null
                   and not exists (select 1 from batchrunner.nodes n
                                    where n.name = j.node and n.instance_id is not distinct from j.node_instance and {AliveCondition})
                 for update skip locked)
            update batchrunner.jobs j set state = 'queued', message = 'node ' || j.node || ' was lost during attempt ' || j.attempt
              from lost where j.id = lost.id
            returning j.id, j.attempt, j.hangfire_job_id, j.node, j.spec
            """);
        var lost = new List<LostAttempt>();
        await using (var rd = await cmd.ExecuteReaderAsync(ct))
            while (await rd.ReadAsync(ct))
                lost.Add(new LostAttempt(rd.GetGuid(0), rd.GetInt32(1), rd.IsDBNull(2) ? null : rd.GetString(2), rd.GetString(3),
                    JsonSerializer.Deserialize<JobSpec>(rd.GetString(4), Json)!));
        foreach (var l in lost)
        {
            await using var close = db.CreateCommand("""
                update batchrunner.attempts set state = 'failed', reason = 'node_lost', finished_at = now(),
                       message = 'node ' || node || ' stopped heartbeating'
                 where job_id = @id and attempt = @a and finished_at is null
                """);
            close.Parameters.AddWithValue("id", l.JobId);
            close.Parameters.AddWithValue("a", l.Attempt);
            await close.ExecuteNonQueryAsync(ct);
        }
        return lost;
    }

    /// <summary>A job without its Hangfire message: what to create it as (in its tenant's Hangfire queue).</summary>
    public sealed record StrandedJob(Guid Id, string Queue, string DisplayName, string State, bool IsArrayParent, string Tenant);

    /// <summary>
    /// Jobs accepted by the API (or given a slot of their array) whose Hangfire message was never created: the process
    /// died in between. An array's undispatched children have no message on purpose (the dispatcher gives them one within
    /// the array's parallelism) and are not stranded.
    /// </summary>
    public async Task<IReadOnlyList<StrandedJob>> StrandedJobsAsync(TimeSpan olderThan, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            select id, queue, coalesce(name, image) || coalesce(' [' || array_index || ']', ''), state, array_size is not null, tenant
              from batchrunner.jobs
             where state in ('queued', 'waiting') and hangfire_job_id is null and dispatched_at < now() - @age
             limit 100
            """);
        cmd.Parameters.AddWithValue("age", olderThan);
        var result = new List<StrandedJob>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) result.Add(new StrandedJob(rd.GetGuid(0), rd.GetString(1), rd.GetString(2), rd.GetString(3), rd.GetBoolean(4), rd.GetString(5)));
        return result;
    }
}
