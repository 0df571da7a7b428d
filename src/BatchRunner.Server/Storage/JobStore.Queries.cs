namespace BatchRunner.Server.Storage;

// Read-only questions about many jobs at once, asked by the image cache and the metrics.
public sealed partial class JobStore
{
    /// <summary>
    /// Manifest digests of the images that queued, starting or running jobs use: what image deletion refuses and
    /// garbage collection keeps. An image is "in use" from submission until its job ends; a queued job has no digest
    /// until its first pull (or, with pullPolicy never, fails clearly when it starts).
    /// </summary>
    public async Task<ISet<string>> InUseImageDigestsAsync(CancellationToken ct)
    {
        var digests = new HashSet<string>(StringComparer.Ordinal);
        await using var cmd = db.CreateCommand("""
            select distinct image_digest from batchrunner.jobs
            where state in ('queued', 'starting', 'running') and image_digest is not null
            """);
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct)) digests.Add(reader.GetString(0));
        return digests;
    }

    /// <summary>Jobs per (state, queue), in one grouped count (bounded to 5 s: it runs at scrape time).</summary>
    public async Task<IReadOnlyList<(string State, string Queue, long Count)>> CountByStateAndQueueAsync(CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("select state, queue, count(*) from batchrunner.jobs group by state, queue");
        cmd.CommandTimeout = 5;
        var result = new List<(string, string, long)>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) result.Add((rd.GetString(0), rd.GetString(1), rd.GetInt64(2)));
        return result;
    }
}
