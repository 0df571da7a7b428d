namespace BatchRunner.Runtime.Gpus;

// The node's GPUs and what a container needs to use them, in the vocabulary of CDI (Container Device
// Interface, github.com/cncf-tags/container-device-interface): each device carries "container edits"
// (device nodes, mounts, env, hooks); edits common to every device of a vendor (control nodes, driver
// libraries) are kept apart and added once per container that gets at least one GPU.

/// <summary>One GPU of this node.</summary>
/// <param name="Index">Position on this node (NVML index, or the CDI device's numeric name); stable while the driver is loaded.</param>
/// <param name="Uuid">"GPU-…" as NVML reports it; for a CDI device without one, "kind=name".</param>
/// <param name="Name">Fully qualified CDI name ("nvidia.com/gpu=0"), or null when found by NVIDIA discovery.</param>
/// <param name="Edits">What this GPU alone adds to a container: its device node(s).</param>
public sealed record Gpu(int Index, string Uuid, string Model, long MemoryBytes, string? PciBusId, string? Name, GpuContainerEdits Edits)
{
    public override string ToString() => $"GPU {Index} {Uuid} ({Model})";
}

/// <summary>A device node to create in the container.</summary>
/// <param name="Path">Path inside the container.</param>
/// <param name="HostPath">Host node whose type and numbers are used (stat at injection time); defaults to <paramref name="Path"/>.</param>
/// <param name="Type">"c" or "b"; null: taken from the host node.</param>
/// <param name="Major">Null: taken from the host node.</param>
/// <param name="Permissions">Device-cgroup access: a combination of r, w, m.</param>
public sealed record GpuDeviceNode(string Path, string? HostPath = null, string? Type = null, long? Major = null, long? Minor = null,
    uint? FileMode = null, string Permissions = "rw")
{
    public string EffectiveHostPath => HostPath ?? Path;
}

/// <summary>A host file or directory bound into the container (driver libraries, nvidia-smi).</summary>
public sealed record GpuMount(string HostPath, string ContainerPath, IReadOnlyList<string> Options)
{
    /// <summary>Read-only, no setuid, no device files: what driver files get.</summary>
    public static readonly IReadOnlyList<string> ReadOnlyOptions = ["ro", "nosuid", "nodev", "bind"];
}

/// <summary>A CDI hook: <paramref name="HookName"/> is the OCI hook list it goes to (prestart, createRuntime,
/// createContainer, startContainer, poststart, poststop).</summary>
public sealed record GpuHook(string HookName, string Path, IReadOnlyList<string> Args, IReadOnlyList<string> Env, int? TimeoutSeconds = null);

/// <summary>CDI container edits: what to add to a container's spec.</summary>
public sealed record GpuContainerEdits
{
    public static readonly GpuContainerEdits Empty = new();

    public IReadOnlyList<GpuDeviceNode> DeviceNodes { get; init; } = [];
    public IReadOnlyList<GpuMount> Mounts { get; init; } = [];
    /// <summary>"KEY=VALUE".</summary>
    public IReadOnlyList<string> Env { get; init; } = [];
    public IReadOnlyList<GpuHook> Hooks { get; init; } = [];

    public bool IsEmpty => DeviceNodes.Count == 0 && Mounts.Count == 0 && Env.Count == 0 && Hooks.Count == 0;

    /// <summary>This followed by <paramref name="other"/>; a later device node or mount replaces an earlier one at the same container path.</summary>
    public GpuContainerEdits Merge(GpuContainerEdits other) => new()
    {
        DeviceNodes = [.. DeviceNodes.Where(d => other.DeviceNodes.All(o => o.Path != d.Path)), .. other.DeviceNodes],
        Mounts = [.. Mounts.Where(m => other.Mounts.All(o => o.ContainerPath != m.ContainerPath)), .. other.Mounts],
        Env = [.. Env, .. other.Env],
        Hooks = [.. Hooks, .. other.Hooks],
    };
}

/// <summary>What a node can offer: published with the node record and shown in /healthz.</summary>
public sealed record GpuCapacity(int Count, IReadOnlyDictionary<string, int> Models, long TotalMemoryBytes, IReadOnlyList<GpuCapacity.Device> Devices)
{
    public sealed record Device(int Index, string Uuid, string Model, long MemoryBytes);

    public static GpuCapacity Of(IReadOnlyList<Gpu> gpus) => new(
        gpus.Count,
        gpus.GroupBy(g => g.Model).OrderBy(g => g.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count()),
        gpus.Sum(g => g.MemoryBytes),
        gpus.Select(g => new Device(g.Index, g.Uuid, g.Model, g.MemoryBytes)).ToList());

    /// <summary>True when <paramref name="model"/> (case-insensitive substring, e.g. "H100") names <paramref name="gpuModel"/>; null matches any.</summary>
    public static bool ModelMatches(string gpuModel, string? model) =>
        string.IsNullOrWhiteSpace(model) || gpuModel.Contains(model.Trim(), StringComparison.OrdinalIgnoreCase);
}
