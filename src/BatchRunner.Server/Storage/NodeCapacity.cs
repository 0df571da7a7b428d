namespace BatchRunner.Server.Storage;

/// <summary>
/// What a node offers to jobs, as its node record stores it (JSON in batchrunner.nodes.capacity) and
/// GET /api/v1/nodes shows it. Admission never exceeds it (Scheduling/NodeReservations); whether a job
/// could ever run on it is Scheduling/NodeFit's question.
/// </summary>
/// <param name="Gpus">GPUs offered; <see cref="GpuModels"/> names their models (each once).</param>
public sealed record NodeCapacity(double Cpus, long MemoryBytes, int Gpus)
{
    public IReadOnlyList<string> GpuModels { get; init; } = [];
    public IReadOnlyList<string> NetworkModes { get; init; } = ["none"];
}
