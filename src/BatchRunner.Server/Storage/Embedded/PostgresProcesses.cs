using BatchRunner.Runtime;

namespace BatchRunner.Server.Storage.Embedded;

/// <summary>
/// Which processes run PostgreSQL in a data directory, read from /proc: a live (not zombie) process whose
/// executable is <c>postgres</c> and whose working directory is the data directory. The postmaster
/// changes into its data directory at start and its backends inherit that, so this finds the postmaster
/// of a cluster and also the backends of a postmaster that was killed and that may still hold its shared
/// memory. It is what "this data directory is live" means for the supervisor.
/// </summary>
internal static class PostgresProcesses
{
    /// <summary>Whether <paramref name="pid"/> is a live postgres process of <paramref name="dataDir"/>.</summary>
    public static bool RunsIn(int pid, string dataDir) =>
        pid > 0 && ProcStat.Read(pid) is ({ } state, _) && state is not ('Z' or 'X')
        && Path.GetFileName(HostProcesses.Executable(pid)) == "postgres" && HostProcesses.WorkingDirectoryIs(pid, dataDir);

    /// <summary>Every live postgres process of <paramref name="dataDir"/>, postmaster first when it is among them.</summary>
    public static IReadOnlyList<int> In(string dataDir)
    {
        if (!Directory.Exists(dataDir)) return [];
        var found = new List<(int Pid, int Ppid)>();
        foreach (var entry in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(entry), out var pid)) continue;
            if (RunsIn(pid, dataDir) && ProcStat.Read(pid) is var (_, ppid)) found.Add((pid, ppid));
        }
        var pids = found.Select(f => f.Pid).ToHashSet();
        // A postmaster's parent is not one of the cluster's processes; a backend's is (unless orphaned).
        return found.OrderBy(f => pids.Contains(f.Ppid) ? 1 : 0).Select(f => f.Pid).ToList();
    }
}
