using System.Globalization;

namespace BatchRunner.Bench;

/// <summary>CPU time and memory of processes, read from /proc: what the API and idle benches report per process.</summary>
public static class ProcStat
{
    /// <summary>utime + stime of process <paramref name="pid"/> in ms (its own threads; children it waited for are not counted);
    /// null when it is gone.</summary>
    public static double? CpuMs(int pid, bool withReapedChildren = false) =>
        SelfAndReapedMs(pid) is { } cpu ? cpu.SelfMs + (withReapedChildren ? cpu.ReapedChildrenMs : 0) : null;

    /// <summary>The whole machine's CPU time from /proc/stat's first line, in ms: (busy, all), busy being all but idle and
    /// iowait: what every process and kernel thread used, to tell what the processes measured leave out.</summary>
    public static (double BusyMs, double AllMs) MachineMs()
    {
        var f = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
            .Take(8).Select(v => long.Parse(v, CultureInfo.InvariantCulture) * 10.0).ToArray();
        var all = f.Sum();
        // user nice system idle iowait irq softirq steal
        return (all - f[3] - f[4], all);
    }

    /// <summary>utime + stime of process <paramref name="pid"/>, and cutime + cstime of the children it waited for (ms);
    /// null when it is gone.</summary>
    public static (double SelfMs, double ReapedChildrenMs)? SelfAndReapedMs(int pid)
    {
        string stat;
        try { stat = File.ReadAllText($"/proc/{pid}/stat"); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        // After "(comm) ": field 3 is index 0, so utime (14) and stime (15) are 11 and 12, cutime (16) and cstime (17)
        // 13 and 14; clock ticks are 1/100 s.
        long F(int i) => long.Parse(fields[i], CultureInfo.InvariantCulture);
        return ((F(11) + F(12)) * 10.0, (F(13) + F(14)) * 10.0);
    }

    /// <summary>utime and stime (ms) of each live thread of process <paramref name="pid"/> by thread id, with its name (comm;
    /// numbered pool threads such as ".NET TP Worker" and "Npgsql 1" folded into one name), and of the whole process (dead
    /// threads included) under thread id 0, named "(process)".</summary>
    public static Dictionary<int, (string Name, double UserMs, double SysMs)> ThreadsCpu(int pid)
    {
        var threads = new Dictionary<int, (string, double, double)>();
        void Add(int tid, string name, string statPath)
        {
            string stat;
            try { stat = File.ReadAllText(statPath); }
            catch (IOException) { return; }
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            double F(int i) => long.Parse(fields[i], CultureInfo.InvariantCulture) * 10.0;
            threads[tid] = (name, F(11), F(12));
        }
        Add(0, "(process)", $"/proc/{pid}/stat");
        try
        {
            foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                string comm;
                try { comm = File.ReadAllText(Path.Combine(task, "comm")).Trim(); }
                catch (IOException) { continue; }
                Add(int.Parse(Path.GetFileName(task), CultureInfo.InvariantCulture), comm.TrimEnd('0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ' '), Path.Combine(task, "stat"));
            }
        }
        catch (DirectoryNotFoundException) { }
        return threads;
    }

    /// <summary>
    /// The CPU (ms) the threads alive at <paramref name="end"/> used since <paramref name="start"/>, summed by thread name
    /// (<see cref="ThreadsCpu"/>): a thread started in between counts whole, one that ended in between only in "(process)".
    /// Thread by thread, so that a thread the runtime ended and started again (the JIT's, the pool's) is never subtracted
    /// from another one of its name.
    /// </summary>
    public static Dictionary<string, (double UserMs, double SysMs)> CpuByThreadSince(
        Dictionary<int, (string Name, double UserMs, double SysMs)> start, Dictionary<int, (string Name, double UserMs, double SysMs)> end)
    {
        var byName = new Dictionary<string, (double, double)>();
        foreach (var (tid, (name, u1, s1)) in end)
        {
            var (u0, s0) = start.TryGetValue(tid, out var was) && was.Name == name ? (was.UserMs, was.SysMs) : (0, 0);
            var (u, s) = byName.GetValueOrDefault(name);
            byName[name] = (u + u1 - u0, s + s1 - s0);
        }
        return byName;
    }

    /// <summary>CPU ms of <paramref name="pid"/> and of its descendants but PostgreSQL's (a node's embedded cluster is its child,
    /// and is counted apart): each one's own time and that of the children it reaped (a watchdog shell's <c>sleep</c>s).</summary>
    public static (double Self, double Helpers) TreeCpuMs(int pid)
    {
        var children = new Dictionary<int, List<int>>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
            if (int.TryParse(Path.GetFileName(dir), out var p) && ParentOf(p) is { } parent)
                (children.TryGetValue(parent, out var list) ? list : children[parent] = []).Add(p);
        double helpers = 0;
        var todo = new Stack<int>(children.GetValueOrDefault(pid) ?? []);
        while (todo.TryPop(out var p))
        {
            if (Comm(p) == "postgres") continue;
            helpers += CpuMs(p, withReapedChildren: true) ?? 0;
            foreach (var c in children.GetValueOrDefault(p) ?? []) todo.Push(c);
        }
        return (CpuMs(pid) ?? 0, helpers);
    }

    private static string? Comm(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/comm").Trim(); }
        catch (IOException) { return null; }
    }

    /// <summary>The parent pid of <paramref name="pid"/>; null when it is gone.</summary>
    public static int? ParentOf(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1], CultureInfo.InvariantCulture);
        }
        catch (IOException) { return null; }
    }

    /// <summary>A line of /proc/PID/status in bytes (VmRSS, RssAnon: "kB" values); 0 when the process is gone.</summary>
    public static long StatusBytes(int pid, string field)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith(field + ":", StringComparison.Ordinal))
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        }
        catch (IOException) { }
        return 0;
    }

    /// <summary>The postmaster of the cluster in <paramref name="pgDataDir"/> and its children (backends and background processes).</summary>
    public static IReadOnlyList<int> ClusterProcesses(string pgDataDir)
    {
        var pidFile = Path.Combine(pgDataDir, "postmaster.pid");
        if (!File.Exists(pidFile)) return [];
        var postmaster = int.Parse(File.ReadLines(pidFile).First(), CultureInfo.InvariantCulture);
        var result = new List<int> { postmaster };
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
            if (int.TryParse(Path.GetFileName(dir), out var pid) && ParentOf(pid) == postmaster) result.Add(pid);
        return result;
    }

    /// <summary>CPU ms of the cluster in <paramref name="pgDataDir"/>: every live process's own, plus what the postmaster
    /// collected from the children it reaped (backends that have exited): all of PostgreSQL's.</summary>
    public static double ClusterCpuMs(string pgDataDir)
    {
        var processes = ClusterProcesses(pgDataDir);
        return processes.Select((p, i) => CpuMs(p, withReapedChildren: i == 0) ?? 0).Sum();
    }
}
