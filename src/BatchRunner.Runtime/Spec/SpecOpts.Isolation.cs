using System.Globalization;

namespace BatchRunner.Runtime.Spec;

public static partial class SpecOpts
{
    public const long DefaultShmBytes = 64L * 1024 * 1024;

    /// <summary>Gives the process exactly these capabilities (names with or without "CAP_"), in every set.
    /// Ambient and inheritable are set too: without them a non-root user would lose them at exec.</summary>
    public static SpecOpt WithCapabilities(IEnumerable<string> names)
    {
        var caps = names.Select(n => n.StartsWith("CAP_", StringComparison.Ordinal) ? n : "CAP_" + n).Distinct().ToList();
        return s => Process(s).Capabilities = new CapabilitiesSpec
        {
            Bounding = [.. caps], Effective = [.. caps], Permitted = [.. caps], Inheritable = [.. caps], Ambient = [.. caps],
        };
    }

    /// <summary>Sets the size of the /dev/shm tmpfs (the mount from <see cref="WithDefaultMounts"/>).</summary>
    public static SpecOpt WithShmSize(long bytes)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "shm size must be positive");
        var kib = (bytes + 1023) / 1024;
        return WithMount(new MountSpec
        {
            Destination = "/dev/shm", Type = "tmpfs", Source = "shm",
            Options = ["nosuid", "noexec", "nodev", "mode=1777", string.Create(CultureInfo.InvariantCulture, $"size={kib}k")],
        });
    }

    /// <summary>Relative CPU weight (v1 cpu.shares; runc converts it to cpu.weight on v2).</summary>
    public static SpecOpt WithCpuShares(ulong shares)
    {
        if (shares is < 2 or > 262_144) throw new ArgumentOutOfRangeException(nameof(shares), shares, "cpu shares must be between 2 and 262144");
        return s => (Resources(s).Cpu ??= new CpuSpec()).Shares = shares;
    }

    /// <summary>Pins the container to a CPU list ("0-1"); memory nodes are inherited from the parent cgroup.</summary>
    public static SpecOpt WithCpuset(string cpus)
    {
        if (string.IsNullOrWhiteSpace(cpus) || cpus.Any(c => !(char.IsAsciiDigit(c) || c is ',' or '-')))
            throw new ArgumentException($"cpuset \"{cpus}\" is not a CPU list such as \"0-1\"", nameof(cpus));
        return s => (Resources(s).Cpu ??= new CpuSpec()).Cpus = cpus;
    }

    /// <summary>Joins the host's network namespace: no network namespace entry at all.</summary>
    public static SpecOpt WithHostNetwork() => s =>
        Linux(s).Namespaces?.RemoveAll(n => n.Type == "network");

    /// <summary>Joins an existing network namespace (a bind-mounted netns file that someone else owns and removes).</summary>
    public static SpecOpt WithNetworkNamespacePath(string path)
    {
        if (!Path.IsPathFullyQualified(path)) throw new ArgumentException($"netns path \"{path}\" must be absolute", nameof(path));
        return s =>
        {
            var ns = Linux(s).Namespaces ??= [];
            ns.RemoveAll(n => n.Type == "network");
            ns.Add(new NamespaceSpec { Type = "network", Path = path });
        };
    }

    /// <summary>A user namespace in which container ids 0..size-1 are host ids hostUid..hostUid+size-1
    /// (and the same for gids): the container's root is an unprivileged user on the host.</summary>
    public static SpecOpt WithUserNamespace(uint hostUid, uint hostGid, uint size)
    {
        if (size == 0) throw new ArgumentOutOfRangeException(nameof(size), size, "a user namespace needs at least one id");
        return s =>
        {
            var l = Linux(s);
            var ns = l.Namespaces ??= [];
            if (!ns.Any(n => n.Type == "user")) ns.Add(new NamespaceSpec { Type = "user" });
            l.UidMappings = [new IdMappingSpec { ContainerId = 0, HostId = hostUid, Size = size }];
            l.GidMappings = [new IdMappingSpec { ContainerId = 0, HostId = hostGid, Size = size }];
        };
    }

    /// <summary>BatchRunner's default seccomp profile (<see cref="SeccompProfiles.Default"/>; the one shared instance).</summary>
    public static SpecOpt WithDefaultSeccomp() => s => Linux(s).Seccomp = SeccompProfiles.Shared;
}

public static partial class SpecOpts
{
    /// <summary>The isolation part of a container's spec: seccomp, requested capabilities, rlimits, /dev/shm,
    /// CPU weight and pinning, network mode (a bridge's netns path is added by the runtime, which owns it).</summary>
    public static IEnumerable<SpecOpt> ForIsolation(ContainerSpec c)
    {
        yield return WithDefaultSeccomp();
        if (c.Capabilities.Count > 0) yield return WithCapabilities(c.Capabilities);
        foreach (var (type, value) in c.Rlimits) yield return WithRlimit(type, value, value);
        if (c.ShmSizeBytes is { } shm) yield return WithShmSize(shm);
        if (c.CpuShares is { } shares) yield return WithCpuShares(shares);
        if (c.Cpuset is { } cpuset) yield return WithCpuset(cpuset);
        if (c.Network == ContainerNetworkMode.Host) yield return WithHostNetwork();
    }
}
