using System.Text;
using System.Text.Json;
using BatchRunner.Core;
using Npgsql;
using NpgsqlTypes;

namespace BatchRunner.Server.Storage;

/// <summary>
/// BatchRunner's job records in PostgreSQL. Every write after submission is fenced by the attempt number
/// (and by the job not being final), so a late write from an attempt that was given up is ignored.
/// </summary>
public sealed partial class JobStore(NpgsqlDataSource db, WorkflowSignal? signal = null) : IAttemptStore
{
    internal static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private const string Columns =
        "j.id, j.name, j.image, j.image_digest, j.queue, j.spec, j.state, j.reason, j.message, j.exit_code, j.attempt, j.created_at, " +
        "j.started_at, j.finished_at, j.usage, j.pull_progress, j.hangfire_job_id, j.cancel_requested, j.node, j.tenant, j.submitted_by, " +
        "n.url, n.state, n.attempts, n.last_error, n.delivered_at, j.logs_truncated, j.rerun_of, " +
        "j.inputs_digest, j.inputs_bytes, j.inputs_node, j.inputs_url, j.parent_id, j.array_index, j.schedule_id";

    /// <summary>The ordinal after <see cref="Columns"/>, where a read adds what it needs besides.</summary>
    private const int AfterColumns = 35;
    /// <summary>A list adds the names of env after <see cref="Columns"/>.</summary>
    private const int EnvNamesOrdinal = AfterColumns;

    /// <summary>Sums of what the jobs aliased <c>j</c> asked for: cpus (float8), memoryBytes (int8), gpus (int8; 0 for none).</summary>
    internal const string ResourceSums =
        "coalesce(sum((j.spec->'resources'->>'cpus')::float8), 0), " +
        "coalesce(sum((j.spec->'resources'->>'memoryBytes')::int8), 0), " +
        "coalesce(sum(coalesce((j.spec->'resources'->>'gpus')::int4, 0)), 0)";

    private const string From = "batchrunner.jobs j " + NotificationJoin;

    /// <summary>What <see cref="InsertAsync"/> did: created the job, found the one an idempotency key names, or refused
    /// it because its tenant has <see cref="QueuedLimit"/> jobs queued already (nothing stored).</summary>
    public sealed record InsertResult(Guid Id, bool Created, bool SameRequest, int? QueuedLimit = null);

    /// <summary>
    /// A list item's columns: its spec without args and env, whose size only the submission limit bounds (256 KiB
    /// each), so that a page of 1000 jobs stays small, and for the summary view without command either; the names of
    /// env come separately (<see cref="EnvNamesOrdinal"/>).
    /// </summary>
    private static string ListColumns(bool summary) =>
        Columns.Replace("j.spec,", summary ? "j.spec - array['command', 'args', 'env'] as spec," : "j.spec - array['args', 'env'] as spec,") +
        ", array(select jsonb_object_keys(coalesce(j.spec->'env', '{}')) order by 1)";

