using BatchRunner.Native;
namespace BatchRunner.Runtime;

/// <summary>
/// As a child subreaper this process also adopts orphans that are not containers: a daemon some tool
/// started, or a backend of a postmaster that was killed, becomes our child and, once it exits, a zombie nobody waits for.
/// Every <see cref="Interval"/> this reaps the zombie children that were already zombies at the previous
/// scan and are neither container inits (<see cref="ChildExit"/> reaps those) nor claimed by an owner
/// (<see cref="OwnedChildren"/>). A child that .NET's Process
/// started is reaped by .NET within milliseconds of its SIGCHLD, so it is never a zombie for a whole
/// interval and is left alone.
/// </summary>
internal static class OrphanReaper
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(30);
    private static Timer? s_timer;
    private static HashSet<int> s_seen = [];
    private static readonly object s_gate = new();

    /// <summary>Starts the periodic scan (once per process: the caller holds the subreaper flag).</summary>
    public static void Start() => s_timer ??= new Timer(_ => Scan(), null, Interval, Interval);

    /// <summary>Reaps the zombie children that were zombies last time too; returns how many.</summary>
    internal static int Scan()
    {
        lock (s_gate) return ScanLocked();
    }

    private static int ScanLocked()
    {
        try
        {
            var self = Environment.ProcessId;
            var zombies = new HashSet<int>();
            foreach (var dir in Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(dir), out var pid)) continue;
                if (ProcStat.Read(pid) is ('Z', var ppid) && ppid == self && !ChildExit.IsWatched(pid) && !OwnedChildren.IsClaimed(pid)) zombies.Add(pid);
            }
            var reaped = 0;
            foreach (var pid in zombies.Where(s_seen.Contains))
                if (Libc.TryReap(pid)) reaped++;
            s_seen = zombies;
            return reaped;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }
}
