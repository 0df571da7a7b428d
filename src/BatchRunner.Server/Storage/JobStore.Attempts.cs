using System.Text.Json;
using Npgsql;
using NpgsqlTypes;

namespace BatchRunner.Server.Storage;

// Attempts: every write is fenced by the attempt number (and by the job not being final), so a late
// write from an attempt that was given up changes nothing.
public sealed partial class JobStore
{
    /// <summary>
    /// The job as an attempt reads it: its row alone, in one statement, without the lists of its inputs and outputs
    /// (<see cref="JobRecord.Inputs"/> and <see cref="JobRecord.Outputs"/> are empty): an attempt stages its inputs from
    /// the inputs tar the row names and lists its outputs itself. It is read while this process holds its fetch turn,
    /// so each statement saved here is a round trip off every job's start (and off the jobs/s one process can admit).
    /// </summary>
    public async Task<JobRecord?> GetForAttemptAsync(Guid id, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand($"select {ForAttemptColumns} from {From} where j.id = @id");
        cmd.Parameters.AddWithValue("id", id);
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        return await rd.ReadAsync(ct) ? ReadForAttempt(rd) : null;
    }

    /// <summary>
    /// What <see cref="GetForAttemptAsync"/> reads of job <c>j</c> (left joined to its notification <c>n</c>,
    /// <see cref="NotificationJoin"/>), for a statement that reads it with other things (the worker's fetch,
    /// <see cref="FairShareQueueProvider"/>): the first <see cref="ForAttemptFieldCount"/> fields, for <see cref="ReadForAttempt"/>.
    /// </summary>
    /// <remarks>Whether it has secrets at all: a job without (most) skips their read before its container starts.</remarks>
    internal const string ForAttemptColumns = Columns + ", j.secrets is not null";

    internal const int ForAttemptFieldCount = AfterColumns + 1;

    internal const string NotificationJoin = "left join batchrunner.notifications n on n.job_id = j.id";

    /// <summary>The job a row of <see cref="ForAttemptColumns"/> holds (its first field null: none).</summary>
    internal static JobRecord? ReadForAttempt(NpgsqlDataReader rd) =>
        rd.IsDBNull(0) ? null : Read(rd) with { HasSecrets = rd.GetBoolean(AfterColumns) };

    /// <summary>
    /// Starts a new attempt on this node instance: the job goes to <c>starting</c> and its attempt number
    /// is bumped. Allowed only when the job is queued, or when the instance running its current attempt
    /// is no longer alive (that attempt is closed as node_lost) — so two attempts never run at once.
    /// With a queue limit, also only while fewer than that many jobs of the queue start or run.
    /// </summary>
    /// <remarks>
    /// A job of a queue without a limit whose tenant has no maxRunning limit, most of them, begins in one statement (one
    /// round trip, committed on its own): <see cref="BeginSql"/> with the condition that its tenant has no limits, read in
    /// the same snapshot as the rest. When it has, nothing changed and the begin takes the serialised path: a transaction
    /// in which the tenant's lock is held while its running sums are counted, then the same statement without that
    /// condition.
    /// </remarks>
    public async Task<AttemptStart> BeginAttemptAsync(Guid id, string node, Guid instance, string queue, int? queueLimit, CancellationToken ct)
    {
        if (queueLimit is null)
        {
            await using var conn = await db.OpenConnectionAsync(ct);
            var (start, limited) = await BeginAsync(conn, null, id, node, instance, onlyIfTenantUnlimited: true, ct);
            if (!limited) return start;
        }
        return await BeginSerialisedAsync(id, node, instance, queue, queueLimit, ct);
    }

    private async Task<AttemptStart> BeginSerialisedAsync(Guid id, string node, Guid instance, string queue, int? queueLimit, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        if (queueLimit is { } limit)
        {
            // Serialises admissions per queue so the count below cannot be raced past the limit.
            await using var lk = new NpgsqlCommand("select pg_advisory_xact_lock(hashtext('batchrunner.queue:' || @q))", conn, tx);
            lk.Parameters.AddWithValue("q", queue);
            await lk.ExecuteNonQueryAsync(ct);
            await using var count = new NpgsqlCommand(
                // An array's parent runs no container (its children are counted): not a running job of the queue.
                "select count(*) from batchrunner.jobs where queue = @q and state in ('starting', 'running') and array_size is null and id <> @id", conn, tx);
            count.Parameters.AddWithValue("q", queue);
            count.Parameters.AddWithValue("id", id);
            if ((long)(await count.ExecuteScalarAsync(ct))! >= limit) return new AttemptStart.QueueFull(limit);
        }
        if (await TenantQuotaFullAsync(conn, tx, id, ct) is { } full) return full;
        var (start, _) = await BeginAsync(conn, tx, id, node, instance, onlyIfTenantUnlimited: false, ct);
        await tx.CommitAsync(ct);
        return start;
    }

