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
public sealed partial class JobStore(NpgsqlDataSource db) : IAttemptStore
{
    internal static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private const string Columns =
        "id, name, image, image_digest, queue, spec, state, reason, message, exit_code, attempt, created_at, " +
        "started_at, finished_at, usage, pull_progress, hangfire_job_id, cancel_requested, node, rerun_of";

    /// <summary>
    /// Inserts a new job. With an idempotency key, a key seen before returns the id of the job it created
    /// (and whether the request matched the first one) instead, in the same transaction.
    /// </summary>
    public async Task<(Guid Id, bool Created, bool SameRequest)> InsertAsync(JobRecord job, string? idempotencyKey, string requestHash, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        if (idempotencyKey is not null)
        {
            // Serialise concurrent requests with the same key.
            await using var lk = new NpgsqlCommand("select pg_advisory_xact_lock(hashtext('batchrunner.idem:' || @k))", conn, tx);
            lk.Parameters.AddWithValue("k", idempotencyKey);
            await lk.ExecuteNonQueryAsync(ct);
            await using var find = new NpgsqlCommand("select job_id, request_hash from batchrunner.idempotency_keys where key = @k", conn, tx);
            find.Parameters.AddWithValue("k", idempotencyKey);
            await using (var rd = await find.ExecuteReaderAsync(ct))
            {
                if (await rd.ReadAsync(ct))
                    return (rd.GetGuid(0), false, rd.GetString(1) == requestHash);
            }
        }
        await using (var cmd = new NpgsqlCommand("""
            insert into batchrunner.jobs (id, name, image, queue, spec, state, created_at, rerun_of)
            values (@id, @name, @image, @queue, @spec, @state, @created, @rerun)
            """, conn, tx))
        {
            AddInsert(cmd, job);
            await cmd.ExecuteNonQueryAsync(ct);
        }
        await InsertFilesAsync(conn, tx, "inputs", job.Id, job.Inputs, ct);
        if (idempotencyKey is not null)
        {
            await using var key = new NpgsqlCommand("insert into batchrunner.idempotency_keys (key, job_id, request_hash) values (@k, @id, @h)", conn, tx);
            key.Parameters.AddWithValue("k", idempotencyKey);
            key.Parameters.AddWithValue("id", job.Id);
            key.Parameters.AddWithValue("h", requestHash);
            await key.ExecuteNonQueryAsync(ct);
        }
        await tx.CommitAsync(ct);
        return (job.Id, true, true);
    }

    private static void AddInsert(NpgsqlCommand cmd, JobRecord job)
    {
        cmd.Parameters.AddWithValue("id", job.Id);
        cmd.Parameters.AddWithValue("name", (object?)job.Name ?? DBNull.Value);
        cmd.Parameters.AddWithValue("image", job.Image);
        cmd.Parameters.AddWithValue("queue", job.Queue);
        cmd.Parameters.Add(new NpgsqlParameter("spec", NpgsqlDbType.Jsonb) { Value = JsonSerializer.Serialize(job.Spec, Json) });
        cmd.Parameters.AddWithValue("state", job.State);
        cmd.Parameters.AddWithValue("created", job.CreatedAt);
        cmd.Parameters.AddWithValue("rerun", (object?)job.RerunOf ?? DBNull.Value);
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

    private static async Task<List<OutputFile>> ReadFilesAsync(NpgsqlConnection conn, string table, Guid id, CancellationToken ct)
    {
        var files = new List<OutputFile>();
        await using var cmd = new NpgsqlCommand($"select path, size, sha256 from batchrunner.{table} where job_id = @id order by path", conn);
        cmd.Parameters.AddWithValue("id", id);
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) files.Add(new OutputFile(rd.GetString(0), rd.GetInt64(1), rd.GetString(2)));
        return files;
    }

