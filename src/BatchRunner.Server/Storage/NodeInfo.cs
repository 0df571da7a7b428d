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
    IReadOnlyList<Guid> RunningJobs)
{
    /// <summary>What the node lets jobs ask for (network modes, capabilities, dataset names); null for a node of a
    /// version that did not publish it.</summary>
    public NodePolicy? Policy { get; init; }
}

public sealed record NodeAllocation(double Cpus, long MemoryBytes, int Gpus);

/// <summary>A live node as submission sees it: enough to tell whether a job could ever run there.</summary>
public sealed record LiveNode(string Name, IReadOnlyDictionary<string, string> Labels, NodeCapacity Capacity)
{
    /// <summary>Null for a node of a version that did not publish one: submission then leaves the check to the node.</summary>
    public NodePolicy? Policy { get; init; }
}
