using System.Text.Json;
using BatchRunner.Core;
using Npgsql;
using NpgsqlTypes;

namespace BatchRunner.Server.Storage;

/// <summary>What a schedule does when it fires while its previous run has not ended (the API's <c>concurrency</c>).</summary>
public static class ScheduleConcurrency
{
    /// <summary>Start the new run anyway.</summary>
    public const string Allow = "allow";
    /// <summary>Skip this run, and record the skip on the schedule.</summary>
    public const string Forbid = "forbid";
    /// <summary>Cancel the previous run, then start the new one.</summary>
    public const string Replace = "replace";
    public static readonly IReadOnlyList<string> All = [Allow, Forbid, Replace];
}

/// <summary>A schedule as stored in batchrunner.schedules, with the state of its last run.</summary>
public sealed record ScheduleRecord
{
    public required Guid Id { get; init; }
    public required string Name { get; init; }
    public required string Cron { get; init; }
    public required string TimeZone { get; init; }
    public required JobSpec Spec { get; init; }
    public required string Concurrency { get; init; }
    public bool Paused { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public required DateTimeOffset UpdatedAt { get; init; }
    public int Runs { get; init; }
    public DateTimeOffset? LastRunAt { get; init; }
    public Guid? LastJobId { get; init; }
    public string? LastJobState { get; init; }
    public int SkippedRuns { get; init; }
    public DateTimeOffset? LastSkippedAt { get; init; }
    public string? LastSkipMessage { get; init; }
    /// <summary>The tenant that owns the schedule (that of the key that created it): its runs are this tenant's jobs.</summary>
    public string Tenant { get; init; } = JobRecord.DefaultTenant;
    /// <summary>Id of the key that created it: each run records it as <c>submittedBy</c>.</summary>
    public string? CreatedBy { get; init; }
    /// <summary>The secrets of its job (secretEnv, notify.secret), encrypted as a job's are; copied to each run. Set for a
    /// write; read back only by <see cref="ScheduleStore.StartRunAsync"/>.</summary>
    public byte[]? ProtectedSecrets { get; init; }
}

/// <summary>What <see cref="ScheduleStore.StartRunAsync"/> did: a closed set.</summary>
public abstract record ScheduleRun
{
    private ScheduleRun() { }

    /// <summary>A new run was stored; <paramref name="Replaces"/>: the previous run, still going, that must be cancelled (replace).</summary>
    public sealed record Started(JobRecord Job, Guid? Replaces) : ScheduleRun;

    /// <summary>The Hangfire job delivering this run had already stored it (delivered again).</summary>
    public sealed record Existing(Guid JobId) : ScheduleRun;

    /// <summary>forbid: the previous run is still going; the skip is recorded on the schedule.</summary>
    public sealed record Skipped(Guid Previous, string Message) : ScheduleRun;

    /// <summary>The schedule was deleted, or (for a firing, not a manual trigger) paused meanwhile: nothing was stored.</summary>
    public sealed record NotRunnable(string Why) : ScheduleRun;
}

/// <summary>Schedules in batchrunner.schedules, and the start of each run (its concurrency rule decided under the
/// schedule's row lock, so that two firings at once, a cron tick and a manual trigger, cannot both pass a forbid).</summary>
public sealed class ScheduleStore(NpgsqlDataSource db, WorkflowSignal? signal = null)
{
    private static readonly JsonSerializerOptions Json = JobStore.Json;

    private const string Columns = """
        s.id, s.name, s.cron, s.time_zone, s.spec, s.concurrency, s.paused, s.created_at, s.updated_at, s.runs, s.last_run_at,
        s.last_job_id, j.state, s.skipped_runs, s.last_skipped_at, s.last_skip_message, s.tenant, s.created_by
        """;

    private const string From = "batchrunner.schedules s left join batchrunner.jobs j on j.id = s.last_job_id";

