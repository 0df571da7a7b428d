using BatchRunner.Oci;

namespace BatchRunner.Server.Execution.Phases;

/// <summary>
/// Owns the writable root filesystem stacked over the image's layers, its upper and work directories on the job's
/// disk (<see cref="AttemptContext.ScratchDir"/>), so that what the job writes to its "/" counts against its limit.
/// Released: the root is unmounted and, without a job disk, its directories removed (the snapshotter's guarantee: only
/// once verified unmounted); on a job's disk they go with the disk. A crash leaves it to the node janitor, which
/// unmounts everything under DATA/run.
/// </summary>
public sealed partial class RootfsPhase(ISnapshotter snapshotter, ILogger<RootfsPhase> log) : IAttemptPhase
{
    public async Task<AttemptResult?> RunAsync(AttemptContext attempt)
    {
        try
        {
            // On the job's disk the scratch goes with the disk (emptied or deleted whole): the root is only unmounted.
            attempt.Rootfs = await snapshotter.MountAsync(attempt.Image!.LayerPaths, attempt.ScratchDir, scratchDiscarded: attempt.Disk is not null,
                attempt.Signals.Preparation);
            // The mount's own line names its path, which on a disk made ahead does not carry the job's id.
            LogMounted(log, attempt.JobId, attempt.Rootfs.RootfsPath);
        }
        catch (OperationCanceledException) when (attempt.Signals.Preparation.IsCancellationRequested)
        {
            return await attempt.Signals.InterruptedAsync();
        }
        return null;
    }

    public async ValueTask ReleaseAsync(AttemptContext attempt)
    {
        if (attempt.Rootfs is { } rootfs)
        {
            await rootfs.DisposeAsync();
            attempt.Rootfs = null;
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Job {JobId}: root filesystem mounted at {Path}")]
    private static partial void LogMounted(ILogger log, Guid jobId, string path);
}
