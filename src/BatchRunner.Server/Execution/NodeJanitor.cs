using BatchRunner.Oci.Snapshots;
using BatchRunner.Runtime;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Runs once when a worker starts, before it takes jobs: removes the containers, cgroups, rootfs
/// mounts and run directories that a crashed predecessor with the same identity left behind, then starts
/// the <see cref="ContainerWatchdog"/> that kills this process's containers should it die outright. The
/// crashed predecessor's jobs are picked up again by Hangfire (sliding invisibility) and their open
/// attempts closed as node_lost.
/// </summary>
public sealed partial class NodeJanitor(IContainerRuntime runtime, RuntimeSelection selection, DataPaths paths, NodeIdentity node,
    ILogger<NodeJanitor> log) : IHostedService
{
    public async Task StartAsync(CancellationToken ct)
    {
        var containers = await runtime.CleanupOrphansAsync(node.ContainerPrefix, ct);
        var mounts = MountCleanup.UnmountAllUnder(paths.RunRoot);
        int dirs = 0;
        if (Directory.Exists(paths.RunRoot))
        {
            foreach (var dir in Directory.GetDirectories(paths.RunRoot, node.ContainerPrefix + "*"))
            {
                // Never recurse into a mount that would not go away: deleting through it would damage what it shows.
                if (MountCleanup.AnyMountAtOrUnder(dir)) continue;
                try { Directory.Delete(dir, recursive: true); dirs++; }
                catch (Exception e) { LogDirFailed(log, e, dir); }
            }
        }
        if (containers.Count + mounts.Count + dirs > 0)
            LogCleaned(log, containers.Count, mounts.Count, dirs);

        using var watchdog = ContainerWatchdog.Launch(Environment.ProcessId, selection.Path, paths.RuntimeState, node.ContainerPrefix);
        LogWatchdogStarted(log, watchdog?.Id ?? 0);
    }

    public Task StopAsync(CancellationToken ct) => Task.CompletedTask;

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removed leftovers of a previous run: {Containers} containers, {Mounts} mounts, {Dirs} run directories")]
    private static partial void LogCleaned(ILogger log, int containers, int mounts, int dirs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not remove leftover run directory {Dir}")]
    private static partial void LogDirFailed(ILogger log, Exception e, string dir);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Container watchdog started (pid {Pid})")]
    private static partial void LogWatchdogStarted(ILogger log, int pid);
}
