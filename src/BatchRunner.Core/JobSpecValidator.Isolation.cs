using System.Text.Json;
using System.Text.RegularExpressions;

namespace BatchRunner.Core;

public static partial class JobSpecValidator
{
    public const int MaxVolumes = 32;
    public const long MinShmBytes = 1L << 20;
    public const long MinCpuShares = 2;
    public const long MaxCpuShares = 262_144;
    public const int MaxCpusetCpu = 8191;

    [GeneratedRegex("^[a-z0-9]([a-z0-9_.-]{0,62})$")]
    private static partial Regex DatasetName();

    [GeneratedRegex(@"^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$")]
    private static partial Regex CpuList();

    // Node policy (which modes, capabilities and datasets this node allows) is checked by the server,
    // which knows the node's settings; here only the shape and the absolute bounds.
    static partial void ValidateIsolation(JobSubmission s, Action<string, string> add, ref JobSpec spec)
    {
        var network = s.Network ?? NetworkModes.None;
        if (!NetworkModes.All.Contains(network))
            add("network", $"network must be one of {string.Join(", ", NetworkModes.All)}");

        var caps = new List<string>();
        if (s.Capabilities is { } requested)
        {
            foreach (var c in requested)
            {
                var name = c is null ? "" : LinuxCapabilities.Normalize(c);
                if (!LinuxCapabilities.All.Contains(name)) add("capabilities", $"unknown capability \"{c}\"");
                else if (!caps.Contains(name)) caps.Add(name);
            }
        }

        var ulimits = new Dictionary<string, long>(StringComparer.Ordinal);
        if (s.Ulimits is { } u)
        {
            foreach (var (k, v) in u)
            {
                var name = k.ToLowerInvariant();
                if (!Ulimits.Known.TryGetValue(name, out var max))
                    add($"ulimits.{k}", $"unknown ulimit; known: {string.Join(", ", Ulimits.Known.Keys)}");
                else if (v < 0 || v > max)
                    add($"ulimits.{k}", $"{name} must be between 0 and {max}");
                else if (name == "nofile" && v < 16)
                    add($"ulimits.{k}", "nofile must be at least 16 (a process needs a few descriptors to start)");
                else ulimits[name] = v;
            }
        }

        long? shm = null;
        if (s.ShmSize is { } sz && sz.ValueKind != JsonValueKind.Null)
        {
            if (!TryMemory(sz, out var bytes, out var why)) add("shmSize", why.Replace("memory", "shmSize"));
            else if (bytes < MinShmBytes) add("shmSize", $"shmSize must be at least {Quantity.FormatBytes(MinShmBytes)}");
            else if (bytes > spec.Resources.MemoryBytes)
                add("shmSize", $"shmSize ({Quantity.FormatBytes(bytes)}) must not exceed the memory limit ({Quantity.FormatBytes(spec.Resources.MemoryBytes)}): /dev/shm pages count against it");
            else shm = bytes;
        }

        var volumes = new List<VolumeMount>();
        if (s.Volumes is { } vols)
        {
            if (vols.Count > MaxVolumes) add("volumes", $"at most {MaxVolumes} volumes");
            for (int i = 0; i < vols.Count; i++)
            {
                var v = vols[i];
                if (v is null) { add($"volumes[{i}]", "a volume must be an object {\"dataset\": NAME, \"path\": \"/data\"}"); continue; }
                var ok = true;
                if (v.Dataset is null || !DatasetName().IsMatch(v.Dataset))
                {
                    add($"volumes[{i}].dataset", "dataset must name a dataset the node's admin configured (1-63 of a-z 0-9 _ . -); host paths cannot be mounted");
                    ok = false;
                }
                if (ContainerPaths.WhyInvalid(v.Path) is { } why)
                {
                    add($"volumes[{i}].path", $"\"{v.Path}\": {why}");
                    ok = false;
                }
                if (!ok) continue;
                var path = ContainerPaths.Normalize(v.Path!);
                if (volumes.Any(x => x.Path == path)) add($"volumes[{i}].path", $"{path} is mounted twice");
                else volumes.Add(new VolumeMount(v.Dataset!, path));
            }
        }

        long? shares = null;
        string? cpuset = null;
        if (s.Resources is { } r)
        {
            if (r.CpuShares is { } cs)
            {
                if (cs < MinCpuShares || cs > MaxCpuShares) add("resources.cpuShares", $"cpuShares must be between {MinCpuShares} and {MaxCpuShares} (1024 = default weight)");
                else shares = cs;
            }
            if (r.Cpuset is { } set)
            {
                if (!TryCpuset(set, out var cpus)) add("resources.cpuset", $"cpuset \"{set}\" is not a CPU list such as \"0-1\" or \"0,2\"");
                else cpuset = CpusetToString(cpus);
            }
        }

        spec = spec with
        {
            Network = network,
            Capabilities = caps,
            RootfsReadonly = s.RootfsReadonly ?? false,
            Ulimits = ulimits,
            ShmSizeBytes = shm,
            Volumes = volumes,
            Resources = spec.Resources with { CpuShares = shares, Cpuset = cpuset },
        };
    }

    /// <summary>Parses a Linux CPU list ("0-3,6"); false when malformed, descending or too large.</summary>
    public static bool TryCpuset(string? text, out SortedSet<int> cpus)
    {
        cpus = [];
        if (string.IsNullOrWhiteSpace(text) || text.Length > 1024 || !CpuList().IsMatch(text.Trim())) return false;
        foreach (var part in text.Trim().Split(','))
        {
            var ends = part.Split('-');
            if (!int.TryParse(ends[0], out var lo)) return false;
            var hi = lo;
            if (ends.Length == 2 && !int.TryParse(ends[1], out hi)) return false;
            if (hi < lo || hi > MaxCpusetCpu) return false;
            for (var c = lo; c <= hi; c++) cpus.Add(c);
        }
        return cpus.Count > 0;
    }

    /// <summary>The canonical list form: "0-2,5".</summary>
    public static string CpusetToString(IEnumerable<int> cpus)
    {
        var parts = new List<string>();
        int? start = null, prev = null;
        foreach (var c in cpus.Order())
        {
            if (prev is { } p && c == p + 1) { prev = c; continue; }
            if (start is { } s0) parts.Add(s0 == prev ? $"{s0}" : $"{s0}-{prev}");
            start = prev = c;
        }
        if (start is { } s1) parts.Add(s1 == prev ? $"{s1}" : $"{s1}-{prev}");
        return string.Join(',', parts);
    }
}
