using System.Globalization;

namespace BatchRunner.Runtime.Spec;

/// <summary>
/// One change to an OCI runtime spec. Options create the sections they need, so they compose in any
/// order (containerd's pkg/oci SpecOpts). A later option wins where two set the same field.
/// </summary>
public delegate void SpecOpt(RuntimeSpec spec);

/// <summary>Small composable options that build a container's config.json.</summary>
public static partial class SpecOpts
{
    /// <summary>CFS period used for CPU limits; quota = round(cpus × period).</summary>
    public const ulong CpuPeriodMicros = 100_000;

    /// <summary>The kernel refuses CFS quotas below 1 ms.</summary>
    public const long MinCpuQuotaMicros = 1_000;

    public const ulong DefaultNoFileLimit = 1024;

    /// <summary>The default PATH Docker gives a process whose image sets none.</summary>
    public const string DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    /// <summary>Paths hidden from the container (runc spec defaults).</summary>
    public static readonly IReadOnlyList<string> DefaultMaskedPaths =
    [
        "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
        // Docker masks it too: RAPL energy counters are a power side channel (CVE-2020-8694).
        "/sys/devices/virtual/powercap",
    ];

    /// <summary>Paths made read-only in the container (runc spec defaults).</summary>
    public static readonly IReadOnlyList<string> DefaultReadonlyPaths =
        ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

    /// <summary>The namespaces of `runc spec`: a new network namespace holds only loopback.</summary>
    public static readonly IReadOnlyList<string> DefaultNamespaces = ["pid", "network", "ipc", "uts", "mount"];

    public static SpecOpt Compose(params IEnumerable<SpecOpt> opts)
    {
        var list = opts.ToList();
        return spec =>
        {
            foreach (var opt in list) opt(spec);
        };
    }

    private static ProcessSpec Process(RuntimeSpec s) => s.Process ??= new ProcessSpec();
    private static LinuxSpec Linux(RuntimeSpec s) => s.Linux ??= new LinuxSpec();
    private static ResourcesSpec Resources(RuntimeSpec s) => Linux(s).Resources ??= new ResourcesSpec();
    private static List<MountSpec> Mounts(RuntimeSpec s) => s.Mounts ??= [];

    public static SpecOpt WithProcessArgs(IReadOnlyList<string> args)
    {
        if (args.Count == 0) throw new ArgumentException("a container needs at least one argument (the program to run)", nameof(args));
        return s => Process(s).Args = [.. args];
    }

    /// <summary>Sets the environment; adds Docker's default PATH when <paramref name="env"/> has none, so
    /// that a bare program name resolves as it does under Docker.</summary>
    public static SpecOpt WithEnv(IReadOnlyList<string> env) => s =>
    {
        var list = env.ToList();
        if (!list.Any(e => e.StartsWith("PATH=", StringComparison.Ordinal))) list.Insert(0, DefaultPath);
        Process(s).Env = list;
    };

    public static SpecOpt WithCwd(string cwd)
    {
        if (!cwd.StartsWith('/')) throw new ArgumentException($"working directory \"{cwd}\" must be absolute", nameof(cwd));
        return s => Process(s).Cwd = cwd;
    }

    public static SpecOpt WithUser(uint uid, uint gid, IReadOnlyList<uint>? additionalGids = null) => s =>
        Process(s).User = new UserSpec
        {
            Uid = uid,
            Gid = gid,
            AdditionalGids = additionalGids is { Count: > 0 } ? [.. additionalGids] : null,
        };

    public static SpecOpt WithNoNewPrivileges(bool value = true) => s => Process(s).NoNewPrivileges = value;