    /// <summary>Runs <see cref="BeginSql"/>. Limited: <paramref name="onlyIfTenantUnlimited"/> and the job's tenant has a
    /// maxRunning limit, so nothing changed.</summary>
    private static async Task<(AttemptStart Start, bool Limited)> BeginAsync(NpgsqlConnection conn, NpgsqlTransaction? tx, Guid id, string node, Guid instance,
        bool onlyIfTenantUnlimited, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand(BeginSql, conn, tx);
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("node", node);
        cmd.Parameters.AddWithValue("inst", instance);
        cmd.Parameters.AddWithValue("unlimited", onlyIfTenantUnlimited);
        cmd.Parameters.AddWithValue("own", $"node {node} stopped this attempt while it could not reach the database (fenced)");
        cmd.Parameters.AddWithValue("lost", "the node running this attempt stopped reporting");
        await using var r = await cmd.ExecuteReaderAsync(ct);
        await r.ReadAsync(ct);
        if (r.IsDBNull(0)) return (new AttemptStart.NothingToRun(), r.GetBoolean(2));
        return (new AttemptStart.Started(r.GetInt32(0), (int)r.GetInt64(1)), false);
    }

    /// <summary>
    /// The begin in one statement (one row: the new attempt number or null, the job's lost attempts, and whether the
    /// condition on the tenant held it back). A started attempt is taken over when its node instance is dead, or when it
    /// is the caller's own instance: the caller runs no attempt of this job (JobExecutor admits one delivery per job at a
    /// time), so that attempt was abandoned, e.g. stopped while this node was fenced. Only when the job's row moved: the
    /// previous attempt is closed as node_lost and the new one recorded; the lost attempts are those closed so before
    /// and now (the spec's retry budget for node losses).
    /// </summary>
    private static readonly string BeginSql = $"""
        with prev as (select node_instance from batchrunner.jobs where id = @id for update),
        j as (
            update batchrunner.jobs j set attempt = attempt + 1, state = 'starting', node = @node, node_instance = @inst,
                   reason = null, message = null, exit_code = null, pull_progress = null, not_before = null
              from prev
             where j.id = @id and not j.cancel_requested
               and (j.state = 'queued'
                    or (j.state in ('starting', 'running')
                        and (j.node_instance = @inst
                             or not exists (select 1 from batchrunner.nodes n
                                             where n.name = j.node and n.instance_id is not distinct from j.node_instance
                                               and {NodeStore.AliveCondition}))))
               and not (@unlimited and exists (select 1 from batchrunner.tenants t where t.name = j.tenant and {TenantLimited}))
            returning j.attempt, prev.node_instance is not distinct from @inst as own),
        closed as (
            update batchrunner.attempts set state = 'failed', reason = 'node_lost', finished_at = now(),
                   message = case when (select own from j) then @own else @lost end
             where job_id = @id and finished_at is null and exists (select 1 from j)
            returning 1),
        added as (
            insert into batchrunner.attempts (job_id, attempt, node, state, started_at)
            select @id, attempt, @node, 'starting', now() from j)
        select (select attempt from j),
               (select count(*) from batchrunner.attempts where job_id = @id and reason = 'node_lost' and finished_at is not null)
                 + (select count(*) from closed),
               @unlimited and exists (select 1 from batchrunner.jobs b join batchrunner.tenants t on t.name = b.tenant
                                       where b.id = @id and {TenantLimited})
        """;

    /// <summary>The tenant <c>t</c> has a maxRunning limit.</summary>
    private const string TenantLimited = "(t.max_running_cpus is not null or t.max_running_memory_bytes is not null or t.max_running_gpus is not null)";

