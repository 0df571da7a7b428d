using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace BatchRunner.Runtime.Spec;

// The parts of the OCI runtime spec (config.json, runtime-spec 1.0.2) that BatchRunner sets.
// Property names follow the spec exactly via the camelCase policy; null members are omitted, so an
// option that does not run leaves its section out and the runtime applies its own default.

public sealed class RuntimeSpec
{
    public string OciVersion { get; set; } = "1.0.2";
    public ProcessSpec? Process { get; set; }
    public RootSpec? Root { get; set; }
    public string? Hostname { get; set; }
    public List<MountSpec>? Mounts { get; set; }
    public LinuxSpec? Linux { get; set; }
    public HooksSpec? Hooks { get; set; }
    public Dictionary<string, string>? Annotations { get; set; }

    // Compact: only the runtime reads it (indenting a trivial job's config.json was a visible part of its CPU).
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>config.json's bytes (UTF-8), as the runtime reads them.</summary>
    public byte[] ToUtf8Json() => JsonSerializer.SerializeToUtf8Bytes(this, JsonOptions);

    public static RuntimeSpec FromJson(string json) =>
        JsonSerializer.Deserialize<RuntimeSpec>(json, JsonOptions) ?? throw new JsonException("config.json is null");
}

public sealed class ProcessSpec
{
    public bool Terminal { get; set; }
    public UserSpec User { get; set; } = new();
    public List<string> Args { get; set; } = [];
    public List<string>? Env { get; set; }
    public string Cwd { get; set; } = "/";
    public CapabilitiesSpec? Capabilities { get; set; }
    public List<RlimitSpec>? Rlimits { get; set; }
    public bool NoNewPrivileges { get; set; }
    /// <summary>The process's /proc/PID/oom_score_adj (-1000..1000); null: inherited from the runtime's caller.</summary>
    public int? OomScoreAdj { get; set; }
}

public sealed class UserSpec
{
    public uint Uid { get; set; }
    public uint Gid { get; set; }
    public List<uint>? AdditionalGids { get; set; }
}

/// <summary>Capability sets; an empty list means "none", which is what BatchRunner jobs get.</summary>
public sealed class CapabilitiesSpec
{
    public List<string> Bounding { get; set; } = [];
    public List<string> Effective { get; set; } = [];
    public List<string> Permitted { get; set; } = [];
    public List<string> Inheritable { get; set; } = [];
    public List<string> Ambient { get; set; } = [];
}

public sealed class RlimitSpec
{
    public required string Type { get; set; }
    public ulong Hard { get; set; }
    public ulong Soft { get; set; }
}

public sealed class RootSpec
{
    public required string Path { get; set; }
    public bool Readonly { get; set; }
}

public sealed class MountSpec
{
    public required string Destination { get; set; }
    public required string Type { get; set; }
    public required string Source { get; set; }
    public List<string>? Options { get; set; }
}

public sealed class LinuxSpec
{
    public List<NamespaceSpec>? Namespaces { get; set; }
    public string? CgroupsPath { get; set; }
    /// <summary>Device nodes the runtime creates in the container's /dev (opening them still needs an allow rule in Resources.Devices).</summary>
    public List<LinuxDeviceSpec>? Devices { get; set; }
    public ResourcesSpec? Resources { get; set; }
    public List<string>? MaskedPaths { get; set; }
    public List<string>? ReadonlyPaths { get; set; }
    /// <summary>linux.seccomp; kept as raw JSON until a profile model is needed (a seccomp option sets it).</summary>
    [JsonConverter(typeof(SeccompJsonConverter))]
    public JsonObject? Seccomp { get; set; }
    public List<IdMappingSpec>? UidMappings { get; set; }
    public List<IdMappingSpec>? GidMappings { get; set; }
}

/// <summary>One range of a user namespace's id map.</summary>
public sealed class IdMappingSpec
{
    public uint ContainerId { get; set; }
    public uint HostId { get; set; }
    public uint Size { get; set; }
}

public sealed class NamespaceSpec
{
    public required string Type { get; set; }
    public string? Path { get; set; }
}

public sealed class ResourcesSpec
{
    public List<DeviceCgroupSpec>? Devices { get; set; }
    public MemorySpec? Memory { get; set; }
    public CpuSpec? Cpu { get; set; }
    public PidsSpec? Pids { get; set; }
}

public sealed class DeviceCgroupSpec
{
    public bool Allow { get; set; }
    public string? Type { get; set; }
    public long? Major { get; set; }
    public long? Minor { get; set; }
    public string? Access { get; set; }
}

public sealed class MemorySpec
{
    public long? Limit { get; set; }
    /// <summary>Memory+swap limit (runc semantics); equal to Limit means no swap.</summary>
    public long? Swap { get; set; }
}

public sealed class CpuSpec
{
    public long? Quota { get; set; }
    public ulong? Period { get; set; }
    public ulong? Shares { get; set; }
    /// <summary>cpuset.cpus ("0-1").</summary>
    public string? Cpus { get; set; }
    public string? Mems { get; set; }
}

public sealed class PidsSpec
{
    public long Limit { get; set; }
}