    /// <summary>
    /// Inserts a new job, with its inputs, its webhook delivery (when it asks for one), its dependencies and, for an
    /// array, its children (undispatched), in one transaction. With an idempotency key, a key the job's tenant used before
    /// returns the id of the job it created (and whether the request matched the first one) instead, in the same
    /// transaction. Keys are per tenant: another tenant's job is never found by one. A tenant at its maxQueuedJobs gets
    /// nothing inserted; concurrent submissions of one tenant are serialised for that check, so two of them never both
    /// take the last place.
    /// </summary>
    /// <param name="sharesInputsOf">A job whose inputs tar this one reuses (a rerun): the insert happens only while that
    /// job's record still names the tar (its row is share-locked until the commit), so that its deletion cannot leave
    /// the tar without a record naming it, and its holder removing it, between the check and the insert.</param>
    /// <exception cref="InputsGoneException">That job's record is gone, or names no (or another) tar.</exception>
    public async Task<InsertResult> InsertAsync(JobRecord job, string? idempotencyKey, string requestHash, CancellationToken ct,
        Guid? sharesInputsOf = null)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        if (sharesInputsOf is { } original && job.InputsTar is { } tar)
        {
            await using var hold = new NpgsqlCommand("select 1 from batchrunner.jobs where id = @id and inputs_digest = @d for share", conn, tx);
            hold.Parameters.AddWithValue("id", original);
            hold.Parameters.AddWithValue("d", tar.Digest);
            if (await hold.ExecuteScalarAsync(ct) is null)
                throw new InputsGoneException($"job {original} was deleted (or no longer names the inputs {tar.Digest}) while it was rerun");
        }
        if (idempotencyKey is not null)
        {
            // Serialise concurrent requests with the same key.
            await using var lk = new NpgsqlCommand("select pg_advisory_xact_lock(hashtext('batchrunner.idem:' || @t || ':' || @k))", conn, tx);
            lk.Parameters.AddWithValue("t", job.Tenant);
            lk.Parameters.AddWithValue("k", idempotencyKey);
            await lk.ExecuteNonQueryAsync(ct);
            await using var find = new NpgsqlCommand("select job_id, request_hash from batchrunner.idempotency_keys where tenant = @t and key = @k", conn, tx);
            find.Parameters.AddWithValue("t", job.Tenant);
            find.Parameters.AddWithValue("k", idempotencyKey);
            await using (var rd = await find.ExecuteReaderAsync(ct))
            {
                if (await rd.ReadAsync(ct))
                    return new InsertResult(rd.GetGuid(0), false, rd.GetString(1) == requestHash);
            }
        }
        // Most tenants have no maxQueuedJobs: the row goes in with a statement that checks that itself (one round trip);
        // a tenant with a limit takes the serialised check first.
        if (!await InsertRowsAsync(conn, tx, job, ct, onlyIfTenantUnlimited: true))
        {
            if (await QueuedLimitReachedAsync(conn, tx, job.Tenant, ct) is { } limit) return new InsertResult(job.Id, false, false, limit);
            await InsertRowsAsync(conn, tx, job, ct);
        }
        if (idempotencyKey is not null)
        {
            await using var key = new NpgsqlCommand("insert into batchrunner.idempotency_keys (tenant, key, job_id, request_hash) values (@t, @k, @id, @h)", conn, tx);
            key.Parameters.AddWithValue("t", job.Tenant);
            key.Parameters.AddWithValue("k", idempotencyKey);
            key.Parameters.AddWithValue("id", job.Id);
            key.Parameters.AddWithValue("h", requestHash);
            await key.ExecuteNonQueryAsync(ct);
        }
        await tx.CommitAsync(ct);
        if (job.Spec.DependsOn.Count > 0 || job.IsArrayParent) signal?.Pulse();
        return new InsertResult(job.Id, true, true);
    }

    /// <summary>The tenant's maxQueuedJobs when it has that many queued jobs already; null when one more fits (or it has
    /// no such limit). Holds a per-tenant lock until the caller's transaction ends, and counts in a statement of its own
    /// after taking it: a read committed statement sees what was committed when it began, so a count in the statement
    /// that waited for the lock could miss the insert of the transaction it waited for.</summary>
    private static async Task<int?> QueuedLimitReachedAsync(NpgsqlConnection conn, NpgsqlTransaction tx, string tenant, CancellationToken ct)
    {
        await using (var read = new NpgsqlCommand("select max_queued_jobs from batchrunner.tenants where name = @t", conn, tx))
        {
            read.Parameters.AddWithValue("t", tenant);
            if (await read.ExecuteScalarAsync(ct) is not int) return null;
        }
        await using (var lk = new NpgsqlCommand("select pg_advisory_xact_lock(hashtext('batchrunner.tenant-queued:' || @t))", conn, tx))
        {
            lk.Parameters.AddWithValue("t", tenant);
            await lk.ExecuteNonQueryAsync(ct);
        }
        await using var count = new NpgsqlCommand($"""
            select t.max_queued_jobs, (select count(*) from batchrunner.jobs j where j.tenant = t.name and j.state in {TenantStore.QueuedStates})
              from batchrunner.tenants t where t.name = @t
            """, conn, tx);
        count.Parameters.AddWithValue("t", tenant);
        await using var rd = await count.ExecuteReaderAsync(ct);
        if (!await rd.ReadAsync(ct) || rd.IsDBNull(0)) return null;
        var max = rd.GetInt32(0);
        return rd.GetInt64(1) >= max ? max : null;
    }

    /// <summary>The job's row, its dependencies and its children, in the caller's transaction. With
    /// <paramref name="onlyIfTenantUnlimited"/>, nothing is inserted (false) when the job's tenant has a maxQueuedJobs, read in
    /// the same statement as the insert.</summary>
    internal static async Task<bool> InsertRowsAsync(NpgsqlConnection conn, NpgsqlTransaction tx, JobRecord job, CancellationToken ct, bool onlyIfTenantUnlimited = false)
    {
        var unlimited = onlyIfTenantUnlimited
            ? " where not exists (select 1 from batchrunner.tenants t where t.name = @tenant and t.max_queued_jobs is not null)"
            : "";
        await using (var cmd = new NpgsqlCommand($"""
            insert into batchrunner.jobs (id, name, image, queue, spec, state, message, created_at, rerun_of, tenant, submitted_by, secrets,
                                          inputs_digest, inputs_bytes, inputs_node, inputs_url, array_size, schedule_id, hangfire_job_id)
            select @id, @name, @image, @queue, @spec, @state, @message, @created, @rerun, @tenant, @by, @secrets,
                   @idigest, @ibytes, @inode, @iurl, @size, @schedule, @hangfire{unlimited}
            """, conn, tx))
        {
            cmd.Parameters.AddWithValue("id", job.Id);
            // Every parameter typed: the values are a select list (for the tenant check), whose nulls take no type from the columns.
            cmd.Parameters.Add(new NpgsqlParameter("name", NpgsqlDbType.Text) { Value = (object?)job.Name ?? DBNull.Value });
            cmd.Parameters.AddWithValue("image", job.Image);
            cmd.Parameters.AddWithValue("queue", job.Queue);
            cmd.Parameters.Add(new NpgsqlParameter("spec", NpgsqlDbType.Jsonb) { Value = JsonSerializer.Serialize(job.Spec, Json) });
            cmd.Parameters.AddWithValue("state", job.State);
            cmd.Parameters.Add(new NpgsqlParameter("message", NpgsqlDbType.Text) { Value = (object?)job.Message ?? DBNull.Value });
            cmd.Parameters.AddWithValue("created", job.CreatedAt);
            cmd.Parameters.Add(new NpgsqlParameter("rerun", NpgsqlDbType.Uuid) { Value = (object?)job.RerunOf ?? DBNull.Value });
            cmd.Parameters.AddWithValue("tenant", job.Tenant);
            cmd.Parameters.Add(new NpgsqlParameter("by", NpgsqlDbType.Text) { Value = (object?)job.SubmittedBy ?? DBNull.Value });
            cmd.Parameters.Add(new NpgsqlParameter("secrets", NpgsqlDbType.Bytea) { Value = (object?)job.ProtectedSecrets ?? DBNull.Value });
            cmd.Parameters.Add(new NpgsqlParameter("idigest", NpgsqlDbType.Text) { Value = (object?)job.InputsTar?.Digest ?? DBNull.Value });
            cmd.Parameters.Add(new NpgsqlParameter("ibytes", NpgsqlDbType.Bigint) { Value = (object?)job.InputsTar?.Bytes ?? DBNull.Value });
            cmd.Parameters.Add(new NpgsqlParameter("inode", NpgsqlDbType.Text) { Value = (object?)job.InputsTar?.Node ?? DBNull.Value });
            cmd.Parameters.Add(new NpgsqlParameter("iurl", NpgsqlDbType.Text) { Value = (object?)job.InputsTar?.Url ?? DBNull.Value });
            cmd.Parameters.Add(new NpgsqlParameter("size", NpgsqlDbType.Integer) { Value = job.IsArrayParent ? job.Spec.Array!.Size : DBNull.Value });
            cmd.Parameters.Add(new NpgsqlParameter("schedule", NpgsqlDbType.Uuid) { Value = (object?)job.ScheduleId ?? DBNull.Value });
            cmd.Parameters.Add(new NpgsqlParameter("hangfire", NpgsqlDbType.Text) { Value = (object?)job.HangfireJobId ?? DBNull.Value });
            if (await cmd.ExecuteNonQueryAsync(ct) == 0) return false;
        }
        await InsertFilesAsync(conn, tx, "inputs", job.Id, job.Inputs, ct);
        // An array's webhook is its parent's alone (its children get no row): it is called once, when the array ends.
        if (job.Spec.Notify is { } notify)
        {
            await using var n = new NpgsqlCommand("insert into batchrunner.notifications (job_id, url) values (@id, @u)", conn, tx);
            n.Parameters.AddWithValue("id", job.Id);
            n.Parameters.AddWithValue("u", notify.Url);
            await n.ExecuteNonQueryAsync(ct);
        }
        await InsertDependenciesAsync(conn, tx, job, ct);
        if (job.IsArrayParent) await InsertChildrenAsync(conn, tx, job, ct);
        return true;
    }

    /// <summary>The rows of a job's inputs or outputs (<paramref name="table"/>), in the caller's transaction.</summary>
    private static async Task InsertFilesAsync(NpgsqlConnection conn, NpgsqlTransaction tx, string table, Guid id, IReadOnlyList<OutputFile> files, CancellationToken ct)
    {
        if (files.Count == 0) return;
        await using var cmd = new NpgsqlCommand($"""
            insert into batchrunner.{table} (job_id, path, size, sha256)
            select @id, * from unnest(@paths, @sizes, @hashes)
            """, conn, tx);
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("paths", files.Select(f => f.Path).ToArray());
        cmd.Parameters.AddWithValue("sizes", files.Select(f => f.Size).ToArray());
        cmd.Parameters.AddWithValue("hashes", files.Select(f => f.Sha256).ToArray());
        await cmd.ExecuteNonQueryAsync(ct);
    }

    public async Task SetHangfireJobIdAsync(Guid id, string hangfireJobId, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand(HangfireJobIdSql);
        cmd.Parameters.Add(new NpgsqlParameter { Value = hangfireJobId });
        cmd.Parameters.Add(new NpgsqlParameter { Value = id });
        HangfireJobIdRecorded(await cmd.ExecuteScalarAsync(ct));
    }

    private const string HangfireJobIdSql = $"update batchrunner.jobs set hangfire_job_id = $1 where id = $2 returning hangfire_sync as {HangfireSyncColumn}";

    /// <summary>The column <see cref="HangfireJobIdCommand"/> returns.</summary>
    internal const string HangfireSyncColumn = "batchrunner_hangfire_sync";

    /// <summary><see cref="SetHangfireJobIdAsync"/>'s statement, for the batch of the transaction that creates the message
    /// (<see cref="HangfireMessageIds"/>); its value goes to <see cref="HangfireJobIdRecorded"/>.</summary>
    internal NpgsqlBatchCommand HangfireJobIdCommand(Guid id, string hangfireJobId) =>
        new(HangfireJobIdSql) { Parameters = { new NpgsqlParameter { Value = hangfireJobId }, new NpgsqlParameter { Value = id } } };

    /// <summary>The job's sync flag as the id's record returned it: the job moved on before its message existed (a
    /// dependency ended meanwhile), so the message must follow now.</summary>
    internal void HangfireJobIdRecorded(object? hangfireSync)
    {
        if (hangfireSync is true) signal?.Pulse();
    }

    /// <summary>The run a schedule's Hangfire job started (its message is that job), if any.</summary>
    public async Task<Guid?> ScheduledRunOfAsync(string hangfireJobId, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("select id from batchrunner.jobs where hangfire_job_id = @h and schedule_id is not null");
        cmd.Parameters.AddWithValue("h", hangfireJobId);
        return await cmd.ExecuteScalarAsync(ct) as Guid?;
    }

    public Task<JobRecord?> GetAsync(Guid id, CancellationToken ct) => GetAsync(id, tenant: null, ct);

    /// <summary>The job, with its outputs; null when there is none, or it belongs to another tenant than
    /// <paramref name="tenant"/> (null: any tenant). The API answers both alike (404), so that a job's existence is
    /// never revealed to another tenant. One round trip (the row and its files in one batch).</summary>
    public async Task<JobRecord?> GetAsync(Guid id, string? tenant, CancellationToken ct) => (await ReadAsync(id, tenant, document: false, ct))?.Job;

    /// <summary>What a job's document shows besides its record (<see cref="GetDocumentAsync"/>): its attempts, whether its
    /// node is alive (absent: it has none), and for an array's parent its children per state.</summary>
    public sealed record JobWithDocument(JobRecord Job, IReadOnlyList<AttemptRecord> Attempts, IReadOnlyDictionary<Guid, bool> NodeAlive,
        IReadOnlyDictionary<Guid, IReadOnlyDictionary<string, int>> ChildCounts);

    /// <summary>As <see cref="GetAsync(Guid, string?, CancellationToken)"/>, with all its document shows besides, read in the
    /// same round trip (GET /api/v1/jobs/{id}: one batch of six statements instead of five round trips).</summary>
    public Task<JobWithDocument?> GetDocumentAsync(Guid id, string? tenant, CancellationToken ct) => ReadAsync(id, tenant, document: true, ct);

    private async Task<JobWithDocument?> ReadAsync(Guid id, string? tenant, bool document, CancellationToken ct)
    {
        await using var batch = db.CreateBatch();
        NpgsqlBatchCommand Add(string sql)
        {
            var c = new NpgsqlBatchCommand(sql);
            c.Parameters.AddWithValue("id", id);
            batch.BatchCommands.Add(c);
            return c;
        }
        // The files and the rest are read whatever the tenant; they are dropped unread below when the job is not the caller's.
        Add($"select {Columns} from {From} where j.id = @id and (@t::text is null or j.tenant = @t)")
            .Parameters.Add(new NpgsqlParameter("t", NpgsqlDbType.Text) { Value = (object?)tenant ?? DBNull.Value });
        Add(FilesSql("outputs"));
        Add(FilesSql("inputs"));
        if (document)
        {
            Add(AttemptsSql);
            Add(JobNodeLiveness.OneSql);
            Add(OneChildCountsSql);
        }
        await using var rd = await batch.ExecuteReaderAsync(ct);
        if (!await rd.ReadAsync(ct)) return null;
        var job = Read(rd);
        await rd.NextResultAsync(ct);
        var outputs = await ReadFilesAsync(rd, ct);
        await rd.NextResultAsync(ct);
        job = job with { Outputs = outputs, Inputs = await ReadFilesAsync(rd, ct) };
        if (!document) return new JobWithDocument(job, [], new Dictionary<Guid, bool>(), new Dictionary<Guid, IReadOnlyDictionary<string, int>>());
        await rd.NextResultAsync(ct);
        var attempts = new List<AttemptRecord>();
        while (await rd.ReadAsync(ct)) attempts.Add(ReadAttempt(rd));
        await rd.NextResultAsync(ct);
        var alive = new Dictionary<Guid, bool>();
        while (await rd.ReadAsync(ct)) alive[rd.GetGuid(0)] = rd.GetBoolean(1);
        await rd.NextResultAsync(ct);
        return new JobWithDocument(job, attempts, alive, await ReadChildCountsAsync(rd, ct));
    }

    private static string FilesSql(string table) => $"select path, size, sha256 from batchrunner.{table} where job_id = @id order by path";

    private static async Task<List<OutputFile>> ReadFilesAsync(NpgsqlDataReader rd, CancellationToken ct)
    {
        var files = new List<OutputFile>();
        while (await rd.ReadAsync(ct)) files.Add(new OutputFile(rd.GetString(0), rd.GetInt64(1), rd.GetString(2)));
        return files;
    }

    /// <summary>
    /// The top-level jobs <paramref name="filter"/> matches (of its tenant; null: every tenant), newest first; an array's
    /// children are listed under their parent, not here. The cursor is opaque to clients (created_at and id of the last
    /// item), so a page after it is exact under any filter. Items are summaries (<see cref="JobRecord.IsSummary"/>: no
    /// args and env, but their names); with <paramref name="summary"/>, the spec is read without command either: what a
    /// list item shows stays small whatever a job's command line.
    /// </summary>
    public async Task<(IReadOnlyList<JobRecord> Items, string? NextCursor)> ListAsync(JobFilter filter, int limit, string? cursor, bool summary, CancellationToken ct)
    {
        var sql = new StringBuilder($"select {ListColumns(summary)} from {From} where j.parent_id is null");
        await using var cmd = db.CreateCommand();
        if (filter.Tenant is { } tenant)
        {
            sql.Append(" and j.tenant = @tenant");
            cmd.Parameters.AddWithValue("tenant", tenant);
        }
        if (filter.States.Count == 1)
        {
            // Equality, not = any(...): only then can (state, created_at, id) hand rows over newest first.
            sql.Append(" and j.state = @state");
            cmd.Parameters.AddWithValue("state", filter.States[0]);
        }
        else if (filter.States.Count > 1)
        {
            sql.Append(" and j.state = any(@states)");
            cmd.Parameters.AddWithValue("states", filter.States.ToArray());
        }
        if (filter.Name is { } name)
        {
            sql.Append(filter.NameIsPrefix ? " and j.name like @name" : " and j.name = @name");
            cmd.Parameters.AddWithValue("name", filter.NameIsPrefix ? LikePrefix(name) : name);
        }
        if (filter.Labels.Count > 0)
        {
            sql.Append(" and j.spec -> 'labels' @> @labels");
            cmd.Parameters.Add(new NpgsqlParameter("labels", NpgsqlDbType.Jsonb) { Value = JsonSerializer.Serialize(filter.Labels, Json) });
        }
        if (filter.Since is { } since)
        {
            sql.Append(" and j.created_at >= @since");
            cmd.Parameters.AddWithValue("since", since);
        }
        if (filter.Until is { } until)
        {
            sql.Append(" and j.created_at < @until");
            cmd.Parameters.AddWithValue("until", until);
        }
        if (filter.Queue is { } queue)
        {
            sql.Append(" and j.queue = @queue");
            cmd.Parameters.AddWithValue("queue", queue);
        }
        if (filter.Schedule is { } schedule)
        {
            sql.Append(" and j.schedule_id = @schedule");
            cmd.Parameters.AddWithValue("schedule", schedule);
        }
        if (cursor is not null)
        {
            var (at, id) = DecodeCursor(cursor);
            sql.Append(" and (j.created_at, j.id) < (@cat, @cid)");
            cmd.Parameters.AddWithValue("cat", at);
            cmd.Parameters.AddWithValue("cid", id);
        }
        sql.Append(" order by j.created_at desc, j.id desc limit @limit");
        cmd.Parameters.AddWithValue("limit", limit + 1);
        cmd.CommandText = sql.ToString();
        var items = new List<JobRecord>();
        await using (var rd = await cmd.ExecuteReaderAsync(ct))
            while (await rd.ReadAsync(ct)) items.Add(Read(rd) with { IsSummary = true, EnvNames = rd.GetFieldValue<string[]>(EnvNamesOrdinal) });
        string? next = null;
        if (items.Count > limit)
        {
            items.RemoveAt(items.Count - 1);
            next = EncodeCursor(items[^1].CreatedAt, items[^1].Id);
        }
        return (items, next);
    }

    /// <summary>A LIKE pattern matching what starts with <paramref name="prefix"/>: its own % _ \ are escaped.</summary>
    private static string LikePrefix(string prefix) =>
        prefix.Replace(@"\", @"\\").Replace("%", @"\%").Replace("_", @"\_") + "%";

    public static bool TryValidateCursor(string cursor)
    {
        try { DecodeCursor(cursor); return true; }
        catch (FormatException) { return false; }
    }

    private static string EncodeCursor(DateTimeOffset at, Guid id)
    {
        var bytes = new byte[24];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), at.UtcTicks);
        id.TryWriteBytes(bytes.AsSpan(8));
        return Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    }

    private static (DateTimeOffset, Guid) DecodeCursor(string cursor)
    {
        var s = cursor.Replace('-', '+').Replace('_', '/');
        s = s.PadRight(s.Length + (4 - s.Length % 4) % 4, '=');
        byte[] bytes;
        try { bytes = Convert.FromBase64String(s); }
        catch (FormatException) { throw new FormatException("invalid cursor"); }
        if (bytes.Length != 24) throw new FormatException("invalid cursor");
        var ticks = BitConverter.ToInt64(bytes, 0);
        if (ticks < DateTimeOffset.MinValue.UtcTicks || ticks > DateTimeOffset.MaxValue.UtcTicks) throw new FormatException("invalid cursor");
        return (new DateTimeOffset(ticks, TimeSpan.Zero), new Guid(bytes.AsSpan(8)));
    }

    public enum CancelResult { NotFound, AlreadyFinal, CancelledWhileQueued, Signalled }

    /// <summary>What a cancel request did: <see cref="HangfireJobIds"/> are the messages to delete (queued ones leave their
    /// queue, running ones get their cancellation token fired); <see cref="CancelledNow"/> jobs reached <c>cancelled</c> at once.</summary>
    public sealed record CancelOutcome(CancelResult Result, IReadOnlyList<string> HangfireJobIds, IReadOnlyList<(string Queue, int Count)> CancelledNow);

    /// <summary>
    /// A queued or waiting job is cancelled at once; a starting or running one is flagged, and its worker kills the
    /// container when it sees the flag (through Hangfire's cancellation token). An array's parent is flagged and every
    /// child not ended is cancelled the same way (undispatched ones at once, in the same statement); the parent ends
    /// <c>cancelled</c> once no child runs any more (now, when none had started).
    /// </summary>
    /// <remarks>Only a job of <paramref name="tenant"/> (null: any tenant) is found.</remarks>
    public async Task<CancelOutcome> RequestCancelAsync(Guid id, string? tenant, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        string? before;
        string? hangfireId;
        bool parent;
        string queue;
        await using (var cmd = new NpgsqlCommand("""
            with j as (select id, state, array_size is not null as parent from batchrunner.jobs where id = @id and (@t::text is null or tenant = @t) for update)
            update batchrunner.jobs t set
                   cancel_requested = true,
                   state = case when j.state = 'waiting' or (j.state = 'queued' and not j.parent) then 'cancelled' else t.state end,
                   reason = case when j.state = 'waiting' or (j.state = 'queued' and not j.parent) then 'cancelled' else t.reason end,
                   message = case when j.state = 'waiting' or (j.state = 'queued' and not j.parent) then 'cancelled before it started' else t.message end,
                   finished_at = case when j.state = 'waiting' or (j.state = 'queued' and not j.parent) then now() else t.finished_at end
              from j where t.id = j.id and j.state not in ('succeeded', 'failed', 'cancelled')
            returning j.state, t.hangfire_job_id, j.parent, t.queue
            """, conn, tx))
        {
            cmd.Parameters.AddWithValue("id", id);
            cmd.Parameters.Add(new NpgsqlParameter("t", NpgsqlDbType.Text) { Value = (object?)tenant ?? DBNull.Value });
            await using var rd = await cmd.ExecuteReaderAsync(ct);
            if (!await rd.ReadAsync(ct))
            {
                await rd.CloseAsync();
                await using var exists = new NpgsqlCommand("select 1 from batchrunner.jobs where id = @id and (@t::text is null or tenant = @t)", conn, tx);
                exists.Parameters.AddWithValue("id", id);
                exists.Parameters.Add(new NpgsqlParameter("t", NpgsqlDbType.Text) { Value = (object?)tenant ?? DBNull.Value });
                return new(await exists.ExecuteScalarAsync(ct) is null ? CancelResult.NotFound : CancelResult.AlreadyFinal, [], []);
            }
            before = rd.GetString(0);
            hangfireId = rd.IsDBNull(1) ? null : rd.GetString(1);
            parent = rd.GetBoolean(2);
            queue = rd.GetString(3);
        }
        var immediate = before == JobState.Waiting || (before == JobState.Queued && !parent);
        var deletes = new List<string>();
        var cancelled = new List<(string, int)>();
        if (immediate)
        {
            cancelled.Add((queue, 1));
            if (hangfireId is not null) deletes.Add(hangfireId);
        }
        // A running array's parent is not: its Hangfire state follows when it ends, once its children have.
        else if (!parent && hangfireId is not null) deletes.Add(hangfireId);
        if (parent)
        {
            var (children, count) = await CancelChildrenAsync(conn, tx, id, FailureReason.Cancelled, $"cancelled with its array {id}", ct);
            deletes.AddRange(children);
            if (count > 0) cancelled.Add((queue, count));
            // No child runs: the array ends now (cancelled).
            cancelled.AddRange((await FinishArraysAsync(conn, tx, id, ct)).Select(e => (e.Queue, 1)));
        }
        await tx.CommitAsync(ct);
        signal?.Pulse();
        return new(immediate ? CancelResult.CancelledWhileQueued : CancelResult.Signalled, deletes, cancelled);
    }

    public async Task<bool> IsCancelRequestedAsync(Guid id, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("select cancel_requested from batchrunner.jobs where id = @id");
        cmd.Parameters.AddWithValue("id", id);
        return await cmd.ExecuteScalarAsync(ct) is true;
    }

    public async Task<string?> GetStateAsync(Guid id, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("select state from batchrunner.jobs where id = @id");
        cmd.Parameters.AddWithValue("id", id);
        return await cmd.ExecuteScalarAsync(ct) as string;
    }

    private static JobRecord Read(NpgsqlDataReader rd)
    {
        T? J<T>(int i) where T : class => rd.IsDBNull(i) ? null : JsonSerializer.Deserialize<T>(rd.GetString(i), Json);
        return new JobRecord
        {
            Id = rd.GetGuid(0),
            Name = rd.IsDBNull(1) ? null : rd.GetString(1),
            Image = rd.GetString(2),
            ImageDigest = rd.IsDBNull(3) ? null : rd.GetString(3),
            Queue = rd.GetString(4),
            Spec = J<JobSpec>(5)!,
            State = rd.GetString(6),
            Reason = rd.IsDBNull(7) ? null : rd.GetString(7),
            Message = rd.IsDBNull(8) ? null : rd.GetString(8),
            ExitCode = rd.IsDBNull(9) ? null : rd.GetInt32(9),
            Attempt = rd.GetInt32(10),
            CreatedAt = rd.GetFieldValue<DateTimeOffset>(11),
            StartedAt = rd.IsDBNull(12) ? null : rd.GetFieldValue<DateTimeOffset>(12),
            FinishedAt = rd.IsDBNull(13) ? null : rd.GetFieldValue<DateTimeOffset>(13),
            Usage = J<ResourceUsage>(14),
            PullProgress = J<PullProgressRecord>(15),
            HangfireJobId = rd.IsDBNull(16) ? null : rd.GetString(16),
            CancelRequested = rd.GetBoolean(17),
            Node = rd.IsDBNull(18) ? null : rd.GetString(18),
            RerunOf = rd.IsDBNull(27) ? null : rd.GetGuid(27),
            Tenant = rd.GetString(19),
            SubmittedBy = rd.IsDBNull(20) ? null : rd.GetString(20),
            Notify = rd.IsDBNull(21) ? null : new NotificationRecord(rd.GetString(21), rd.GetString(22), rd.GetInt32(23),
                rd.IsDBNull(24) ? null : rd.GetString(24), rd.IsDBNull(25) ? null : rd.GetFieldValue<DateTimeOffset>(25)),
            LogsTruncated = rd.GetBoolean(26),
            InputsTar = rd.IsDBNull(28) ? null
                : new InputsTar(rd.GetString(28), rd.IsDBNull(29) ? 0 : rd.GetInt64(29), rd.IsDBNull(30) ? "" : rd.GetString(30), rd.IsDBNull(31) ? null : rd.GetString(31)),
            ParentId = rd.IsDBNull(32) ? null : rd.GetGuid(32),
            ArrayIndex = rd.IsDBNull(33) ? null : rd.GetInt32(33),
            ScheduleId = rd.IsDBNull(34) ? null : rd.GetGuid(34),
        };
    }
}
