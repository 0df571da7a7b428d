using BatchRunner.Core;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Disk;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Scheduling;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Execution.Phases;

/// <summary>
/// Owns the attempt's run directory (DATA/run/CONTAINER-ID; made with the disk when there is one) and, in it, the job's disk: a filesystem of
/// <c>resources.disk</c> (<see cref="IDiskVolumes"/>: a sparse ext4 image on a loop device) that holds everything the
/// job writes on the host, its root layer and its /outputs, so that the kernel refuses writes past the limit. Its
/// usage is sampled from here until <see cref="OutputsPhase"/> reads the verdict, and counted by <see cref="NodeDisk"/>
/// meanwhile. Released: the volume is unmounted and its image deleted, then the run directory, which must be empty
/// by then. After a crash the node janitor unmounts what is under DATA/run, unbinds leftover loop devices and deletes
/// the run directories with their images.
/// </summary>
public sealed class DiskPhase(NodeDisk nodeDisk, IOptions<BatchRunnerOptions> options, IDiskVolumes? volumes = null) : IAttemptPhase
{
    /// <summary>The directories an attempt makes at the top of its disk, which a new disk holds already
    /// (<see cref="LoopDiskOptions.Directories"/>): /outputs, the root filesystem's mount point, upper and work
    /// directories (<see cref="Oci.Snapshots.OverlaySnapshotter"/>) and the container's name files'
    /// (<see cref="ContainerPhase"/>). Making them on each job's fresh filesystem was about 4 % of the node's samples per
    /// job (perf, 2026-12-01); each maker still makes its own where it is missing.</summary>
    public static readonly IReadOnlyList<string> DiskDirectories =
    [
        AttemptContext.OutputsDirName, Oci.Snapshots.OverlaySnapshotter.RootfsDirName, Oci.Snapshots.OverlaySnapshotter.UpperDirName,
        Oci.Snapshots.OverlaySnapshotter.WorkDirName, ContainerPhase.NameFilesDirName,
    ];

    /// <summary>Of <see cref="DiskDirectories"/>, those a job reaches itself (its /outputs, and the overlay's upper directory,
    /// which is its root directory): a disk kept mounted for the next job has them made anew, not only emptied
    /// (<see cref="KeepMounted"/>).</summary>
    public static readonly IReadOnlyList<string> RenewedDirectories = [AttemptContext.OutputsDirName, Oci.Snapshots.OverlaySnapshotter.UpperDirName];

    public async Task<AttemptResult?> RunAsync(AttemptContext attempt)
    {
        // With a disk its maker makes the run directory: a disk of the node's default comes with its directory, renamed
        // into place (PooledDiskVolumes).
        if (volumes is null) Directory.CreateDirectory(attempt.RunDir);
        else
        {
            // Jobs stored before disk limits existed name none: they get this node's default.
            var limit = attempt.Spec.Resources.DiskBytes > 0 ? attempt.Spec.Resources.DiskBytes : options.Value.Disk.DefaultBytes();
            try
            {
                attempt.Disk = await volumes.CreateAsync(attempt.RunDir, limit, attempt.Signals.Preparation);
            }
            catch (IOException e)
            {
                return new AttemptResult.Failed(FailureReason.StartFailed, $"the job's disk of {Quantity.FormatBytes(limit)} could not be made: {e.Message}", Infrastructure: true);
            }
            catch (OperationCanceledException) when (attempt.Signals.Preparation.IsCancellationRequested)
            {
                return await attempt.Signals.InterruptedAsync();
            }
            var watch = DiskUsageWatch.Start(attempt.Disk);
            attempt.DiskWatch = watch;
            attempt.DiskCounted = nodeDisk.Track(() => watch.Last.UsedBytes);
        }
        Directory.CreateDirectory(attempt.OutputsDir);
        return null;
    }

    public async ValueTask ReleaseAsync(AttemptContext attempt)
    {
        if (attempt.DiskWatch is { } watch)
        {
            await watch.DisposeAsync();
            attempt.DiskWatch = null;
        }
        attempt.DiskCounted?.Dispose();
        attempt.DiskCounted = null;
        if (attempt.Disk is { } disk)
        {
            await disk.DisposeAsync();
            attempt.Disk = null;
        }
        // Without a disk the scratch directories (the emptied /outputs) are the run directory's own.
        var outputs = Path.Combine(attempt.RunDir, AttemptContext.OutputsDirName);
        if (Directory.Exists(outputs)) Directory.Delete(outputs, recursive: true);
        // Not recursive otherwise: anything left inside (a mount that would not go) must not be deleted through.
        if (Directory.Exists(attempt.RunDir)) Directory.Delete(attempt.RunDir, recursive: false);
    }
}