    /// <summary>The kernel's OOM-killer preference for the container's processes (-1000..1000, higher dies first).</summary>
    public static SpecOpt WithOomScoreAdj(int value)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(value, -1000);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(value, 1000);
        return s => Process(s).OomScoreAdj = value;
    }

    /// <summary>Empties all five capability sets: a job, even as uid 0, holds no capability.</summary>
    public static SpecOpt WithNoCapabilities() => s => Process(s).Capabilities = new CapabilitiesSpec();

    public static SpecOpt WithRlimit(string type, ulong soft, ulong hard) => s =>
    {
        var limits = Process(s).Rlimits ??= [];
        limits.RemoveAll(r => r.Type == type);
        limits.Add(new RlimitSpec { Type = type, Soft = soft, Hard = hard });
    };

    public static SpecOpt WithRootfs(string path, bool readOnly)
    {
        if (!Path.IsPathFullyQualified(path)) throw new ArgumentException($"rootfs path \"{path}\" must be absolute", nameof(path));
        return s => s.Root = new RootSpec { Path = path, Readonly = readOnly };
    }

    public static SpecOpt WithHostname(string hostname) => s => s.Hostname = hostname;

    /// <summary>Adds (or replaces, by destination) one mount.</summary>
    public static SpecOpt WithMount(MountSpec mount) => s =>
    {
        var mounts = Mounts(s);
        mounts.RemoveAll(m => m.Destination == mount.Destination);
        mounts.Add(mount);
    };

    /// <summary>The kernel file systems a Linux process expects (runc spec defaults) plus /dev/shm of 64 MiB
    /// and a private tmpfs on /tmp, so a read-only rootfs still has a writable scratch dir.</summary>
    public static SpecOpt WithDefaultMounts() => Compose(
        WithMount(new MountSpec { Destination = "/proc", Type = "proc", Source = "proc" }),
        WithMount(new MountSpec { Destination = "/dev", Type = "tmpfs", Source = "tmpfs", Options = ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        WithMount(new MountSpec { Destination = "/dev/pts", Type = "devpts", Source = "devpts", Options = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] }),
        WithMount(new MountSpec { Destination = "/dev/shm", Type = "tmpfs", Source = "shm", Options = ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
        WithMount(new MountSpec { Destination = "/dev/mqueue", Type = "mqueue", Source = "mqueue", Options = ["nosuid", "noexec", "nodev"] }),
        WithMount(new MountSpec { Destination = "/sys", Type = "sysfs", Source = "sysfs", Options = ["nosuid", "noexec", "nodev", "ro"] }),
        WithMount(new MountSpec { Destination = "/sys/fs/cgroup", Type = "cgroup", Source = "cgroup", Options = ["nosuid", "noexec", "nodev", "relatime", "ro"] }),
        WithMount(new MountSpec { Destination = "/tmp", Type = "tmpfs", Source = "tmpfs", Options = ["nosuid", "nodev", "mode=1777"] }));

    /// <summary>Host directories bound into the container: recursive, never setuid or device files.</summary>
    public static SpecOpt WithBindMounts(IEnumerable<BindMount> binds)
    {
        var list = binds.ToList();
        foreach (var b in list)
        {
            if (!Path.IsPathFullyQualified(b.Source)) throw new ArgumentException($"bind mount source \"{b.Source}\" must be absolute", nameof(binds));
            if (!b.Destination.StartsWith('/')) throw new ArgumentException($"bind mount destination \"{b.Destination}\" must be absolute", nameof(binds));
        }
        return Compose(list.Select(b => WithMount(new MountSpec
        {
            Destination = b.Destination,
            Type = "bind",
            Source = b.Source,
            Options = ["rbind", b.ReadOnly ? "ro" : "rw", "nosuid", "nodev"],
        })));
    }

    public static SpecOpt WithNamespaces(params IEnumerable<string> types) => s =>
        Linux(s).Namespaces = types.Select(t => new NamespaceSpec { Type = t }).ToList();

    /// <summary>cgroupfs-driver path ("/batchrunner/ID"), relative to each hierarchy's root.</summary>
    public static SpecOpt WithCgroupsPath(string path)
    {
        if (!path.StartsWith('/')) throw new ArgumentException($"cgroups path \"{path}\" must be absolute", nameof(path));
        return s => Linux(s).CgroupsPath = path;
    }

    public static SpecOpt WithCpus(double cpus)
    {
        if (!(cpus > 0) || double.IsInfinity(cpus)) throw new ArgumentOutOfRangeException(nameof(cpus), cpus, "cpus must be positive");
        var quota = (long)Math.Round(cpus * CpuPeriodMicros, MidpointRounding.AwayFromZero);
        if (quota < MinCpuQuotaMicros)
            throw new ArgumentOutOfRangeException(nameof(cpus), cpus, string.Create(CultureInfo.InvariantCulture, $"cpus {cpus} is below the kernel's minimum of {MinCpuQuotaMicros / (double)CpuPeriodMicros}"));
        return s =>
        {
            var cpu = Resources(s).Cpu ??= new CpuSpec();
            cpu.Quota = quota;
            cpu.Period = CpuPeriodMicros;
        };
    }

    /// <summary>Memory limit with swap off: memory+swap is set to the same value.</summary>
    public static SpecOpt WithMemoryLimit(long bytes)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "memory limit must be positive");
        return s => Resources(s).Memory = new MemorySpec { Limit = bytes, Swap = bytes };
    }

    public static SpecOpt WithPidsLimit(long limit)
    {
        if (limit <= 0) throw new ArgumentOutOfRangeException(nameof(limit), limit, "pids limit must be positive");
        return s => Resources(s).Pids = new PidsSpec { Limit = limit };
    }

    /// <summary>Denies every device first; runc appends its default allow list (null, zero, full, random,
    /// urandom, tty, pts), so only those and devices allowed by later rules can be opened.</summary>
    public static SpecOpt WithDenyAllDevices() => s =>
    {
        var devices = Resources(s).Devices ??= [];
        devices.RemoveAll(d => !d.Allow && d.Type is null && d.Major is null && d.Minor is null);
        devices.Insert(0, new DeviceCgroupSpec { Allow = false, Access = "rwm" });
    };

    public static SpecOpt WithMaskedPaths(IEnumerable<string> paths) => s => Linux(s).MaskedPaths = [.. paths];

    public static SpecOpt WithReadonlyPaths(IEnumerable<string> paths) => s => Linux(s).ReadonlyPaths = [.. paths];

    /// <summary>Sets linux.seccomp to a profile in OCI JSON form, replacing the default one (<see cref="SeccompProfiles"/>).</summary>
    public static SpecOpt WithSeccomp(System.Text.Json.Nodes.JsonObject profile) => s => Linux(s).Seccomp = profile;

    public static SpecOpt WithAnnotation(string key, string value) => s => (s.Annotations ??= [])[key] = value;
}
