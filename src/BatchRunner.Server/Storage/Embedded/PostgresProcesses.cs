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
    public static bool RunsIn(int pid, string dataDir) => pid > 0 && Identity(dataDir) is { } dir && RunsIn(pid, dir);

    /// <summary>Every live postgres process of <paramref name="dataDir"/>, postmaster first when it is among them.</summary>
    public static IReadOnlyList<int> In(string dataDir)
    {
        if (Identity(dataDir) is not { } dir) return [];
        var found = new List<(int Pid, int Ppid)>();
        foreach (var entry in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(entry), out var pid)) continue;
            if (RunsIn(pid, dir) && ProcStat.Read(pid) is var (_, ppid)) found.Add((pid, ppid));
        }
        var pids = found.Select(f => f.Pid).ToHashSet();
        // A postmaster's parent is not one of the cluster's processes; a backend's is (unless orphaned).
        return found.OrderBy(f => pids.Contains(f.Ppid) ? 1 : 0).Select(f => f.Pid).ToList();
    }

    private static bool RunsIn(int pid, (ulong Dev, ulong Ino) dir)
    {
        if (ProcStat.Read(pid) is not var (state, _) || state is 'Z' or 'X') return false;
        string? exe;
        try { exe = new FileInfo($"/proc/{pid}/exe").LinkTarget; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
        if (exe is null) return false;
        // After a package upgrade the running binary shows as "…/postgres (deleted)".
        if (exe.EndsWith(" (deleted)", StringComparison.Ordinal)) exe = exe[..^" (deleted)".Length];
        return Path.GetFileName(exe) == "postgres" && Identity($"/proc/{pid}/cwd") == dir;
    }

    /// <summary>Device and inode (the same directory whatever symlinks lead to it), or null when it cannot be read.</summary>
    private static unsafe (ulong Dev, ulong Ino)? Identity(string path)
    {
        Tmds.Linux.stat st;
        var bytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
        {
            if (Tmds.Linux.LibC.stat(p, &st) != 0) return null;
        }
        return ((ulong)st.st_dev, (ulong)st.st_ino);
    }
}
