using BatchRunner.Oci;

namespace BatchRunner.Server.Execution.Phases;

/// <summary>
/// Owns the attempt's run directory (DATA/run/CONTAINER-ID) and the writable root filesystem stacked in it over the
/// image's layers. Released: the root is unmounted and its directories removed (the snapshotter's guarantee: only
/// once verified unmounted), then the run directory, which must be empty by then (the container phase removed
/// the bundle). A crash leaves both to the node janitor, which finds them by the node's container prefix.
/// </summary>
public sealed class RootfsPhase(ISnapshotter snapshotter) : IAttemptPhase
{
    public async Task<AttemptResult?> RunAsync(AttemptContext attempt)
    {
        Directory.CreateDirectory(attempt.RunDir);
        try
        {
            attempt.Rootfs = await snapshotter.MountAsync(attempt.Image!.LayerPaths, attempt.RunDir, attempt.Signals.Preparation);
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
        // Not recursive: anything left inside (a root that would not unmount) must not be deleted through.
        if (Directory.Exists(attempt.RunDir)) Directory.Delete(attempt.RunDir, recursive: false);
    }
}
