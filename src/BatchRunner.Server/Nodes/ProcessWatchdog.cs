using System.Diagnostics;
using BatchRunner.Runtime;
using BatchRunner.Server.Execution;

namespace BatchRunner.Server.Nodes;

/// <summary>
/// A worker killed outright (SIGKILL, OOM) cannot stop its containers, and a detached container's init
/// outlives its parent (the worker, its subreaper). This starts a tiny shell in its own session that waits for the
/// worker process to end and then kills every container with this node's prefix, so a job whose worker
/// died stops within about a second instead of running on beside its retry. The mounts, bundles and
/// cgroups left behind are removed by <see cref="NodeJanitor"/> when the worker starts again.
/// </summary>
public sealed partial class ProcessWatchdog(RuntimeSelection runtime, DataPaths paths, NodeIdentity node, ILogger<ProcessWatchdog> log) : IHostedService
{
    private const string Script = """
        while kill -0 "$BR_PID" 2>/dev/null; do sleep 0.5; done
        for id in $("$BR_RUNC" --root "$BR_ROOT" list -q 2>/dev/null); do
          case "$id" in "$BR_PREFIX"*) "$BR_RUNC" --root "$BR_ROOT" kill --all "$id" KILL 2>/dev/null;; esac
        done
        """;

    public Task StartAsync(CancellationToken ct)
    {
        var psi = new ProcessStartInfo("setsid")
        {
            UseShellExecute = false,
            RedirectStandardInput = true, // a pipe, closed at once: the watchdog reads nothing
            RedirectStandardOutput = false,
            RedirectStandardError = false,
        };
        foreach (var a in new[] { "sh", "-c", Script }) psi.ArgumentList.Add(a);
        psi.Environment["BR_PID"] = Environment.ProcessId.ToString();
        psi.Environment["BR_RUNC"] = runtime.Path;
        psi.Environment["BR_ROOT"] = paths.RuntimeState;
        psi.Environment["BR_PREFIX"] = node.ContainerPrefix;
        using var p = Process.Start(psi);
        p?.StandardInput.Close();
        LogStarted(log, p?.Id ?? 0);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken ct) => Task.CompletedTask;

    [LoggerMessage(Level = LogLevel.Debug, Message = "Container watchdog started (pid {Pid})")]
    private static partial void LogStarted(ILogger log, int pid);
}
