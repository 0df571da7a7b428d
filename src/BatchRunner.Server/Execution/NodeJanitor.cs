using BatchRunner.Oci;
using BatchRunner.Oci.Snapshots;
using BatchRunner.Runtime;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Runs once when a worker starts, before it takes jobs: removes the containers, cgroups, rootfs
/// mounts and run directories that a crashed predecessor with the same identity left behind. Their
/// jobs are picked up again by Hangfire (sliding invisibility) and their open attempts closed as node_lost.
/// </summary>
public sealed partial class NodeJanitor(IContainerRuntime runtime, DataPaths paths, NodeIdentity node, ILogger<NodeJanitor> log) : IHostedService
{
    public async Task StartAsync(CancellationToken ct)
    {
        var containers = await runtime.CleanupOrphansAsync(node.ContainerPrefix, ct);
        var mounts = MountCleanup.UnmountAllUnder(paths.RunRoot);
        int dirs = 0;
        if (Directory.Exists(paths.RunRoot))
        {
            var stillMounted = File.ReadAllLines("/proc/self/mountinfo").Select(l => l.Split(' ')[4]).ToList();
            foreach (var dir in Directory.GetDirectories(paths.RunRoot, node.ContainerPrefix + "*"))
            {
                // Never recurse into a mount that would not go away: deleting through it would damage what it shows.
                if (stillMounted.Any(m => m == dir || m.StartsWith(dir + "/", StringComparison.Ordinal))) continue;
                try { Directory.Delete(dir, recursive: true); dirs++; }
                catch (Exception e) { LogDirFailed(log, e, dir); }
            }
        }
        if (containers.Count + mounts.Count + dirs > 0)
            LogCleaned(log, containers.Count, mounts.Count, dirs);
    }

    public Task StopAsync(CancellationToken ct) => Task.CompletedTask;

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removed leftovers of a previous run: {Containers} containers, {Mounts} mounts, {Dirs} run directories")]
    private static partial void LogCleaned(ILogger log, int containers, int mounts, int dirs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not remove leftover run directory {Dir}")]
    private static partial void LogDirFailed(ILogger log, Exception e, string dir);
}
