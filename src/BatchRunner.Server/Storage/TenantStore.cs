using Npgsql;
using NpgsqlTypes;

namespace BatchRunner.Server.Storage;

/// <summary>A tenant's limits (null: none) and its fair-share weight.</summary>
public sealed record TenantQuota(int? MaxQueuedJobs, double? MaxRunningCpus, long? MaxRunningMemoryBytes, int? MaxRunningGpus, double Weight)
{
    public const double DefaultWeight = 1;

    public static readonly TenantQuota None = new(null, null, null, null, DefaultWeight);
}

/// <summary>What a tenant holds now: its queued jobs, and the resources its starting and running jobs asked for, cluster-wide.</summary>
public sealed record TenantUsage(long QueuedJobs, long RunningJobs, double RunningCpus, long RunningMemoryBytes, int RunningGpus);

public sealed record TenantRecord(string Name, DateTimeOffset CreatedAt, TenantQuota Quota, TenantUsage Usage);

/// <summary>
/// Tenants in batchrunner.tenants: their quotas and weights, and what they use now. A tenant is created by its first
/// API key or by setting its quota. The checks that enforce the quotas run in the transactions that submit and begin
/// jobs (<see cref="JobStore.InsertAsync"/>, <see cref="JobStore.BeginAttemptAsync"/>), so that they cannot be raced.
/// </summary>
public sealed class TenantStore(NpgsqlDataSource db)
{
    /// <summary>States counted against maxQueuedJobs: accepted and not yet started. (The workflows' waiting state
    /// counts too once it exists: a job held for its dependencies is still queued work.)</summary>
    internal const string QueuedStates = "('queued', 'waiting')";

    /// <summary>States whose resources count as the tenant's running share (maxRunning, fair share).</summary>
    internal const string RunningStates = "('starting', 'running')";

    /// <summary>With <see cref="RunningStates"/>: a job that holds resources. An array's parent is <c>running</c> while its
    /// children run, but runs no container itself: its children's resources are counted, not its own.</summary>
    internal const string RunsContainer = "j.array_size is null";

    private const string Select = $"""
        select t.name, t.created_at, t.max_queued_jobs, t.max_running_cpus, t.max_running_memory_bytes, t.max_running_gpus, t.weight,
               (select count(*) from batchrunner.jobs j where j.tenant = t.name and j.state in {QueuedStates}),
               r.jobs, r.cpus, r.mem, r.gpus
          from batchrunner.tenants t
          cross join lateral (select count(*) as jobs, {JobStore.ResourceSums} from batchrunner.jobs j
                               where j.tenant = t.name and j.state in {RunningStates} and {RunsContainer}) as r(jobs, cpus, mem, gpus)
        """;

    /// <summary>Sets the tenant's quota and weight (all of them: an omitted limit is no limit), creating the tenant if needed.</summary>
    public async Task<TenantRecord> PutAsync(string name, TenantQuota quota, CancellationToken ct)
    {
        await using (var cmd = db.CreateCommand("""
            insert into batchrunner.tenants (name, max_queued_jobs, max_running_cpus, max_running_memory_bytes, max_running_gpus, weight)
            values (@n, @q, @c, @m, @g, @w)
            on conflict (name) do update set max_queued_jobs = excluded.max_queued_jobs, max_running_cpus = excluded.max_running_cpus,
                max_running_memory_bytes = excluded.max_running_memory_bytes, max_running_gpus = excluded.max_running_gpus, weight = excluded.weight
            """))
        {
            cmd.Parameters.AddWithValue("n", name);
            cmd.Parameters.Add(new NpgsqlParameter("q", NpgsqlDbType.Integer) { Value = (object?)quota.MaxQueuedJobs ?? DBNull.Value });
            cmd.Parameters.Add(new NpgsqlParameter("c", NpgsqlDbType.Double) { Value = (object?)quota.MaxRunningCpus ?? DBNull.Value });
            cmd.Parameters.Add(new NpgsqlParameter("m", NpgsqlDbType.Bigint) { Value = (object?)quota.MaxRunningMemoryBytes ?? DBNull.Value });
            cmd.Parameters.Add(new NpgsqlParameter("g", NpgsqlDbType.Integer) { Value = (object?)quota.MaxRunningGpus ?? DBNull.Value });
            cmd.Parameters.AddWithValue("w", quota.Weight);
            await cmd.ExecuteNonQueryAsync(ct);
        }
        return (await ListAsync(name, ct)).Single();
    }

