namespace BatchRunner.Server.Storage;

/// <summary>
/// The files a job leaves on this node: <c>DATA/jobs/ID</c> (logs, outputs, unpacked inputs), on the node that
/// took its submission its inputs tar (<see cref="InputsStore"/>), and, where an attempt's release failed (a mount
/// that would not go), that attempt's run directory with its disk (<see cref="RunDirectories"/>). They are removed only after the job's record,
/// from the row of batchrunner.file_removals that the record's deletion left for this node, and that row goes only
/// once they are gone: a crash in between means the removal is done again, never forgotten.
/// </summary>
/// <param name="runDirPrefix">This node's container prefix (its run directories are PREFIX+JOB-ATTEMPT); null on a node
/// that runs no jobs.</param>
/// <param name="attemptInFlight">Whether an attempt of the job is still in this process (being released after the job
/// ended, or fenced): its run directory is then its own phases' to remove.</param>
public sealed partial class JobFiles(DataPaths paths, InputsStore inputs, JobStore store, string nodeName, ILogger<JobFiles> log,
    string? runDirPrefix = null, Func<Guid, bool>? attemptInFlight = null)
{
    /// <summary>Removes what this node holds of <paramref name="jobId"/>, if it owes that removal (its record was
    /// deleted); false when it owes none (already done, or the job still exists) or the files could not be removed
    /// yet (logged; the next sweep tries again).</summary>
    public async Task<bool> RemoveOwedAsync(Guid jobId, CancellationToken ct)
    {
        if (await store.PendingRemovalAsync(nodeName, jobId, ct) is not { } removal) return false;
        return await TryRemoveAsync(removal, ct);
    }

    /// <summary>Removes every owed removal of this node, oldest first, up to <paramref name="limit"/>; returns how many were done.</summary>
    public async Task<int> RemoveAllOwedAsync(int limit, CancellationToken ct)
    {
        var done = 0;
        foreach (var removal in await store.PendingRemovalsAsync(nodeName, limit, ct))
            if (await TryRemoveAsync(removal, ct)) done++;
        return done;
    }

    private async Task<bool> TryRemoveAsync(FileRemoval removal, CancellationToken ct)
    {
        try
        {
            await RemoveAsync(removal, ct);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The row stays: the next sweep tries again.
            LogRemoveFailed(log, removal.JobId, e.Message);
            return false;
        }
    }

    private async Task RemoveAsync(FileRemoval removal, CancellationToken ct)
    {
        if (runDirPrefix is not null && attemptInFlight?.Invoke(removal.JobId) != true)
        {
            var left = RunDirectories.Remove(paths.RunRoot, $"{runDirPrefix}{removal.JobId:N}-");
            if (left.Kept.Count > 0) throw new IOException($"its run directory {left.Kept[0].Dir} stays: {left.Kept[0].Why}");
            var bundles = RunDirectories.Remove(paths.Bundles, $"{runDirPrefix}{removal.JobId:N}-");
            if (bundles.Kept.Count > 0) throw new IOException($"its bundle {bundles.Kept[0].Dir} stays: {bundles.Kept[0].Why}");
        }
        var dir = paths.JobDir(removal.JobId);
        // Symlinks a job left in its outputs are removed, never followed (Directory.Delete does not follow them).
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        if (removal.InputsDigest is { } digest) await inputs.RemoveUnlessInUseAsync(digest, store.InputsInUseAsync, ct);
        await store.CompleteRemovalAsync(nodeName, removal.JobId, ct);
        LogRemoved(log, removal.JobId);
    }

    /// <summary>Removes inputs tars older than <paramref name="minAge"/> that no job names: left by a crash between
    /// the tar's publication and its job's record, or by a submission answered from an idempotency key.</summary>
    public async Task<int> RemoveOrphanInputsAsync(TimeSpan minAge, CancellationToken ct)
    {
        var removed = 0;
        foreach (var (digest, written, _) in inputs.List().ToList())
            if (DateTime.UtcNow - written > minAge && await inputs.RemoveUnlessInUseAsync(digest, store.InputsInUseAsync, ct))
                removed++;
        return removed;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: removed its files from this node")]
    private static partial void LogRemoved(ILogger log, Guid jobId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: could not remove its files yet: {Reason}")]
    private static partial void LogRemoveFailed(ILogger log, Guid jobId, string reason);
}
