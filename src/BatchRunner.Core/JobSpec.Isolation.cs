namespace BatchRunner.Core;

public sealed partial record JobSpec
{
    /// <summary>none (default: own network namespace with loopback only), host, or bridge: <see cref="NetworkModes"/>.</summary>
    public string Network { get; init; } = NetworkModes.None;

    /// <summary>Linux capabilities the job keeps, without the CAP_ prefix ("NET_BIND_SERVICE"); none by default.
    /// Only names of the node's allow-list are accepted at submission.</summary>
    public IReadOnlyList<string> Capabilities { get; init; } = [];

    /// <summary>Mounts the image's root file system read-only (/tmp, /outputs and /dev/shm stay writable).</summary>
    public bool RootfsReadonly { get; init; }

    /// <summary>Resource limits of the job's processes (soft = hard), by name: <see cref="Ulimits.Known"/>.</summary>
    public IReadOnlyDictionary<string, long> Ulimits { get; init; } = new Dictionary<string, long>();

    /// <summary>Size of the tmpfs at /dev/shm; null: the default of 64 MiB.</summary>
    public long? ShmSizeBytes { get; init; }

    /// <summary>Admin-configured datasets mounted read-only into the job.</summary>
    public IReadOnlyList<VolumeMount> Volumes { get; init; } = [];
}

/// <summary>A dataset (a host directory the node's admin named) mounted read-only at <see cref="Path"/>.</summary>
public sealed record VolumeMount(string Dataset, string Path);

public sealed partial record ResourceRequest
{
    /// <summary>Relative CPU weight under contention (cgroup v1 cpu.shares, 2..262144; 1024 = one default share).
    /// Null: the runtime's default. On cgroup v2 it is converted to cpu.weight.</summary>
    public long? CpuShares { get; init; }

    /// <summary>CPUs the job may run on, as Linux writes lists ("0-1", "0,2"); null: all of the node's.</summary>
    public string? Cpuset { get; init; }
}

public static class NetworkModes
{
    public const string None = "none";
    public const string Host = "host";
    public const string Bridge = "bridge";
    public static readonly IReadOnlyList<string> All = [None, Host, Bridge];
}

/// <summary>The ulimits a job may set, each with the highest value accepted.</summary>
public static class Ulimits
{
    public static readonly IReadOnlyDictionary<string, long> Known = new Dictionary<string, long>
    {
        ["nofile"] = 1L << 20,          // the kernel's default fs.nr_open
        ["nproc"] = 1L << 22,
        ["core"] = long.MaxValue,
        ["stack"] = 1L << 30,
        ["memlock"] = 1L << 40,
        ["fsize"] = long.MaxValue,
        ["msgqueue"] = 1L << 30,
        ["sigpending"] = 1L << 22,
    };

    /// <summary>"nofile" → "RLIMIT_NOFILE", as the OCI runtime spec names it.</summary>
    public static string RlimitName(string name) => "RLIMIT_" + name.ToUpperInvariant();
}

/// <summary>The Linux capability names a job can be given at all (the node narrows this with its allow-list).</summary>
public static class LinuxCapabilities
{
    public static readonly IReadOnlyList<string> All =
    [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE",
    ];

    /// <summary>What a node allows when its admin configured nothing: the harmless part of Docker's default set.</summary>
    public static readonly IReadOnlyList<string> DefaultAllowed =
        ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "NET_BIND_SERVICE", "SYS_CHROOT", "SETFCAP", "SETPCAP", "AUDIT_WRITE"];

    /// <summary>"cap_net_raw", "CAP_NET_RAW", "net_raw" → "NET_RAW".</summary>
    public static string Normalize(string name)
    {
        var n = name.Trim().ToUpperInvariant();
        return n.StartsWith("CAP_", StringComparison.Ordinal) ? n[4..] : n;
    }
}

/// <summary>Rules for paths inside a container that a job may mount something at.</summary>
public static class ContainerPaths
{
    /// <summary>Destinations owned by the kernel or by BatchRunner: nothing may be mounted at or under them.</summary>
    public static readonly IReadOnlyList<string> Reserved = ["/proc", "/sys", "/dev", "/inputs", "/outputs", "/tmp", "/etc"];

    /// <summary>Why <paramref name="path"/> cannot be a mount destination, or null when it can.</summary>
    public static string? WhyInvalid(string? path)
    {
        if (string.IsNullOrEmpty(path) || !path.StartsWith('/')) return "path must be absolute";
        if (path.Length > 4096 || path.Any(c => c == '\0' || char.IsControl(c))) return "path must be printable and at most 4096 characters";
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Any(p => p is "." or "..")) return "path must not contain \".\" or \"..\" segments";
        if (parts.Length == 0) return "path must not be /";
        var norm = "/" + string.Join('/', parts);
        foreach (var r in Reserved)
            if (norm == r || norm.StartsWith(r + "/", StringComparison.Ordinal))
                return $"{r} is reserved";
        return null;
    }

    public static string Normalize(string path) => "/" + string.Join('/', path.Split('/', StringSplitOptions.RemoveEmptyEntries));
}