    /// <summary>Every tenant by name, or (<paramref name="name"/>) that one; with quotas and usage.</summary>
    public async Task<IReadOnlyList<TenantRecord>> ListAsync(string? name, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand($"{Select} where @n::text is null or t.name = @n order by t.name");
        cmd.Parameters.Add(new NpgsqlParameter("n", NpgsqlDbType.Text) { Value = (object?)name ?? DBNull.Value });
        return await ReadAsync(cmd, ct);
    }

    /// <summary>What <see cref="ListSharesAsync"/> runs: <c>@x</c> the jobs not counted. They are left out with
    /// <c>array_position</c>, whose cost PostgreSQL does not estimate from the array's length: with <c>&lt;&gt; all(@x)</c> the
    /// generic plan was costed for ten elements, and with many running jobs PostgreSQL planned the statement afresh at every
    /// fetch (<c>FairShareSumsFacts</c>).</summary>
    internal const string SharesSql = $"""
        select t.name, t.created_at, t.max_queued_jobs, t.max_running_cpus, t.max_running_memory_bytes, t.max_running_gpus, t.weight,
               0::int8, r.jobs, r.cpus, r.mem, r.gpus
          from batchrunner.tenants t
          cross join lateral (select count(*) as jobs, {JobStore.ResourceSums} from batchrunner.jobs j
                               where j.tenant = t.name and j.state in {RunningStates} and {RunsContainer}
                                 and array_position(@x, j.id) is null
                                 and (select count(*) from batchrunner.tenants) > 1) as r(jobs, cpus, mem, gpus)
         order by t.name
        """;

    /// <summary>
    /// Every tenant with its quota, weight and running sums, for fair share: without its queued count (0 here, not read),
    /// and without the jobs in <paramref name="notCounted"/> (fetched and not yet begun: the caller counts them itself).
    /// When there is only one tenant there is nothing to rank, and its sums are zeros, not read: they cost a scan of its
    /// starting and running jobs at every fetch (0.5 ms of PostgreSQL's execution time per fetch in the 300-job benchmark,
    /// the most expensive statement of a trivial job's).
    /// </summary>
    public async Task<IReadOnlyList<TenantRecord>> ListSharesAsync(IReadOnlyCollection<Guid> notCounted, CancellationToken ct)
    {
        // On a connection of its own rather than the data source's command: in the 500-job benchmark PostgreSQL planned the
        // statement at 60 % of the fetches that way, and at 27 % on an opened connection.
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var cmd = new NpgsqlCommand(SharesSql, conn);
        cmd.Parameters.AddWithValue("x", notCounted.ToArray());
        return await ReadAsync(cmd, ct);
    }

    private static async Task<IReadOnlyList<TenantRecord>> ReadAsync(NpgsqlCommand cmd, CancellationToken ct)
    {
        var tenants = new List<TenantRecord>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct))
            tenants.Add(new TenantRecord(rd.GetString(0), rd.GetFieldValue<DateTimeOffset>(1),
                new TenantQuota(NullableInt(rd, 2), rd.IsDBNull(3) ? null : rd.GetDouble(3), rd.IsDBNull(4) ? null : rd.GetInt64(4), NullableInt(rd, 5), rd.GetDouble(6)),
                new TenantUsage(rd.GetInt64(7), rd.GetInt64(8), rd.GetDouble(9), rd.GetInt64(10), (int)rd.GetInt64(11))));
        return tenants;
    }

    private static int? NullableInt(NpgsqlDataReader rd, int i) => rd.IsDBNull(i) ? null : rd.GetInt32(i);
}
