using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>A job whose record was deleted: the Hangfire message to purge, and the nodes that must remove its files.</summary>
/// <param name="Nodes">Every node that may hold files of the job: each attempt's node (logs, outputs, unpacked inputs)
/// and the inputs' holder. A row of batchrunner.file_removals exists for each until that node has removed them.</param>
/// <param name="InputsNode">The node that took the job's inputs, and <paramref name="InputsUrl"/> where it answered then
/// (an API-only node has no node record to look its address up in).</param>
public sealed record DeletedJob(Guid Id, string? HangfireJobId, IReadOnlyList<string> Nodes, string? InputsDigest, string? InputsNode, string? InputsUrl);

/// <summary>A removal a node still owes: the files of a deleted job (and its inputs tar, if no other job uses it).</summary>
public sealed record FileRemoval(Guid JobId, string? InputsDigest);

// Deleting finished jobs, by request or by retention. The record (attempts, outputs, idempotency keys: cascaded) goes
// in the same transaction that records which nodes must remove the job's files, so a file is never left without
// someone who owes its removal, whatever crashes when.
public sealed partial class JobStore
{
    public enum DeleteResult { NotFound, NotFinished, Deleted }

    /// <summary>Deletes the job's record if it is finished (succeeded, failed, cancelled) and belongs to tenant
    /// <paramref name="tenant"/> (null: any tenant; another tenant's job is <see cref="DeleteResult.NotFound"/>). An
    /// array's parent takes its children with it (they have all ended once it has: it is not finished while one runs);
    /// the jobs deleted are the parent first, then its children.</summary>
    public async Task<(DeleteResult Result, IReadOnlyList<DeletedJob> Jobs)> DeleteFinishedAsync(Guid id, string? tenant, CancellationToken ct)
    {
        // Waits for a concurrent writer of the row (a cancel, the attempt's last write) rather than skipping it.
        var deleted = await DeleteWhereAsync("j.id = @id and (@t::text is null or j.tenant = @t) for update", c =>
        {
            c.Parameters.AddWithValue("id", id);
            c.Parameters.Add(new NpgsqlParameter("t", NpgsqlTypes.NpgsqlDbType.Text) { Value = (object?)tenant ?? DBNull.Value });
        }, ct);
        if (deleted.Count >= 1) return (DeleteResult.Deleted, deleted);
        await using var exists = db.CreateCommand("select 1 from batchrunner.jobs where id = @id and (@t::text is null or tenant = @t)");
        exists.Parameters.AddWithValue("id", id);
        exists.Parameters.Add(new NpgsqlParameter("t", NpgsqlTypes.NpgsqlDbType.Text) { Value = (object?)tenant ?? DBNull.Value });
        return (await exists.ExecuteScalarAsync(ct) is null ? DeleteResult.NotFound : DeleteResult.NotFinished, []);
    }

    /// <summary>
    /// Deletes up to <paramref name="limit"/> top-level jobs that finished more than <paramref name="age"/> ago, oldest
    /// first, an array's children with their parent (never alone: the array would lose part of what it reports).
    /// Safe on every node at once: a job being deleted by one caller is skipped by the others.
    /// </summary>
    public Task<IReadOnlyList<DeletedJob>> DeleteFinishedBeforeAsync(TimeSpan age, int limit, CancellationToken ct) =>
        DeleteWhereAsync("j.parent_id is null and j.finished_at < now() - @age order by j.finished_at limit @limit for update skip locked", c =>
        {
            c.Parameters.AddWithValue("age", age);
            c.Parameters.AddWithValue("limit", limit);
        }, ct);

    /// <param name="where">The condition on <c>j</c>, with its order, limit and row-locking clause.</param>
    private async Task<IReadOnlyList<DeletedJob>> DeleteWhereAsync(string where, Action<NpgsqlCommand> bind, CancellationToken ct)
    {
        // One statement: every part sees the rows as they were before it, so the holders are read from the
        // attempts that the job's deletion cascades away.
        await using var cmd = db.CreateCommand($"""
            with target as (
                select j.id, j.hangfire_job_id, j.node, j.inputs_node, j.inputs_digest, j.inputs_url from batchrunner.jobs j
                 where j.state in ('succeeded', 'failed', 'cancelled') and {where}),
            doomed as (
                select t.*, 0 as ord from target t
                union all
                select c.id, c.hangfire_job_id, c.node, c.inputs_node, c.inputs_digest, c.inputs_url, 1 from batchrunner.jobs c
                  join target t on c.parent_id = t.id),
            holders as (
                select distinct d.id, h.node from doomed d
                 cross join lateral (
                    select a.node from batchrunner.attempts a where a.job_id = d.id
                    union select d.node union select d.inputs_node) h
                 where h.node is not null),
            owed as (
                insert into batchrunner.file_removals (node, job_id, inputs_digest)
                select h.node, h.id, d.inputs_digest from holders h join doomed d on d.id = h.id
                on conflict (node, job_id) do nothing),
            gone as (delete from batchrunner.jobs j using doomed d where j.id = d.id)
            select d.id, d.hangfire_job_id, d.inputs_digest,
                   coalesce((select array_agg(h.node order by h.node) from holders h where h.id = d.id), array[]::text[]),
                   d.inputs_node, d.inputs_url
              from doomed d order by d.ord
            """);
        bind(cmd);
        var result = new List<DeletedJob>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct))
            result.Add(new DeletedJob(rd.GetGuid(0), rd.IsDBNull(1) ? null : rd.GetString(1), rd.GetFieldValue<string[]>(3),
                rd.IsDBNull(2) ? null : rd.GetString(2), rd.IsDBNull(4) ? null : rd.GetString(4), rd.IsDBNull(5) ? null : rd.GetString(5)));
        return result;
    }

    /// <summary>The removals <paramref name="node"/> owes, oldest first.</summary>
    public async Task<IReadOnlyList<FileRemoval>> PendingRemovalsAsync(string node, int limit, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            select job_id, inputs_digest from batchrunner.file_removals where node = @n order by requested_at limit @limit
            """);
        cmd.Parameters.AddWithValue("n", node);
        cmd.Parameters.AddWithValue("limit", limit);
        var result = new List<FileRemoval>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) result.Add(new FileRemoval(rd.GetGuid(0), rd.IsDBNull(1) ? null : rd.GetString(1)));
        return result;
    }

    /// <summary>The removal <paramref name="node"/> owes for <paramref name="jobId"/>, or null when it owes none.</summary>
    public async Task<FileRemoval?> PendingRemovalAsync(string node, Guid jobId, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("select inputs_digest from batchrunner.file_removals where node = @n and job_id = @id");
        cmd.Parameters.AddWithValue("n", node);
        cmd.Parameters.AddWithValue("id", jobId);
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        return await rd.ReadAsync(ct) ? new FileRemoval(jobId, rd.IsDBNull(0) ? null : rd.GetString(0)) : null;
    }

    /// <summary>Records that <paramref name="node"/> has removed the files of <paramref name="jobId"/>.</summary>
    public async Task CompleteRemovalAsync(string node, Guid jobId, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("delete from batchrunner.file_removals where node = @n and job_id = @id");
        cmd.Parameters.AddWithValue("n", node);
        cmd.Parameters.AddWithValue("id", jobId);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>Whether a job record still names the inputs tar <paramref name="digest"/> (its holder must keep it).</summary>
    public async Task<bool> InputsInUseAsync(string digest, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("select 1 from batchrunner.jobs where inputs_digest = @d limit 1");
        cmd.Parameters.AddWithValue("d", digest);
        return await cmd.ExecuteScalarAsync(ct) is not null;
    }
}
