using BatchRunner.Oci.Snapshots;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Disk;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Runs once when a worker starts, before it takes jobs: mounts the node's state tmpfs (<see cref="StateFilesystem"/>)
/// unless a crashed predecessor left it mounted, removes the containers, cgroups, bundles, rootfs mounts, job disks
/// (their mounts, loop devices and images) and run directories that a crashed predecessor with the same identity left
/// behind, makes sure job disks can be made here, then starts the <see cref="ContainerWatchdog"/> that kills this
/// process's containers should it die outright. The crashed predecessor's jobs are picked up again by Hangfire
/// (sliding invisibility) and their open attempts closed as node_lost. On a clean stop (after the Hangfire server's,
/// so every attempt has released its container) it unmounts the state tmpfs, unless a container is left in it.
/// </summary>
public sealed partial class NodeJanitor(IContainerRuntime runtime, RuntimeSelection selection, DataPaths paths, NodeIdentity node,
    ILogger<NodeJanitor> log, IDiskVolumes? volumes = null) : IHostedService
{
    public async Task StartAsync(CancellationToken ct)
    {
        // Before the runtime lists its state root, which is on it.
        if (!StateFilesystem.EnsureMounted(paths.State)) LogStateKept(log, paths.State);
        await RemoveLegacyStateAsync(ct);
        var containers = await runtime.CleanupOrphansAsync(node.ContainerPrefix, ct);
        // Deepest first: a rootfs overlay, then the job disk it lies on; a disk's loop device unbinds itself once unmounted.
        var mounts = MountCleanup.UnmountAllUnder(paths.RunRoot);
        // A worker killed between binding a loop device and mounting it leaves the device bound: unbind it.
        var loops = LoopDiskVolumes.RemoveLeftovers(paths.RunRoot);
        var dirs = RunDirectories.Remove(paths.RunRoot, node.ContainerPrefix);
        // Bundles of containers the runtime never recorded (a worker killed before `run` wrote its state).
        var bundles = RunDirectories.Remove(paths.Bundles, node.ContainerPrefix);
        foreach (var (dir, why) in dirs.Kept.Concat(bundles.Kept)) LogDirFailed(log, dir, why);
        if (containers.Count + mounts.Count + loops.Count + dirs.Dirs + bundles.Dirs > 0)
            LogCleaned(log, containers.Count, mounts.Count, loops.Count, dirs.Dirs + bundles.Dirs);
        if (volumes is not null) await ProbeDiskAsync(volumes, ct);

        // Armed for the life of this process (the watchdog keeps itself): it acts when the process ends.
        var watchdog = ContainerWatchdog.Launch(selection.Path, paths.RuntimeState, node.ContainerPrefix);
        LogWatchdogStarted(log, watchdog.Pid);
    }

    public Task StopAsync(CancellationToken ct)
    {
        if (StateFilesystem.TryUnmount(paths.State, paths.RuntimeState, paths.Bundles) is { } why) LogStateStays(log, paths.State, why);
        return Task.CompletedTask;
    }

    /// <summary>A version before the state tmpfs kept the runtime's state in DATA/runtime: a node that crashed under it may
    /// have left containers there. Removed like a predecessor's, then the directory.</summary>
    private async Task RemoveLegacyStateAsync(CancellationToken ct)
    {
        var legacy = paths.LegacyRuntimeState;
        if (!Directory.Exists(legacy)) return;
        if (Directory.EnumerateFileSystemEntries(legacy).Any())
        {
            var removed = await RuncRuntime.FromSelection(selection, legacy).CleanupOrphansAsync(node.ContainerPrefix, ct);
            if (removed.Count > 0) LogCleaned(log, removed.Count, 0, 0, 0);
        }
        try { Directory.Delete(legacy); }
        catch (IOException e) { LogDirFailed(log, legacy, e.Message); }
    }

    /// <summary>Makes and removes a small job disk, so that a host without loop devices or mkfs.ext4 says so at start
    /// instead of failing every job. Named with the node's prefix: a crash during the probe is cleaned like a job's.</summary>
    private async Task ProbeDiskAsync(IDiskVolumes volumes, CancellationToken ct)
    {
        var dir = Path.Combine(paths.RunRoot, node.ContainerPrefix + "disk-probe");
        Directory.CreateDirectory(dir);
        try
        {
            await using var volume = await volumes.CreateAsync(dir, 1L << 20, ct);
        }
        catch (IOException e)
        {
            throw new InvalidOperationException($"per-job disk limits cannot be enforced on this host: {e.Message}. " +
                "Fix that, or run without disk limits (BatchRunner:Disk:Enforce=false, jobs then write to the data directory unbounded)", e);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removed leftovers of a previous run: {Containers} containers, {Mounts} mounts, {Loops} loop devices, {Dirs} run directories")]
    private static partial void LogCleaned(ILogger log, int containers, int mounts, int loops, int dirs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not remove leftover run directory {Dir}: {Why}")]
    private static partial void LogDirFailed(ILogger log, string dir, string why);

    [LoggerMessage(Level = LogLevel.Information, Message = "The node's state tmpfs at {Dir} was mounted already (a previous run did not stop cleanly); its containers are removed now")]
    private static partial void LogStateKept(ILogger log, string dir);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The node's state tmpfs at {Dir} stays mounted: {Why}; the next start removes what is left")]
    private static partial void LogStateStays(ILogger log, string dir, string why);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Container watchdog started (pid {Pid})")]
    private static partial void LogWatchdogStarted(ILogger log, int pid);
}
