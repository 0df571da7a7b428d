namespace BatchRunner.Runtime;

public sealed partial record ContainerSpec
{
    /// <summary>Capabilities the process keeps (names without "CAP_"); empty: none. They are put in all five
    /// sets, ambient included, so that a non-root user holds them too.</summary>
    public IReadOnlyList<string> Capabilities { get; init; } = [];

    /// <summary>Resource limits by OCI name ("RLIMIT_NOFILE"), soft = hard. RLIMIT_NOFILE defaults to 1024.</summary>
    public IReadOnlyDictionary<string, ulong> Rlimits { get; init; } = new Dictionary<string, ulong>();

    /// <summary>Size of the /dev/shm tmpfs; null: 64 MiB.</summary>
    public long? ShmSizeBytes { get; init; }

    /// <summary>cgroup v1 cpu.shares (v2: converted to cpu.weight by the runtime); null: the default (1024).</summary>
    public ulong? CpuShares { get; init; }

    /// <summary>CPUs the container may run on ("0-1"); null: all.</summary>
    public string? Cpuset { get; init; }

    public ContainerNetworkMode Network { get; init; } = ContainerNetworkMode.None;
}

public enum ContainerNetworkMode
{
    /// <summary>A network namespace of its own with only loopback.</summary>
    None,
    /// <summary>The host's network namespace: host services on 127.0.0.1 are reachable. Only where the runtime's options allow it.</summary>
    Host,
    /// <summary>A network namespace of its own with a veth on the node's bridge, an address from its subnet and NAT for egress.</summary>
    Bridge,
}