    public async Task SetHangfireJobIdAsync(Guid id, string hangfireJobId, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("update batchrunner.jobs set hangfire_job_id = @h where id = @id");
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("h", hangfireJobId);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    public async Task<JobRecord?> GetAsync(Guid id, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        JobRecord? job;
        await using (var cmd = new NpgsqlCommand($"select {Columns} from batchrunner.jobs where id = @id", conn))
        {
            cmd.Parameters.AddWithValue("id", id);
            await using var rd = await cmd.ExecuteReaderAsync(ct);
            job = await rd.ReadAsync(ct) ? Read(rd) : null;
        }
        if (job is null) return null;
        return job with { Outputs = await ReadFilesAsync(conn, "outputs", id, ct), Inputs = await ReadFilesAsync(conn, "inputs", id, ct) };
    }

    /// <summary>
    /// The jobs <paramref name="filter"/> matches, newest first; the cursor is opaque to clients (created_at and id of
    /// the last item), so a page after it is exact under any filter. With <paramref name="summary"/>, the spec is read
    /// without command, args and env: what a list item shows stays small whatever a job's command line.
    /// </summary>
    public async Task<(IReadOnlyList<JobRecord> Items, string? NextCursor)> ListAsync(JobFilter filter, int limit, string? cursor, bool summary, CancellationToken ct)
    {
        var columns = summary ? Columns.Replace("spec,", "spec - array['command', 'args', 'env'] as spec,") : Columns;
        var sql = new StringBuilder($"select {columns} from batchrunner.jobs where true");
        await using var cmd = db.CreateCommand();
        if (filter.States.Count == 1)
        {
            // Equality, not = any(...): only then can (state, created_at, id) hand rows over newest first.
            sql.Append(" and state = @state");
            cmd.Parameters.AddWithValue("state", filter.States[0]);
        }
        else if (filter.States.Count > 1)
        {
            sql.Append(" and state = any(@states)");
            cmd.Parameters.AddWithValue("states", filter.States.ToArray());
        }
        if (filter.Name is { } name)
        {
            sql.Append(filter.NameIsPrefix ? " and name like @name" : " and name = @name");
            cmd.Parameters.AddWithValue("name", filter.NameIsPrefix ? LikePrefix(name) : name);
        }
        if (filter.Labels.Count > 0)
        {
            sql.Append(" and spec -> 'labels' @> @labels");
            cmd.Parameters.Add(new NpgsqlParameter("labels", NpgsqlDbType.Jsonb) { Value = JsonSerializer.Serialize(filter.Labels, Json) });
        }
        if (filter.Since is { } since)
        {
            sql.Append(" and created_at >= @since");
            cmd.Parameters.AddWithValue("since", since);
        }
        if (filter.Until is { } until)
        {
            sql.Append(" and created_at < @until");
            cmd.Parameters.AddWithValue("until", until);
        }
        if (filter.Queue is { } queue)
        {
            sql.Append(" and queue = @queue");
            cmd.Parameters.AddWithValue("queue", queue);
        }
        if (cursor is not null)
        {
            var (at, id) = DecodeCursor(cursor);
            sql.Append(" and (created_at, id) < (@cat, @cid)");
            cmd.Parameters.AddWithValue("cat", at);
            cmd.Parameters.AddWithValue("cid", id);
        }
        sql.Append(" order by created_at desc, id desc limit @limit");
        cmd.Parameters.AddWithValue("limit", limit + 1);
        cmd.CommandText = sql.ToString();
        var items = new List<JobRecord>();
        await using (var rd = await cmd.ExecuteReaderAsync(ct))
            while (await rd.ReadAsync(ct)) items.Add(Read(rd));
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

    /// <summary>
    /// A queued job is cancelled at once; a starting or running one is flagged, and its worker kills
    /// the container when it sees the flag (through Hangfire's cancellation token).
    /// </summary>
    public async Task<(CancelResult Result, string? HangfireJobId)> RequestCancelAsync(Guid id, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            with j as (select id, state from batchrunner.jobs where id = @id for update)
            update batchrunner.jobs t set
                   cancel_requested = true,
                   state = case when j.state = 'queued' then 'cancelled' else t.state end,
                   reason = case when j.state = 'queued' then 'cancelled' else t.reason end,
                   message = case when j.state = 'queued' then 'cancelled before it started' else t.message end,
                   finished_at = case when j.state = 'queued' then now() else t.finished_at end
              from j where t.id = j.id and j.state not in ('succeeded', 'failed', 'cancelled')
            returning j.state, t.hangfire_job_id
            """);
        cmd.Parameters.AddWithValue("id", id);
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        if (await rd.ReadAsync(ct))
        {
            var before = rd.GetString(0);
            var hf = rd.IsDBNull(1) ? null : rd.GetString(1);
            return (before == JobState.Queued ? CancelResult.CancelledWhileQueued : CancelResult.Signalled, hf);
        }
        await rd.CloseAsync();
        await using var exists = db.CreateCommand("select 1 from batchrunner.jobs where id = @id");
        exists.Parameters.AddWithValue("id", id);
        return (await exists.ExecuteScalarAsync(ct) is null ? CancelResult.NotFound : CancelResult.AlreadyFinal, null);
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
            RerunOf = rd.IsDBNull(19) ? null : rd.GetGuid(19),
        };
    }
}
