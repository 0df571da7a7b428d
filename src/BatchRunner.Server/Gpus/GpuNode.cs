using BatchRunner.Runtime.Gpus;
using BatchRunner.Server.Hosting;

namespace BatchRunner.Server.Gpus;

/// <summary>
/// This worker's GPUs: the inventory found at start-up and their metrics. Which job holds which GPU is
/// Scheduling/NodeReservations' business, with the node's CPUs and memory.
/// </summary>
public sealed partial class GpuNode(GpuInventory inventory, GpuMonitor monitor)
{
    public GpuInventory Inventory { get; } = inventory;
    public GpuMonitor Monitor { get; } = monitor;

    /// <summary>Finds this node's GPUs once (CDI specs, else NVIDIA discovery); never fails for a node without a driver.</summary>
    public static async Task<GpuInventory> DiscoverAsync(GpuOptions options, ILogger log, CancellationToken ct)
    {
        if (!options.Enabled) return GpuInventory.None;
        var discovery = new GpuDiscoveryOptions();
        if (options.CdiDirectories is { Length: > 0 } dirs) discovery = discovery with { CdiDirectories = dirs };
        if (options.NvidiaSmiPath is { } smi) discovery = discovery with { NvidiaSmiPath = smi };
        var inventory = await GpuInventory.DiscoverAsync(discovery, log, ct);
        LogInventory(log, inventory.Gpus.Count, inventory.Source, string.Join(", ", inventory.Gpus.Select(g => $"{g.Index}:{g.Model}:{g.Uuid}")));
        foreach (var w in inventory.Warnings) LogWarning(log, w);
        return inventory;
    }

    public static IGpuMetricsSource? MetricsSource(GpuOptions options, GpuInventory inventory, ILogger log)
    {
        if (inventory.Gpus.Count == 0) return null;
        var source = options.NvidiaSmiPath is { } smi ? new NvidiaSmiMetricsSource(smi) : GpuMetricsSources.Create(out var why);
        if (source is null) LogNoMetrics(log);
        return source;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "GPUs: {Count} from {Source} [{Gpus}]")]
    private static partial void LogInventory(ILogger log, int count, string source, string gpus);

    [LoggerMessage(Level = LogLevel.Warning, Message = "GPU discovery: {Warning}")]
    private static partial void LogWarning(ILogger log, string warning);

    [LoggerMessage(Level = LogLevel.Warning, Message = "GPUs found but neither NVML nor nvidia-smi can sample them: no GPU metrics")]
    private static partial void LogNoMetrics(ILogger log);
}