    public async Task InsertAsync(ScheduleRecord s, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            insert into batchrunner.schedules (id, name, cron, time_zone, spec, concurrency, paused, created_at, updated_at, tenant, created_by, secrets)
            values (@id, @name, @cron, @tz, @spec, @concurrency, @paused, @created, @created, @tenant, @by, @secrets)
            """);
        AddFields(cmd, s);
        cmd.Parameters.AddWithValue("created", s.CreatedAt);
        cmd.Parameters.AddWithValue("tenant", s.Tenant);
        cmd.Parameters.Add(new NpgsqlParameter("by", NpgsqlDbType.Text) { Value = (object?)s.CreatedBy ?? DBNull.Value });
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>The schedule; null when there is none, or it belongs to another tenant than <paramref name="tenant"/>
    /// (null: any tenant): the API answers both alike (404).</summary>
    public async Task<ScheduleRecord?> GetAsync(Guid id, string? tenant, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand($"select {Columns} from {From} where s.id = @id and (@t::text is null or s.tenant = @t)");
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.Add(new NpgsqlParameter("t", NpgsqlDbType.Text) { Value = (object?)tenant ?? DBNull.Value });
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        return await rd.ReadAsync(ct) ? Read(rd) : null;
    }

    /// <summary>The schedules of <paramref name="tenant"/> (null: every tenant's), newest first.</summary>
    public async Task<IReadOnlyList<ScheduleRecord>> ListAsync(string? tenant, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand($"select {Columns} from {From} where @t::text is null or s.tenant = @t order by s.created_at desc, s.id desc");
        cmd.Parameters.Add(new NpgsqlParameter("t", NpgsqlDbType.Text) { Value = (object?)tenant ?? DBNull.Value });
        var result = new List<ScheduleRecord>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) result.Add(Read(rd));
        return result;
    }

    /// <summary>Stores the changed fields of <paramref name="s"/> (all but the run counters, tenant and creator; its secrets
    /// only with a new job: <paramref name="newSecrets"/>); false when it no longer exists.</summary>
    public async Task<bool> UpdateAsync(ScheduleRecord s, bool newSecrets, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.schedules set name = @name, cron = @cron, time_zone = @tz, spec = @spec, concurrency = @concurrency,
                   paused = @paused, updated_at = now(), secrets = case when @new then @secrets else secrets end
             where id = @id
            """);
        AddFields(cmd, s);
        cmd.Parameters.AddWithValue("new", newSecrets);
        return await cmd.ExecuteNonQueryAsync(ct) == 1;
    }

    /// <summary>The fields a user sets (@id, @name, @cron, @tz, @spec, @concurrency, @paused, @secrets).</summary>
    private static void AddFields(NpgsqlCommand cmd, ScheduleRecord s)
    {
        cmd.Parameters.AddWithValue("id", s.Id);
        cmd.Parameters.AddWithValue("name", s.Name);
        cmd.Parameters.AddWithValue("cron", s.Cron);
        cmd.Parameters.AddWithValue("tz", s.TimeZone);
        cmd.Parameters.Add(new NpgsqlParameter("spec", NpgsqlDbType.Jsonb) { Value = JsonSerializer.Serialize(s.Spec, Json) });
        cmd.Parameters.AddWithValue("concurrency", s.Concurrency);
        cmd.Parameters.AddWithValue("paused", s.Paused);
        cmd.Parameters.Add(new NpgsqlParameter("secrets", NpgsqlDbType.Bytea) { Value = (object?)s.ProtectedSecrets ?? DBNull.Value });
    }

    /// <summary>Deletes the schedule if it is one of <paramref name="tenant"/> (null: any tenant).</summary>
    public async Task<bool> DeleteAsync(Guid id, string? tenant, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("delete from batchrunner.schedules where id = @id and (@t::text is null or tenant = @t)");
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.Add(new NpgsqlParameter("t", NpgsqlDbType.Text) { Value = (object?)tenant ?? DBNull.Value });
        return await cmd.ExecuteNonQueryAsync(ct) == 1;
    }

