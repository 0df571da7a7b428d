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
/// The watchdog runs in its own session and outlives the worker by design: it exits once it has killed the
/// containers, or at once when it finds the state root gone.
/// </remarks>
public static class ContainerWatchdog
{
    // `list` creates a missing --root, parents included (mode 0700): with the data directory gone (removed
    // after the worker stopped) there is nothing to kill, and nothing may be recreated. Checking first and
    // then running `list` races with that removal, so the script enters the root and names it "." : once
    // the directory is removed, the runtime cannot resolve "." (getwd fails) and creates nothing.
    private const string Script = """
        while kill -0 "$BR_PID" 2>/dev/null; do sleep 0.5; done
        cd "$BR_ROOT" 2>/dev/null || exit 0
        for id in $("$BR_RUNC" --root . list -q 2>/dev/null); do
          case "$id" in "$BR_PREFIX"*) "$BR_RUNC" --root . kill --all "$id" KILL 2>/dev/null;; esac
        done
        """;

    /// <summary>Starts the watchdog of process <paramref name="watchedPid"/>: once it has ended, every container of
    /// <paramref name="stateRoot"/> whose id starts with <paramref name="containerPrefix"/> is killed.</summary>
    public static Process? Launch(int watchedPid, string runtimePath, string stateRoot, string containerPrefix)
    {
        var psi = new ProcessStartInfo("setsid")
        {
            UseShellExecute = false,
            RedirectStandardInput = true, // a pipe, closed at once: the watchdog reads nothing
            RedirectStandardOutput = false,
            RedirectStandardError = false,
        };
        foreach (var a in new[] { "sh", "-c", Script }) psi.ArgumentList.Add(a);
        psi.Environment["BR_PID"] = watchedPid.ToString(System.Globalization.CultureInfo.InvariantCulture);
        psi.Environment["BR_RUNC"] = runtimePath;
        psi.Environment["BR_ROOT"] = stateRoot;
        psi.Environment["BR_PREFIX"] = containerPrefix;
        var p = Process.Start(psi);
        p?.StandardInput.Close();
        return p;
    }
}
