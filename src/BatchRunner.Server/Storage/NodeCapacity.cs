using BatchRunner.Core;

namespace BatchRunner.Server.Storage;

/// <summary>What a node offers to jobs. Published with the node record; admission never exceeds it.</summary>
public sealed record NodeCapacity(double Cpus, long MemoryBytes, int Gpus)
{
    public IReadOnlyList<string> GpuModels { get; init; } = [];
    public IReadOnlyList<string> NetworkModes { get; init; } = ["none"];

    /// <summary>Why <paramref name="request"/> can never fit this node, or null if it can.</summary>
    public string? WhyNeverFits(ResourceRequest request, int gpus = 0) =>
        request.Cpus > Cpus + 1e-9 ? $"{request.Cpus} CPUs requested, node has {Cpus}"
        : request.MemoryBytes > MemoryBytes ? $"{Quantity.FormatBytes(request.MemoryBytes)} memory requested, node has {Quantity.FormatBytes(MemoryBytes)}"
        : gpus > Gpus ? $"{gpus} GPUs requested, node has {Gpus}"
        : null;

    public static NodeCapacity FromMachine(double? cpus, long? memoryBytes) =>
        new(cpus ?? Environment.ProcessorCount, memoryBytes ?? MachineMemoryBytes(), 0);

    /// <summary>MemTotal from /proc/meminfo, less a reserve for the host itself.</summary>
    public static long MachineMemoryBytes()
    {
        foreach (var line in File.ReadLines("/proc/meminfo"))
        {
            if (!line.StartsWith("MemTotal:", StringComparison.Ordinal)) continue;
            var kb = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
            var total = kb * 1024;
            return total - Math.Min(total / 10, 2L << 30);
        }
        return 1L << 30;
    }
}
