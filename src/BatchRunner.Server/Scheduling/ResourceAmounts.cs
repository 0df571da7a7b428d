using BatchRunner.Core;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Scheduling;

/// <summary>
/// The quantities admission counts, as a job asks for them and as a node offers them. Adding a resource (disk is
/// next) is a field here, its lines in <see cref="Of(ResourceRequest)"/>, <see cref="Of(NodeCapacity)"/>, the
/// operators and <see cref="FitsWithin"/>, and one entry in <see cref="NodeFit"/>'s list of dimensions (its
/// field name and how to print it); <see cref="NodeReservations"/> then reserves it with the others.
/// </summary>
public readonly record struct ResourceAmounts(double Cpus, long MemoryBytes, int Gpus)
{
    /// <summary>CPU fractions (0.1 + 0.2) do not add up exactly in binary: a sum within this of a limit is at the limit.</summary>
    public const double CpuTolerance = 1e-9;

    public static readonly ResourceAmounts Zero = default;

    public static ResourceAmounts Of(ResourceRequest request) => new(request.Cpus, request.MemoryBytes, request.Gpus);

    public static ResourceAmounts Of(NodeCapacity capacity) => new(capacity.Cpus, capacity.MemoryBytes, capacity.Gpus);

    public static ResourceAmounts operator +(ResourceAmounts a, ResourceAmounts b) => new(a.Cpus + b.Cpus, a.MemoryBytes + b.MemoryBytes, a.Gpus + b.Gpus);

    public static ResourceAmounts operator -(ResourceAmounts a, ResourceAmounts b) => new(a.Cpus - b.Cpus, a.MemoryBytes - b.MemoryBytes, a.Gpus - b.Gpus);

    /// <summary>True when every amount is at most <paramref name="limit"/>'s.</summary>
    public bool FitsWithin(ResourceAmounts limit) =>
        Cpus <= limit.Cpus + CpuTolerance && MemoryBytes <= limit.MemoryBytes && Gpus <= limit.Gpus;
}
