using System.Text.Json;

namespace BatchRunner.Core;

public sealed partial record JobSubmission
{
    /// <summary>none (default) | host | bridge.</summary>
    public string? Network { get; init; }
    /// <summary>Capability names, with or without "CAP_" ("NET_BIND_SERVICE").</summary>
    public List<string>? Capabilities { get; init; }
    public bool? RootfsReadonly { get; init; }
    /// <summary>{"nofile": 4096}: soft = hard.</summary>
    public Dictionary<string, long>? Ulimits { get; init; }
    /// <summary>A quantity ("256Mi") or integer bytes.</summary>
    public JsonElement? ShmSize { get; init; }
    public List<VolumeSubmission>? Volumes { get; init; }
}

public sealed record VolumeSubmission
{
    /// <summary>Name of a dataset the node's admin configured.</summary>
    public string? Dataset { get; init; }
    /// <summary>Absolute path inside the container.</summary>
    public string? Path { get; init; }
}

public sealed partial record ResourceSubmission
{
    public long? CpuShares { get; init; }
    public string? Cpuset { get; init; }
}
