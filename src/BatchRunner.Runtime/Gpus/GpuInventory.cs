using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BatchRunner.Runtime.Gpus;

/// <summary>Where <see cref="GpuInventory.DiscoverAsync"/> looks. Every path is configurable so tests can point it at captured trees.</summary>
public sealed record GpuDiscoveryOptions
{
    /// <summary>CDI spec directories, lowest priority first (a later directory's device of the same name wins), as CDI orders them.</summary>
    public IReadOnlyList<string> CdiDirectories { get; init; } = ["/etc/cdi", "/var/run/cdi"];
    /// <summary>The CDI kind whose devices are GPUs.</summary>
    public string CdiKind { get; init; } = "nvidia.com/gpu";
    /// <summary>False: ignore CDI specs even when present.</summary>
    public bool UseCdi { get; init; } = true;
    /// <summary>False: no NVIDIA discovery (no CDI spec means no GPUs).</summary>
    public bool UseNvidiaDiscovery { get; init; } = true;
    public string DevDirectory { get; init; } = "/dev";
    public string ProcDriverDirectory { get; init; } = "/proc/driver/nvidia";
    /// <summary>Null: the first of /usr/bin/nvidia-smi, /usr/local/bin/nvidia-smi, /bin/nvidia-smi that exists.</summary>
    public string? NvidiaSmiPath { get; init; }
    /// <summary>Host ldconfig; `ldconfig -p` lists the driver's libraries.</summary>
    public string LdconfigPath { get; init; } = "/sbin/ldconfig";
    /// <summary>Directories searched for the driver's tools (nvidia-smi, …).</summary>
    public IReadOnlyList<string> BinaryDirectories { get; init; } = ["/usr/bin", "/usr/local/bin", "/usr/local/nvidia/bin", "/bin", "/usr/sbin"];
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromSeconds(20);
}

/// <summary>
/// The GPUs of this node and the edits every GPU container gets (control nodes, driver libraries, tools,
/// hooks). <see cref="Source"/> says where it came from; <see cref="Warnings"/> lists what was skipped.
/// </summary>
public sealed record GpuInventory(IReadOnlyList<Gpu> Gpus, GpuContainerEdits Common, string Source, IReadOnlyList<string> Warnings)
{
    public static readonly GpuInventory None = new([], GpuContainerEdits.Empty, "none", []);

    public GpuCapacity Capacity => GpuCapacity.Of(Gpus);

    /// <summary>
    /// CDI specs of <see cref="GpuDiscoveryOptions.CdiKind"/> when any exist (as `nvidia-ctk cdi generate`
    /// writes them; model and memory are then filled in from NVIDIA discovery by UUID or device minor when
    /// the driver is there); otherwise NVIDIA discovery: /dev/nvidiaN, /proc/driver/nvidia/gpus/*/information
    /// and `nvidia-smi`, driver libraries from `ldconfig -p`. A node without GPUs gives <see cref="None"/>;
    /// discovery never throws for a missing driver.
    /// </summary>
    public static async Task<GpuInventory> DiscoverAsync(GpuDiscoveryOptions options, ILogger? logger = null, CancellationToken ct = default)
    {
        logger ??= NullLogger.Instance;
        var warnings = new List<string>();
        NvidiaDiscovery.Result? nvidia = null;
        if (options.UseNvidiaDiscovery)
        {
            try { nvidia = await NvidiaDiscovery.DiscoverAsync(options, warnings, ct); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or TimeoutException or System.ComponentModel.Win32Exception)
            {
                warnings.Add($"NVIDIA discovery failed: {e.Message}");
            }
        }

        GpuInventory inventory;
        if (options.UseCdi && CdiSpecs.Load(options.CdiDirectories, options.CdiKind, warnings) is { Devices.Count: > 0 } cdi)
            inventory = cdi.ToInventory(nvidia, warnings);
        else if (nvidia is { Gpus.Count: > 0 })
            inventory = new GpuInventory(nvidia.Gpus, nvidia.Common, nvidia.Source, warnings);
        else
            inventory = None with { Warnings = warnings };

        foreach (var w in warnings) GpuLog.DiscoveryWarning(logger, w);
        GpuLog.Discovered(logger, inventory.Gpus.Count, inventory.Source, string.Join(", ", inventory.Gpus.Select(g => g.ToString())));
        return inventory;
    }
}
