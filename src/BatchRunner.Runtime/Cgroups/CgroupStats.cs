using System.Globalization;
using BatchRunner.Core;

namespace BatchRunner.Runtime.Cgroups;

/// <summary>
/// Reads a cgroup's usage counters. Every reader takes the cgroup ROOT (normally /sys/fs/cgroup) so it
/// can run on a captured file tree. A missing or unreadable file gives null, never zero: null means
/// "not measured on this host".
/// </summary>
public interface ICgroupStatsReader
{
    ResourceUsage Read();

    /// <summary>OOM kills recorded in the cgroup (any process in it), or null when the kernel does not count them.</summary>
    long? ReadOomKills();

    /// <summary>Pids of the processes in the cgroup (and its descendants); empty when it is gone.</summary>
    IReadOnlyList<int> ReadPids();
}

public static class CgroupStats
{
    /// <summary>A reader for the cgroup at <paramref name="cgroupPath"/> (e.g. "/batchrunner/br-1"),
    /// relative to each hierarchy's root. Hybrid hosts use v1 controllers.</summary>
    public static ICgroupStatsReader For(CgroupVersion version, string cgroupPath, string root = CgroupVersionDetector.DefaultRoot) =>
        version == CgroupVersion.V2 ? new CgroupV2Reader(root, cgroupPath) : new CgroupV1Reader(root, cgroupPath);

    // Four calls per file (open, read, read, close): a job's final usage reads nine of them.
    internal static string? ReadText(string path) => Native.Libc.ReadSmallFile(path);

    internal static long? ReadSingle(string path)
    {
        var text = ReadText(path)?.Trim();
        if (text is null) return null;
        if (text == "max") return null;
        return long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : null;
    }

    /// <summary>Reads one key of a flat-keyed file ("key value" per line: cpu.stat, memory.events, ...).</summary>
    internal static long? ReadKey(string path, string key) => ReadKeys(path)?.GetValueOrDefault(key);

    internal static Dictionary<string, long?>? ReadKeys(string path)
    {
        var text = ReadText(path);
        if (text is null) return null;
        var result = new Dictionary<string, long?>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = line.Split(' ', 2, StringSplitOptions.TrimEntries);
            if (parts.Length == 2 && long.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var v))
                result[parts[0]] = v;
        }
        return result;
    }

    internal static IReadOnlyList<int> ReadProcsRecursive(string dir)
    {
        var pids = new List<int>();
        if (!Directory.Exists(dir)) return pids;
        try
        {
            foreach (var sub in Directory.EnumerateDirectories(dir)) pids.AddRange(ReadProcsRecursive(sub));
        }
        catch (IOException) { }
        var text = ReadText(Path.Combine(dir, "cgroup.procs"));
        if (text is not null)
        {
            foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
                if (int.TryParse(line, NumberStyles.Integer, CultureInfo.InvariantCulture, out var pid)) pids.Add(pid);
        }
        return pids;
    }
}

/// <summary>
/// cgroup v1: one hierarchy per controller under the root (cpu and cpuacct may be one mount
/// "cpu,cpuacct" with symlinks; both layouts are found).
/// </summary>
public sealed class CgroupV1Reader(string root, string cgroupPath) : ICgroupStatsReader
{
    /// <summary>USER_HZ: cpuacct.stat counts in clock ticks of 1/100 s on every Linux ABI.</summary>
    public const double UserHz = 100.0;

    private readonly string _rel = cgroupPath.TrimStart('/');

    /// <summary>The directory of this cgroup in the hierarchy holding <paramref name="controller"/>.</summary>
    public string ControllerDir(string controller)
    {
        var mount = Path.Combine(root, controller);
        if (!Directory.Exists(mount) && controller is "cpu" or "cpuacct")
        {
            foreach (var joined in new[] { "cpu,cpuacct", "cpuacct,cpu" })
                if (Directory.Exists(Path.Combine(root, joined))) { mount = Path.Combine(root, joined); break; }
        }
        return Path.Combine(mount, _rel);
    }

