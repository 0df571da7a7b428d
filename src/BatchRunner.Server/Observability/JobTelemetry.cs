using BatchRunner.Runtime;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Observability;

/// <summary>
/// What the executor tells the metrics side about a job's container. One instance per process.
/// <see cref="TrackContainer"/> starts per-container series; disposing the handle removes them, so
/// series never outlive their job.
/// </summary>
public sealed class JobTelemetry
{
    /// <summary>Called once the container runs. The handle is disposed when the container is gone.</summary>
    public IDisposable TrackContainer(JobRecord job, string node, ContainerSpec spec, IRunningContainer container) => NoopHandle.Instance;

    private sealed class NoopHandle : IDisposable
    {
        public static readonly NoopHandle Instance = new();
        public void Dispose() { }
    }
}
