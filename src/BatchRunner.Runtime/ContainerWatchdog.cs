using System.Diagnostics;

namespace BatchRunner.Runtime;

/// <summary>
/// A worker killed outright (SIGKILL, OOM) cannot stop its containers, and a detached container's init
/// outlives its parent (the worker, its subreaper). This starts a tiny shell in its own session that waits for the
/// worker process to end and then kills every container with this node's prefix, so a job whose worker
/// died stops within about a second instead of running on beside its retry. The mounts, bundles and
/// cgroups left behind are removed when the worker starts again (<see cref="IContainerRuntime.CleanupOrphansAsync"/>).
/// </summary>
/// <remarks>
/// <para>The shell waits for end of file on its stdin, a pipe whose only write end this process holds (Process's pipes
/// are close-on-exec, so no other child inherits it): the kernel closes it when this process ends, however it ends, and
/// the wait costs nothing while it lives. (It used to poll the worker's pid twice a second, a fork of `sleep` each time:
/// 2.5 ms of CPU per second on every node, idle or not.)</para>
/// <para>The watchdog runs in its own session and outlives the worker by design: it exits once it has killed the
/// containers, or at once when it finds the state root gone.</para>
/// </remarks>
public sealed class ContainerWatchdog : IDisposable
{
    // `list` creates a missing --root, parents included (mode 0700): with the data directory gone (removed
    // after the worker stopped) there is nothing to kill, and nothing may be recreated. Checking first and
    // then running `list` races with that removal, so the script enters the root and names it "." : once
    // the directory is removed, the runtime cannot resolve "." (getwd fails) and creates nothing.
    private const string Script = """
        cat >/dev/null 2>&1
        cd "$BR_ROOT" 2>/dev/null || exit 0
        for id in $("$BR_RUNC" --root . list -q 2>/dev/null); do
          case "$id" in "$BR_PREFIX"*) "$BR_RUNC" --root . kill --all "$id" KILL 2>/dev/null;; esac
        done
        """;

    // Every watchdog this process started, for its whole life: were the pipe's write end collected and finalised,
    // its watchdog would kill this node's containers while the node still runs them.
    private static readonly List<ContainerWatchdog> s_armed = [];

    private readonly Process _process;
    private readonly StreamWriter _lifeline;

    private ContainerWatchdog(Process process)
    {
        _process = process;
        _lifeline = process.StandardInput;
    }

    /// <summary>The watchdog shell's pid.</summary>
    public int Pid => _process.Id;

    /// <summary>Completes when the watchdog shell has exited (after it acted, or found nothing to act on).</summary>
    public Task WaitForExitAsync(CancellationToken ct = default) => _process.WaitForExitAsync(ct);

    /// <summary>Starts the watchdog of this process: once it has ended, every container of <paramref name="stateRoot"/>
    /// whose id starts with <paramref name="containerPrefix"/> is killed. It stays armed for this process's whole life.</summary>
    public static ContainerWatchdog Launch(string runtimePath, string stateRoot, string containerPrefix)
    {
        var psi = new ProcessStartInfo("setsid")
        {
            UseShellExecute = false,
            RedirectStandardInput = true, // the lifeline: end of file when this process ends
            RedirectStandardOutput = false,
            RedirectStandardError = false,
        };
        foreach (var a in new[] { "sh", "-c", Script }) psi.ArgumentList.Add(a);
        psi.Environment["BR_RUNC"] = runtimePath;
        psi.Environment["BR_ROOT"] = stateRoot;
        psi.Environment["BR_PREFIX"] = containerPrefix;
        var process = Process.Start(psi) ?? throw new IOException("could not start the container watchdog (setsid sh)");
        var watchdog = new ContainerWatchdog(process);
        lock (s_armed) s_armed.Add(watchdog);
        return watchdog;
    }

    /// <summary>Acts now, as if this process had ended: closes the lifeline (tests, and nothing else).</summary>
    public void Dispose()
    {
        lock (s_armed) s_armed.Remove(this);
        _lifeline.Dispose();
    }
}