    public ResourceUsage Read()
    {
        var cpuacct = ControllerDir("cpuacct");
        var cpu = ControllerDir("cpu");
        var memory = ControllerDir("memory");
        var pids = ControllerDir("pids");
        var acctStat = CgroupStats.ReadKeys(Path.Combine(cpuacct, "cpuacct.stat"));
        var cpuStat = CgroupStats.ReadKeys(Path.Combine(cpu, "cpu.stat"));
        var usageNs = CgroupStats.ReadSingle(Path.Combine(cpuacct, "cpuacct.usage"));
        return new ResourceUsage
        {
            CpuSeconds = usageNs / 1e9,
            CpuUserSeconds = acctStat?.GetValueOrDefault("user") / UserHz,
            CpuSystemSeconds = acctStat?.GetValueOrDefault("system") / UserHz,
            CpuThrottledPeriods = cpuStat?.GetValueOrDefault("nr_throttled"),
            CpuThrottledSeconds = cpuStat?.GetValueOrDefault("throttled_time") / 1e9,
            MemoryBytes = CgroupStats.ReadSingle(Path.Combine(memory, "memory.usage_in_bytes")),
            MaxMemoryBytes = CgroupStats.ReadSingle(Path.Combine(memory, "memory.max_usage_in_bytes")),
            OomKills = ReadOomKills(),
            Pids = CgroupStats.ReadSingle(Path.Combine(pids, "pids.current")),
            PidsLimitHits = CgroupStats.ReadKey(Path.Combine(pids, "pids.events"), "max"),
        };
    }

    /// <summary>memory.oom_control "oom_kill N" (kernel 4.13+).</summary>
    public long? ReadOomKills() => CgroupStats.ReadKey(Path.Combine(ControllerDir("memory"), "memory.oom_control"), "oom_kill");

    public IReadOnlyList<int> ReadPids()
    {
        // Every process is in the pids (or memory) hierarchy; fall back across controllers present.
        foreach (var c in new[] { "pids", "memory", "cpuacct", "freezer" })
        {
            var dir = ControllerDir(c);
            if (Directory.Exists(dir)) return CgroupStats.ReadProcsRecursive(dir);
        }
        return [];
    }
}

/// <summary>cgroup v2: one unified hierarchy; the cgroup is ROOT/cgroupPath.</summary>
public sealed class CgroupV2Reader(string root, string cgroupPath) : ICgroupStatsReader
{
    public string Dir { get; } = Path.Combine(root, cgroupPath.TrimStart('/'));

    public ResourceUsage Read()
    {
        var cpuStat = CgroupStats.ReadKeys(Path.Combine(Dir, "cpu.stat"));
        return new ResourceUsage
        {
            CpuSeconds = cpuStat?.GetValueOrDefault("usage_usec") / 1e6,
            CpuUserSeconds = cpuStat?.GetValueOrDefault("user_usec") / 1e6,
            CpuSystemSeconds = cpuStat?.GetValueOrDefault("system_usec") / 1e6,
            CpuThrottledPeriods = cpuStat?.GetValueOrDefault("nr_throttled"),
            CpuThrottledSeconds = cpuStat?.GetValueOrDefault("throttled_usec") / 1e6,
            MemoryBytes = CgroupStats.ReadSingle(Path.Combine(Dir, "memory.current")),
            // memory.peak exists from Linux 5.19 on; older kernels leave it null.
            MaxMemoryBytes = CgroupStats.ReadSingle(Path.Combine(Dir, "memory.peak")),
            OomKills = ReadOomKills(),
            Pids = CgroupStats.ReadSingle(Path.Combine(Dir, "pids.current")),
            PidsLimitHits = CgroupStats.ReadKey(Path.Combine(Dir, "pids.events"), "max"),
        };
    }

    /// <summary>memory.events "oom_kill N" (hierarchical: includes descendants).</summary>
    public long? ReadOomKills() => CgroupStats.ReadKey(Path.Combine(Dir, "memory.events"), "oom_kill");

    public IReadOnlyList<int> ReadPids() => CgroupStats.ReadProcsRecursive(Dir);
}
