namespace BatchRunner.Server.Storage;

/// <summary>
/// What a node offers to jobs, as its node record stores it (JSON in batchrunner.nodes.capacity) and
/// GET /api/v1/nodes shows it. Admission never exceeds it (Scheduling/NodeReservations); whether a job
/// could ever run on it is Scheduling/NodeFit's question.
/// </summary>
/// <param name="Gpus">GPUs offered; <see cref="GpuModels"/> names their models (each once).</param>
public sealed record NodeCapacity(double Cpus, long MemoryBytes, int Gpus)
{
    /// <summary><see cref="MemoryBytes"/> for a person ("21.5Gi"); computed, never read back.</summary>
    public string Memory => Core.Quantity.Human(MemoryBytes);

    public IReadOnlyList<string> GpuModels { get; init; } = [];
    public IReadOnlyList<string> NetworkModes { get; init; } = ["none"];
    /// <summary>The most disk (resources.disk) one job may be granted: the data directory's filesystem less the free-space
    /// reserve. Null: the node gives jobs no size-limited disk (an older node, or Disk:Enforce=false), so disk is not counted.</summary>
    public long? DiskBytes { get; init; }
}

/// <summary>
/// What a node lets its jobs ask for, as its node record publishes it (JSON in batchrunner.nodes.policy): network
/// modes, capabilities (normalised, without CAP_) and the names of its datasets (never their host paths).
/// Submission checks a job against the live nodes' policies; a node checks its own again at admission
/// (Scheduling/NodeFit) and its runtime once more at start.
/// </summary>
public sealed record NodePolicy(IReadOnlyList<string> NetworkModes, IReadOnlyList<string> Capabilities, IReadOnlyList<string> Datasets);
