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
        "started_at, finished_at, usage, pull_progress, hangfire_job_id, cancel_requested, node, logs_truncated, " +
        "inputs_digest, inputs_bytes, inputs_node, inputs_url";

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
            insert into batchrunner.jobs (id, name, image, queue, spec, state, created_at, inputs_digest, inputs_bytes, inputs_node, inputs_url)
            values (@id, @name, @image, @queue, @spec, @state, @created, @idigest, @ibytes, @inode, @iurl)
            """, conn, tx))
        {
            AddInsert(cmd, job);
            await cmd.ExecuteNonQueryAsync(ct);
        }
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
        cmd.Parameters.Add(new NpgsqlParameter("idigest", NpgsqlDbType.Text) { Value = (object?)job.Inputs?.Digest ?? DBNull.Value });
        cmd.Parameters.Add(new NpgsqlParameter("ibytes", NpgsqlDbType.Bigint) { Value = (object?)job.Inputs?.Bytes ?? DBNull.Value });
        cmd.Parameters.Add(new NpgsqlParameter("inode", NpgsqlDbType.Text) { Value = (object?)job.Inputs?.Node ?? DBNull.Value });
        cmd.Parameters.Add(new NpgsqlParameter("iurl", NpgsqlDbType.Text) { Value = (object?)job.Inputs?.Url ?? DBNull.Value });
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
        var outputs = new List<OutputFile>();
        await using (var cmd = new NpgsqlCommand("select path, size, sha256 from batchrunner.outputs where job_id = @id order by path", conn))
        {
            cmd.Parameters.AddWithValue("id", id);
            await using var rd = await cmd.ExecuteReaderAsync(ct);
            while (await rd.ReadAsync(ct)) outputs.Add(new OutputFile(rd.GetString(0), rd.GetInt64(1), rd.GetString(2)));
        }
        return job with { Outputs = outputs };
    }

    /// <summary>Newest first; the cursor is opaque to clients (created_at and id of the last item).</summary>
    public async Task<(IReadOnlyList<JobRecord> Items, string? NextCursor)> ListAsync(string? state, int limit, string? cursor, CancellationToken ct)
    {
        var sql = new StringBuilder($"select {Columns} from batchrunner.jobs where true");
        await using var cmd = db.CreateCommand();
        if (state is not null)
        {
            sql.Append(" and state = @state");
            cmd.Parameters.AddWithValue("state", state);
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
            LogsTruncated = rd.GetBoolean(19),
            Inputs = rd.IsDBNull(20) ? null
                : new JobInputs(rd.GetString(20), rd.IsDBNull(21) ? 0 : rd.GetInt64(21), rd.IsDBNull(22) ? "" : rd.GetString(22), rd.IsDBNull(23) ? null : rd.GetString(23)),
        };
    }
}