    /// <summary>
    /// Whether starting job <paramref name="id"/> would take its tenant past a maxRunning limit, counting the requests of
    /// the tenant's starting and running jobs cluster-wide. Tenants without limits cost one lookup; with limits, admissions
    /// of the tenant are serialised (a lock held until the caller's transaction ends) and counted in a statement of their
    /// own, after the lock, so that two nodes never both take the last CPUs of a quota.
    /// </summary>
    private static async Task<AttemptStart.TenantQuotaFull?> TenantQuotaFullAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid id, CancellationToken ct)
    {
        string tenant;
        double?[] limits;
        double[] request;
        await using (var cmd = new NpgsqlCommand($"""
            select j.tenant, t.max_running_cpus, t.max_running_memory_bytes::float8, t.max_running_gpus::float8,
                   (j.spec->'resources'->>'cpus')::float8, (j.spec->'resources'->>'memoryBytes')::float8,
                   coalesce((j.spec->'resources'->>'gpus')::float8, 0)
              from batchrunner.jobs j join batchrunner.tenants t on t.name = j.tenant
             where j.id = @id and {TenantLimited}
            """, conn, tx))
        {
            cmd.Parameters.AddWithValue("id", id);
            await using var rd = await cmd.ExecuteReaderAsync(ct);
            if (!await rd.ReadAsync(ct)) return null;
            tenant = rd.GetString(0);
            limits = [.. Enumerable.Range(1, 3).Select(i => rd.IsDBNull(i) ? (double?)null : rd.GetDouble(i))];
            request = [.. Enumerable.Range(4, 3).Select(rd.GetDouble)];
        }
        await using (var lk = new NpgsqlCommand("select pg_advisory_xact_lock(hashtext('batchrunner.tenant-running:' || @t))", conn, tx))
        {
            lk.Parameters.AddWithValue("t", tenant);
            await lk.ExecuteNonQueryAsync(ct);
        }
        await using var sum = new NpgsqlCommand(
            $"select {ResourceSums} from batchrunner.jobs j where j.tenant = @t and j.state in {TenantStore.RunningStates} and {TenantStore.RunsContainer} and j.id <> @id", conn, tx);
        sum.Parameters.AddWithValue("t", tenant);
        sum.Parameters.AddWithValue("id", id);
        await using var r = await sum.ExecuteReaderAsync(ct);
        await r.ReadAsync(ct);
        double[] used = [r.GetDouble(0), r.GetInt64(1), r.GetInt64(2)];
        string[] names = ["cpus", "memoryBytes", "gpus"];
        for (var i = 0; i < 3; i++)
            if (limits[i] is { } limit && used[i] + request[i] > limit + 1e-9)
                return new AttemptStart.TenantQuotaFull(tenant, names[i], used[i], limit);
        return null;
    }

    /// <summary>Says why a queued job waits (<paramref name="message"/>, in words). Writes only while the job is still
    /// queued and only when the message changed, so that a job bounced again and again for the same reason costs no write.</summary>
    public async Task SetWaitReasonAsync(Guid id, string message, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.jobs set message = @m where id = @id and state = 'queued' and message is distinct from @m
            """);
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("m", message);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>
    /// The attempt failed and will be tried again after <paramref name="delay"/>: the attempt keeps its
    /// outcome, the job goes back to queued with a message saying when and why.
    /// </summary>
    public async Task<bool> RetryLaterAsync(Guid id, int attempt, JobOutcome o, TimeSpan delay, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        await using (var cmd = new NpgsqlCommand("""
            update batchrunner.jobs set state = 'queued', message = @msg, not_before = now() + @delay, usage = @u, pull_progress = null
             where id = @id and attempt = @a and state in ('starting', 'running')
            """, conn, tx))
        {
            AddOutcome(cmd, id, attempt, o);
            cmd.Parameters.AddWithValue("msg", $"attempt {attempt} failed ({o.Reason}: {o.Message}); retrying in {delay.TotalSeconds:0.#}s");
            cmd.Parameters.AddWithValue("delay", delay);
            if (await cmd.ExecuteNonQueryAsync(ct) == 0) return false;
        }
        await CloseAttemptAsync(conn, tx, id, attempt, o, ct);
        await tx.CommitAsync(ct);
        return true;
    }

    /// <summary>A job whose node was lost and that has no retries left ends failed / node_lost.</summary>
    public async Task<bool> FailLostAsync(Guid id, int attempt, string message, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.jobs set state = 'failed', reason = 'node_lost', message = @m, finished_at = now(), pull_progress = null
             where id = @id and attempt = @a and state in ('queued', 'starting', 'running')
            """);
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("a", attempt);
        cmd.Parameters.AddWithValue("m", message);
        if (await cmd.ExecuteNonQueryAsync(ct) != 1) return false;
        signal?.Pulse();
        return true;
    }

    public sealed record AttemptRecord(int Attempt, string Node, string State, string? Reason, string? Message, int? ExitCode,
        DateTimeOffset StartedAt, DateTimeOffset? FinishedAt);

    /// <summary>A job's attempts in order (<c>@id</c>); rows read by <see cref="ReadAttempt"/>.</summary>
    internal const string AttemptsSql = """
        select attempt, node, state, reason, message, exit_code, started_at, finished_at
          from batchrunner.attempts where job_id = @id order by attempt
        """;

    internal static AttemptRecord ReadAttempt(NpgsqlDataReader rd) =>
        new(rd.GetInt32(0), rd.GetString(1), rd.GetString(2), rd.IsDBNull(3) ? null : rd.GetString(3),
            rd.IsDBNull(4) ? null : rd.GetString(4), rd.IsDBNull(5) ? null : rd.GetInt32(5),
            rd.GetFieldValue<DateTimeOffset>(6), rd.IsDBNull(7) ? null : rd.GetFieldValue<DateTimeOffset>(7));

    public async Task<IReadOnlyList<AttemptRecord>> GetAttemptsAsync(Guid id, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand(AttemptsSql);
        cmd.Parameters.AddWithValue("id", id);
        var result = new List<AttemptRecord>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) result.Add(ReadAttempt(rd));
        return result;
    }

    public async Task SetPullProgressAsync(Guid id, int attempt, long done, long total, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.jobs set pull_progress = @p where id = @id and attempt = @a and state = 'starting'
            """);
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("a", attempt);
        cmd.Parameters.Add(new NpgsqlParameter("p", NpgsqlDbType.Jsonb) { Value = JsonSerializer.Serialize(new PullProgressRecord(done, total), Json) });
        await cmd.ExecuteNonQueryAsync(ct);
    }

    public async Task SetImageDigestAsync(Guid id, int attempt, string digest, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("update batchrunner.jobs set image_digest = @d where id = @id and attempt = @a");
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("a", attempt);
        cmd.Parameters.AddWithValue("d", digest);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>starting → running (and the job's array, if it was queued, with it), with the digest of the image it runs
    /// (written with this mark rather than in a statement of its own after the pull). False when the attempt was fenced
    /// off or the job cancelled meanwhile.</summary>
    public async Task<bool> MarkRunningAsync(Guid id, int attempt, DateTimeOffset startedAt, string? imageDigest, CancellationToken ct)
    {
        // Data-modifying CTEs all run, referenced or not; the attempt and the parent follow only when the job moved.
        await using var cmd = db.CreateCommand("""
            with j as (
                update batchrunner.jobs set state = 'running', started_at = @t, image_digest = coalesce(@d, image_digest)
                 where id = @id and attempt = @a and state = 'starting' returning parent_id),
            a as (
                update batchrunner.attempts set state = 'running', started_at = @t
                 where job_id = @id and attempt = @a and exists (select 1 from j)),
            p as (
                update batchrunner.jobs set state = 'running', started_at = coalesce(started_at, @t)
                 where id = (select parent_id from j) and state = 'queued')
            select count(*) from j
            """);
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("a", attempt);
        cmd.Parameters.AddWithValue("t", startedAt);
        cmd.Parameters.Add(new NpgsqlParameter("d", NpgsqlDbType.Text) { Value = (object?)imageDigest ?? DBNull.Value });
        return (long)(await cmd.ExecuteScalarAsync(ct))! == 1;
    }

    /// <summary>
    /// The usage of running attempts so far, in one statement. Fenced: only a job whose current attempt it is and that
    /// still runs takes it, so a sample read just before the job ended never replaces its final usage.
    /// </summary>
    public async Task PublishUsageAsync(IReadOnlyList<LiveUsageSample> samples, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.jobs j set usage = v.usage
              from unnest(@ids, @attempts, @usages) as v(id, attempt, usage)
             where j.id = v.id and j.attempt = v.attempt and j.state = 'running'
            """);
        cmd.Parameters.AddWithValue("ids", samples.Select(s => s.JobId).ToArray());
        cmd.Parameters.AddWithValue("attempts", samples.Select(s => s.Attempt).ToArray());
        cmd.Parameters.Add(new NpgsqlParameter("usages", NpgsqlDbType.Array | NpgsqlDbType.Jsonb)
        {
            Value = samples.Select(s => JsonSerializer.Serialize(s.Usage, Json)).ToArray(),
        });
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>The job's stdout or stderr went over its cap during <paramref name="attempt"/>. Fenced by attempt.</summary>
    public async Task MarkLogsTruncatedAsync(Guid id, int attempt, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("update batchrunner.jobs set logs_truncated = true where id = @id and attempt = @a and not logs_truncated");
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("a", attempt);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>
    /// Records the final outcome of an attempt (and its outputs) atomically. Fenced by attempt: the job's row takes the end
    /// only from its current attempt and while not final, and the attempt's row only when the job's did (one statement).
    /// A job without outputs, most of them, is recorded in that one round trip; outputs add theirs in one transaction with it.
    /// </summary>
    public async Task<bool> FinishAsync(Guid id, int attempt, JobOutcome o, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var tx = o.Outputs.Count > 0 ? await conn.BeginTransactionAsync(ct) : null;
        bool follows;
        await using (var cmd = new NpgsqlCommand($"""
            with j as (
                update batchrunner.jobs set state = @s, reason = @r, message = @m, exit_code = @e, usage = @u,
                       finished_at = now(), pull_progress = null
                 where id = @id and attempt = @a and state not in ('succeeded', 'failed', 'cancelled')
                returning parent_id, has_dependents),
            a as ({CloseAttemptSql} and exists (select 1 from j))
            select count(*), coalesce(bool_or(parent_id is not null or has_dependents), false) or exists (select 1 from batchrunner.notifications where job_id = @id)
              from j
            """, conn, tx))
        {
            AddOutcome(cmd, id, attempt, o);
            await using var r = await cmd.ExecuteReaderAsync(ct);
            await r.ReadAsync(ct);
            if (r.GetInt64(0) == 0) return false;
            follows = r.GetBoolean(1);
        }
        if (tx is not null)
        {
            await using (var delete = new NpgsqlCommand("delete from batchrunner.outputs where job_id = @id", conn, tx))
            {
                delete.Parameters.AddWithValue("id", id);
                await delete.ExecuteNonQueryAsync(ct);
            }
            await InsertFilesAsync(conn, tx, "outputs", id, o.Outputs, ct);
            await tx.CommitAsync(ct);
        }
        // What waits for this end is moved on at once: its array (the sweeper), its webhook (the sender), its dependents.
        // Dependents by the row's flag, as the update returned it: a dependent submitted meanwhile set it under the row's
        // lock, so it either committed before this update read the row (the flag is seen) or waited for this end's commit
        // (and its own submission's pass sees the end). A job that nothing waits for (most) wakes neither.
        if (follows) signal?.Pulse();
        return true;
    }

    /// <summary>Records <paramref name="o"/> on the attempt's row, in the caller's transaction.</summary>
    private static async Task CloseAttemptAsync(NpgsqlConnection conn, NpgsqlTransaction tx, Guid id, int attempt, JobOutcome o, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand(CloseAttemptSql, conn, tx);
        AddOutcome(cmd, id, attempt, o);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>An attempt's row takes its outcome (<see cref="AddOutcome"/>'s parameters); a final end adds its own condition.</summary>
    private const string CloseAttemptSql = """
        update batchrunner.attempts set state = @s, reason = @r, message = @m, exit_code = @e, finished_at = now()
         where job_id = @id and attempt = @a
        """;

    private static void AddOutcome(NpgsqlCommand cmd, Guid id, int attempt, JobOutcome o)
    {
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("a", attempt);
        cmd.Parameters.AddWithValue("s", o.State);
        cmd.Parameters.AddWithValue("r", (object?)o.Reason ?? DBNull.Value);
        cmd.Parameters.AddWithValue("m", (object?)o.Message ?? DBNull.Value);
        cmd.Parameters.AddWithValue("e", (object?)o.ExitCode ?? DBNull.Value);
        cmd.Parameters.Add(new NpgsqlParameter("u", NpgsqlDbType.Jsonb)
        {
            Value = o.Usage is null ? DBNull.Value : JsonSerializer.Serialize(o.Usage, Json),
        });
    }

    /// <summary>
    /// A worker is shutting down with this attempt unfinished: the job goes back to queued (Hangfire
    /// requeues its message) and the attempt is closed.
    /// </summary>
    public async Task RequeueAsync(Guid id, int attempt, string message, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.jobs set state = 'queued', pull_progress = null
             where id = @id and attempt = @a and state in ('starting', 'running');
            update batchrunner.attempts set state = 'failed', reason = 'requeued', message = @m, finished_at = now()
             where job_id = @id and attempt = @a and finished_at is null;
            """);
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("a", attempt);
        cmd.Parameters.AddWithValue("m", message);
        await cmd.ExecuteNonQueryAsync(ct);
    }
}
