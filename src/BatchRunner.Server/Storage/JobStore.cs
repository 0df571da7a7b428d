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
public sealed class JobStore(NpgsqlDataSource db)
{
    internal static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private const string Columns =
        "id, name, image, image_digest, queue, spec, state, reason, message, exit_code, attempt, created_at, " +
        "started_at, finished_at, usage, pull_progress, hangfire_job_id, cancel_requested, node";

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
            insert into batchrunner.jobs (id, name, image, queue, spec, state, created_at)
            values (@id, @name, @image, @queue, @spec, @state, @created)
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

    public sealed record AttemptStart(int Attempt, int LostAttempts);

    /// <summary>
    /// Starts a new attempt on this node instance: the job goes to <c>starting</c> and its attempt number
    /// is bumped. Allowed only when the job is queued, or when the instance running its current attempt
    /// is no longer alive (that attempt is closed as node_lost) — so two attempts never run at once.
    /// With a queue limit, also only while fewer than that many jobs of the queue start or run.
    /// Returns null when nothing must run now (final, cancelled, running elsewhere, or queue full: see <paramref name="queueFull"/>).
    /// </summary>
    public async Task<AttemptStart?> BeginAttemptAsync(Guid id, string node, Guid instance, string queue, int? queueLimit,
        Action? queueFull, CancellationToken ct)
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
                "select count(*) from batchrunner.jobs where queue = @q and state in ('starting', 'running') and id <> @id", conn, tx);
            count.Parameters.AddWithValue("q", queue);
            count.Parameters.AddWithValue("id", id);
            if ((long)(await count.ExecuteScalarAsync(ct))! >= limit)
            {
                queueFull?.Invoke();
                return null;
            }
        }
        // A started attempt is taken over when its node instance is dead, or when it is the caller's own
        // instance: the caller runs no attempt of this job (JobExecutor admits one delivery per job at a
        // time), so that attempt was abandoned, e.g. stopped while this node was fenced.
        int attempt;
        bool own;
        await using (var cmd = new NpgsqlCommand($"""
            with prev as (select node_instance from batchrunner.jobs where id = @id for update)
            update batchrunner.jobs j set attempt = attempt + 1, state = 'starting', node = @node, node_instance = @inst,
                   reason = null, message = null, exit_code = null, pull_progress = null, not_before = null
              from prev
             where j.id = @id and not j.cancel_requested
               and (j.state = 'queued'
                    or (j.state in ('starting', 'running')
                        and (j.node_instance = @inst
                             or not exists (select 1 from batchrunner.nodes n
                                             where n.name = j.node and n.instance_id is not distinct from j.node_instance
                                               and {Nodes.NodeStore.AliveCondition}))))
            returning j.attempt, prev.node_instance is not distinct from @inst
            """, conn, tx))
        {
            cmd.Parameters.AddWithValue("id", id);
            cmd.Parameters.AddWithValue("node", node);
            cmd.Parameters.AddWithValue("inst", instance);
            await using var r = await cmd.ExecuteReaderAsync(ct);
            if (!await r.ReadAsync(ct)) return null;
            attempt = r.GetInt32(0);
            own = r.GetBoolean(1);
        }
        int lost;
        await using (var cmd = new NpgsqlCommand("""
            update batchrunner.attempts set state = 'failed', reason = 'node_lost', finished_at = now(), message = @msg
             where job_id = @id and finished_at is null;
            insert into batchrunner.attempts (job_id, attempt, node, state, started_at) values (@id, @a, @node, 'starting', now());
            """, conn, tx))
        {
            cmd.Parameters.AddWithValue("id", id);
            cmd.Parameters.AddWithValue("a", attempt);
            cmd.Parameters.AddWithValue("node", node);
            cmd.Parameters.AddWithValue("msg", own
                ? $"node {node} stopped this attempt while it could not reach the database (fenced)"
                : "the node running this attempt stopped reporting");
            await cmd.ExecuteNonQueryAsync(ct);
        }
        await using (var cmd = new NpgsqlCommand("select count(*) from batchrunner.attempts where job_id = @id and reason = 'node_lost'", conn, tx))
        {
            cmd.Parameters.AddWithValue("id", id);
            lost = (int)(long)(await cmd.ExecuteScalarAsync(ct))!;
        }
        await tx.CommitAsync(ct);
        return new AttemptStart(attempt, lost);
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
        await using (var cmd = new NpgsqlCommand("""
            update batchrunner.attempts set state = @s, reason = @r, message = @m, exit_code = @e, finished_at = now()
             where job_id = @id and attempt = @a
            """, conn, tx))
        {
            AddOutcome(cmd, id, attempt, o);
            await cmd.ExecuteNonQueryAsync(ct);
        }
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
        return await cmd.ExecuteNonQueryAsync(ct) == 1;
    }

    public sealed record AttemptRecord(int Attempt, string Node, string State, string? Reason, string? Message, int? ExitCode,
        DateTimeOffset StartedAt, DateTimeOffset? FinishedAt);

    public async Task<IReadOnlyList<AttemptRecord>> GetAttemptsAsync(Guid id, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            select attempt, node, state, reason, message, exit_code, started_at, finished_at
              from batchrunner.attempts where job_id = @id order by attempt
            """);
        cmd.Parameters.AddWithValue("id", id);
        var result = new List<AttemptRecord>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct))
            result.Add(new AttemptRecord(rd.GetInt32(0), rd.GetString(1), rd.GetString(2), rd.IsDBNull(3) ? null : rd.GetString(3),
                rd.IsDBNull(4) ? null : rd.GetString(4), rd.IsDBNull(5) ? null : rd.GetInt32(5),
                rd.GetFieldValue<DateTimeOffset>(6), rd.IsDBNull(7) ? null : rd.GetFieldValue<DateTimeOffset>(7)));
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

    /// <summary>starting → running. False when the attempt was fenced off or the job cancelled meanwhile.</summary>
    public async Task<bool> MarkRunningAsync(Guid id, int attempt, DateTimeOffset startedAt, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.jobs set state = 'running', started_at = @t where id = @id and attempt = @a and state = 'starting';
            update batchrunner.attempts set state = 'running', started_at = @t where job_id = @id and attempt = @a;
            """);
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("a", attempt);
        cmd.Parameters.AddWithValue("t", startedAt);
        return await cmd.ExecuteNonQueryAsync(ct) > 1;
    }

    /// <summary>Records the final outcome of an attempt (and its outputs) in one transaction. Fenced by attempt.</summary>
    public async Task<bool> FinishAsync(Guid id, int attempt, JobOutcome o, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        await using (var cmd = new NpgsqlCommand("""
            update batchrunner.jobs set state = @s, reason = @r, message = @m, exit_code = @e, usage = @u,
                   finished_at = now(), pull_progress = null
             where id = @id and attempt = @a and state not in ('succeeded', 'failed', 'cancelled')
            """, conn, tx))
        {
            AddOutcome(cmd, id, attempt, o);
            if (await cmd.ExecuteNonQueryAsync(ct) == 0) return false;
        }
        await using (var cmd = new NpgsqlCommand("""
            update batchrunner.attempts set state = @s, reason = @r, message = @m, exit_code = @e, finished_at = now()
             where job_id = @id and attempt = @a
            """, conn, tx))
        {
            AddOutcome(cmd, id, attempt, o);
            await cmd.ExecuteNonQueryAsync(ct);
        }
        if (o.Outputs.Count > 0)
        {
            await using var batch = new NpgsqlBatch(conn, tx);
            batch.BatchCommands.Add(new NpgsqlBatchCommand("delete from batchrunner.outputs where job_id = @id") { Parameters = { new("id", id) } });
            foreach (var f in o.Outputs)
                batch.BatchCommands.Add(new NpgsqlBatchCommand("insert into batchrunner.outputs (job_id, path, size, sha256) values (@id, @p, @s, @h)")
                {
                    Parameters = { new("id", id), new("p", f.Path), new("s", f.Size), new("h", f.Sha256) },
                });
            await batch.ExecuteNonQueryAsync(ct);
        }
        await tx.CommitAsync(ct);
        return true;
    }

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
        };
    }
}
