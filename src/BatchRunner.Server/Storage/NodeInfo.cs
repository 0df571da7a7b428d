namespace BatchRunner.Server.Storage;

/// <summary>A node as GET /api/v1/nodes shows it.</summary>
public sealed record NodeInfo(
    string Name,
    IReadOnlyDictionary<string, string> Labels,
    NodeCapacity Capacity,
    IReadOnlyList<string> Queues,
    bool Alive,
    DateTimeOffset StartedAt,
    DateTimeOffset HeartbeatAt,
    NodeAllocation Allocated,
    IReadOnlyList<Guid> RunningJobs,
    // Its data directory as of its last heartbeat; null for nodes that never published one (older versions).
    NodeDiskRecord? Disk = null)
{
    /// <summary>What the node lets jobs ask for (network modes, capabilities, dataset names); null for a node of a
    /// version that did not publish it.</summary>
    public NodePolicy? Policy { get; init; }
}

/// <param name="DiskBytes">resources.disk granted to its starting and running jobs.</param>
public sealed record NodeAllocation(double Cpus, long MemoryBytes, int Gpus, long DiskBytes = 0)
{
    /// <summary><see cref="MemoryBytes"/> for a person ("1.5Gi").</summary>
    public string Memory => Core.Quantity.Human(MemoryBytes);
}

/// <summary>
/// A node's data directory as its heartbeat publishes it (batchrunner.nodes.disk). <see cref="AvailableBytes"/>: what jobs
/// may be granted there in all now; <see cref="Pressure"/>: why no new job starts there (free space below the
/// reserve), null when jobs may start.
/// </summary>
public sealed record NodeDiskRecord(long TotalBytes, long FreeBytes, long ReserveBytes, long AvailableBytes, string? Pressure);

/// <summary>A live node as submission sees it: enough to tell whether a job could ever run there.</summary>
public sealed record LiveNode(string Name, IReadOnlyDictionary<string, string> Labels, NodeCapacity Capacity)
{
    /// <summary>Null for a node of a version that did not publish one: submission then leaves the check to the node.</summary>
    public NodePolicy? Policy { get; init; }
}
