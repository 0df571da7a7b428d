using BatchRunner.Core;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Scheduling;

/// <summary>
/// The quantities admission counts, as a job asks for them and as a node offers them. Adding a resource is a field here, its lines in <see cref="Of(ResourceRequest)"/>, <see cref="Of(NodeCapacity)"/>, the
/// operators and <see cref="FitsWithin"/>, and one entry in <see cref="NodeFit"/>'s list of dimensions (its
/// field name and how to print it); <see cref="NodeReservations"/> then reserves it with the others.
/// </summary>
/// <param name="DiskBytes">resources.disk; a node that does not limit disk offers <see cref="long.MaxValue"/>.</param>
public readonly record struct ResourceAmounts(double Cpus, long MemoryBytes, int Gpus, long DiskBytes = 0)
{
    /// <summary>CPU fractions (0.1 + 0.2) do not add up exactly in binary: a sum within this of a limit is at the limit.</summary>
    public const double CpuTolerance = 1e-9;

    public static readonly ResourceAmounts Zero = default;

    public static ResourceAmounts Of(ResourceRequest request) => new(request.Cpus, request.MemoryBytes, request.Gpus, request.DiskBytes);

    public static ResourceAmounts Of(NodeCapacity capacity) => new(capacity.Cpus, capacity.MemoryBytes, capacity.Gpus, capacity.DiskBytes ?? long.MaxValue);

    public static ResourceAmounts operator +(ResourceAmounts a, ResourceAmounts b) =>
        new(a.Cpus + b.Cpus, a.MemoryBytes + b.MemoryBytes, a.Gpus + b.Gpus, SaturatingAdd(a.DiskBytes, b.DiskBytes));

    public static ResourceAmounts operator -(ResourceAmounts a, ResourceAmounts b) =>
        new(a.Cpus - b.Cpus, a.MemoryBytes - b.MemoryBytes, a.Gpus - b.Gpus, a.DiskBytes - b.DiskBytes);

    /// <summary>True when every amount is at most <paramref name="limit"/>'s.</summary>
    public bool FitsWithin(ResourceAmounts limit) =>
        Cpus <= limit.Cpus + CpuTolerance && MemoryBytes <= limit.MemoryBytes && Gpus <= limit.Gpus && DiskBytes <= limit.DiskBytes;

    // An unlimited disk (long.MaxValue) stays unlimited when added to.
    private static long SaturatingAdd(long a, long b) => a > long.MaxValue - b ? long.MaxValue : a + b;
}
