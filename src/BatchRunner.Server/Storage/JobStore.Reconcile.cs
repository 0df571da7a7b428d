namespace BatchRunner.Server.Storage;

/// <summary>A queued job whose Hangfire message will never run it: deleted in Hangfire's dashboard, ended there
/// (succeeded or failed while the job is still queued), or gone altogether.</summary>
/// <param name="HangfireState">Hangfire's state of the message (<c>Deleted</c>, <c>Succeeded</c>, <c>Failed</c>); null when it is gone.</param>
/// <param name="IsArrayParent">An array's parent: its message runs nothing (it mirrors the array), so it is only ever
/// found deleted, and cancelling it must cancel its children too.</param>
public sealed record OrphanedJob(Guid Id, string DisplayName, string Queue, string HangfireJobId, string? HangfireState, string Tenant = JobRecord.DefaultTenant, bool IsArrayParent = false)
{
    public bool DeletedInHangfire => HangfireState == "Deleted";
}

// Queued jobs and their Hangfire messages: finding the ones Hangfire will never run.
public sealed partial class JobStore
{
    /// <summary>
    /// Queued jobs whose Hangfire message is in a state no worker fetches from: <c>Deleted</c> (at once: only a person
    /// deletes a queued job's message, in Hangfire's dashboard; BatchRunner's own cancel ends the job first), or
    /// <c>Succeeded</c>, <c>Failed</c> or gone, for at least <paramref name="grace"/> (a worker that handed a job back
    /// changes its message's state a moment after the job's).
    /// </summary>
    /// <remarks>
    /// Reads Hangfire.PostgreSql's own tables (<c>hangfire.job</c>: <c>id</c>, <c>statename</c>; <c>hangfire.state</c>:
    /// <c>createdat</c>, UTC): one indexed join per queued job instead of one Hangfire API call each. The schema name is
    /// the one <see cref="StorageServices"/> configures; HangfireReconcileFacts fails if an upgrade changes these tables.
    /// </remarks>
    public async Task<IReadOnlyList<OrphanedJob>> FindOrphanedQueuedAsync(TimeSpan grace, int max, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            select j.id, coalesce(j.name, j.image), j.queue, j.hangfire_job_id, h.statename, j.tenant, j.array_size is not null
              from batchrunner.jobs j
              left join hangfire.job h on h.id = j.hangfire_job_id::bigint
              left join hangfire.state s on s.id = h.stateid
             where j.state = 'queued' and j.hangfire_job_id ~ '^[0-9]{1,18}$'
               and (h.statename = 'Deleted'
                    or (j.array_size is null and h.id is null and j.created_at < now() - @grace)
                    or (j.array_size is null and h.statename in ('Succeeded', 'Failed') and s.createdat < (now() at time zone 'utc') - @grace))
             limit @max
            """);
        cmd.Parameters.AddWithValue("grace", grace);
        cmd.Parameters.AddWithValue("max", max);
        var orphans = new List<OrphanedJob>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct))
            orphans.Add(new OrphanedJob(rd.GetGuid(0), rd.GetString(1), rd.GetString(2), rd.GetString(3), rd.IsDBNull(4) ? null : rd.GetString(4), rd.GetString(5), rd.GetBoolean(6)));
        return orphans;
    }

    /// <summary>
    /// Makes fetchable again the Hangfire messages of queued jobs that a worker fetched more than <paramref name="after"/>
    /// ago and never began: the worker died between its fetch and the attempt's begin (a kill -9, a crash), and its fetch
    /// would otherwise hide the message for Hangfire's invisibility timeout (minutes). A live worker begins what it fetched
    /// within seconds or hands it back, so only the database being away could make it take longer: it must have been up
    /// for <paramref name="after"/> too. Should a live worker hold one all the same, the job is delivered twice, and the
    /// attempt's begin lets one delivery run it. Returns the jobs and their messages.
    /// </summary>
    /// <remarks>Reads and writes Hangfire.PostgreSql's <c>hangfire.jobqueue</c> (<c>jobid</c>, <c>fetchedat</c>), as its
    /// fetch does; led by the index on <c>fetchedat</c>, so a pass costs the fetched messages, not the queued jobs.</remarks>
    public async Task<IReadOnlyList<(Guid Id, string HangfireJobId)>> ReleaseAbandonedFetchesAsync(TimeSpan after, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand($$"""
            update hangfire.jobqueue q set fetchedat = null
              from batchrunner.jobs j
             where q.fetchedat < now() - @after
               and j.state = 'queued'
               and q.jobid = case when j.hangfire_job_id ~ '^[0-9]{1,18}$' then j.hangfire_job_id::bigint end
               and {{NodeStore.DatabaseUpSince}} < now() - @after
            returning j.id, j.hangfire_job_id
            """);
        cmd.Parameters.AddWithValue("after", after);
        var released = new List<(Guid, string)>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) released.Add((rd.GetGuid(0), rd.GetString(1)));
        return released;
    }

    /// <summary>Ends a queued job whose message was deleted in Hangfire: <c>cancelled</c>, with <paramref name="message"/>.
    /// False when it is no longer queued with that message.</summary>
    public async Task<bool> CancelOrphanAsync(Guid id, string hangfireJobId, string message, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.jobs set state = 'cancelled', reason = 'cancelled', message = @m, cancel_requested = true, finished_at = now()
             where id = @id and state = 'queued' and hangfire_job_id = @h
            """);
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("h", hangfireJobId);
        cmd.Parameters.AddWithValue("m", message);
        if (await cmd.ExecuteNonQueryAsync(ct) != 1) return false;
        // Its dependents can never run now: the workflow sweeper ends them.
        signal?.Pulse();
        return true;
    }

    /// <summary>Records <paramref name="newHangfireJobId"/> as the queued job's message in place of <paramref name="oldHangfireJobId"/>;
    /// false when the job has moved on (another node replaced it first, or it is no longer queued).</summary>
    public async Task<bool> ReplaceHangfireJobIdAsync(Guid id, string oldHangfireJobId, string newHangfireJobId, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.jobs set hangfire_job_id = @new where id = @id and state = 'queued' and hangfire_job_id = @old
            """);
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("old", oldHangfireJobId);
        cmd.Parameters.AddWithValue("new", newHangfireJobId);
        return await cmd.ExecuteNonQueryAsync(ct) == 1;
    }
}