    /// <summary>
    /// Starts a run of schedule <paramref name="id"/>, deciding its concurrency rule under the schedule's row lock:
    /// forbid records a skip while the previous run has not ended; replace names it for the caller to cancel once the new
    /// run is stored. <paramref name="hangfireJobId"/>: the Hangfire job of a firing (null for a manual trigger), stored on
    /// the run; delivered again, it finds that run instead of starting another. <paramref name="make"/> builds the run
    /// from the schedule as locked; the run is the schedule's tenant's, submitted by the key that created the schedule,
    /// with the schedule's secrets.
    /// </summary>
    public async Task<ScheduleRun> StartRunAsync(Guid id, string? hangfireJobId, Func<ScheduleRecord, JobRecord> make, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        if (hangfireJobId is not null)
        {
            await using var existing = new NpgsqlCommand("select id from batchrunner.jobs where hangfire_job_id = @h and schedule_id = @s", conn, tx);
            existing.Parameters.AddWithValue("h", hangfireJobId);
            existing.Parameters.AddWithValue("s", id);
            if (await existing.ExecuteScalarAsync(ct) is Guid job) return new ScheduleRun.Existing(job);
        }
        // Locked first, read after in a statement of its own: it then sees the run a concurrent firing committed while
        // this one waited for the lock (one statement would read the previous run from before the wait).
        await using (var lk = new NpgsqlCommand("select 1 from batchrunner.schedules where id = @id for update", conn, tx))
        {
            lk.Parameters.AddWithValue("id", id);
            await lk.ExecuteScalarAsync(ct);
        }
        ScheduleRecord? s;
        await using (var read = new NpgsqlCommand($"select {Columns}, s.secrets from {From} where s.id = @id", conn, tx))
        {
            read.Parameters.AddWithValue("id", id);
            await using var rd = await read.ExecuteReaderAsync(ct);
            s = await rd.ReadAsync(ct) ? Read(rd) with { ProtectedSecrets = rd.IsDBNull(SecretsOrdinal) ? null : rd.GetFieldValue<byte[]>(SecretsOrdinal) } : null;
        }
        if (s is null) return new ScheduleRun.NotRunnable($"schedule {id} no longer exists");
        if (s.Paused && hangfireJobId is not null) return new ScheduleRun.NotRunnable($"schedule {s.Name} is paused");
        var previousGoing = s.LastJobId is not null && s.LastJobState is { } state && !JobState.IsFinal(state);
        if (previousGoing && s.Concurrency == ScheduleConcurrency.Forbid)
        {
            var message = $"run skipped at {DateTimeOffset.UtcNow:u}: the previous run {s.LastJobId} is still {s.LastJobState} (concurrency forbid)";
            await using var skip = new NpgsqlCommand("""
                update batchrunner.schedules set skipped_runs = skipped_runs + 1, last_skipped_at = now(), last_skip_message = @m where id = @id
                """, conn, tx);
            skip.Parameters.AddWithValue("id", id);
            skip.Parameters.AddWithValue("m", message);
            await skip.ExecuteNonQueryAsync(ct);
            await tx.CommitAsync(ct);
            return new ScheduleRun.Skipped(s.LastJobId!.Value, message);
        }
        var run = make(s) with
        {
            ScheduleId = id, HangfireJobId = hangfireJobId, Tenant = s.Tenant, SubmittedBy = s.CreatedBy, ProtectedSecrets = s.ProtectedSecrets,
        };
        await JobStore.InsertRowsAsync(conn, tx, run, ct);
        await using (var ran = new NpgsqlCommand("""
            update batchrunner.schedules set runs = runs + 1, last_run_at = now(), last_job_id = @job where id = @id
            """, conn, tx))
        {
            ran.Parameters.AddWithValue("id", id);
            ran.Parameters.AddWithValue("job", run.Id);
            await ran.ExecuteNonQueryAsync(ct);
        }
        await tx.CommitAsync(ct);
        if (run.Spec.DependsOn.Count > 0 || run.IsArrayParent) signal?.Pulse();
        return new ScheduleRun.Started(run, previousGoing && s.Concurrency == ScheduleConcurrency.Replace ? s.LastJobId : null);
    }

    private static ScheduleRecord Read(NpgsqlDataReader rd) => new()
    {
        Id = rd.GetGuid(0),
        Name = rd.GetString(1),
        Cron = rd.GetString(2),
        TimeZone = rd.GetString(3),
        Spec = JsonSerializer.Deserialize<JobSpec>(rd.GetString(4), Json)!,
        Concurrency = rd.GetString(5),
        Paused = rd.GetBoolean(6),
        CreatedAt = rd.GetFieldValue<DateTimeOffset>(7),
        UpdatedAt = rd.GetFieldValue<DateTimeOffset>(8),
        Runs = rd.GetInt32(9),
        LastRunAt = rd.IsDBNull(10) ? null : rd.GetFieldValue<DateTimeOffset>(10),
        LastJobId = rd.IsDBNull(11) ? null : rd.GetGuid(11),
        LastJobState = rd.IsDBNull(12) ? null : rd.GetString(12),
        SkippedRuns = rd.GetInt32(13),
        LastSkippedAt = rd.IsDBNull(14) ? null : rd.GetFieldValue<DateTimeOffset>(14),
        LastSkipMessage = rd.IsDBNull(15) ? null : rd.GetString(15),
        Tenant = rd.GetString(16),
        CreatedBy = rd.IsDBNull(17) ? null : rd.GetString(17),
    };

    /// <summary>s.secrets, read after <see cref="Columns"/> (ordinals 0-17) where a run needs them.</summary>
    private const int SecretsOrdinal = 18;
}
