// The narrow surface of BatchRunner.Runtime that the server uses. Implementations live beside this file.
using BatchRunner.Core;

namespace BatchRunner.Runtime;

/// <summary>What to run and under which limits. Knows nothing of images or jobs: only a rootfs path.</summary>
public sealed partial record ContainerSpec
{
    /// <summary>Runtime container id; also names its cgroup. Must start with the owner's prefix ("br-").</summary>
    public required string Id { get; init; }
    public required string RootfsPath { get; init; }
    public required IReadOnlyList<string> Args { get; init; }
    public IReadOnlyList<string> Env { get; init; } = [];
    public string Cwd { get; init; } = "/";
    public uint Uid { get; init; }
    public uint Gid { get; init; }
    public IReadOnlyList<uint> AdditionalGids { get; init; } = [];
    public string Hostname { get; init; } = "batchrunner";
    /// <summary>CPU time per period (CFS quota = Cpus × period). Null: unlimited.</summary>
    public double? Cpus { get; init; }
    /// <summary>Memory limit; swap is disabled (memory+swap = memory). Null: unlimited.</summary>
    public long? MemoryLimitBytes { get; init; }
    public long? PidsLimit { get; init; }
    /// <summary>
    /// The container's oom_score_adj. Positive by default: when the whole host runs out of memory the kernel
    /// should kill a job, which has its own limit and can be retried, rather than the worker or its database
    /// (which protect themselves with negative values). Without it the container would inherit the worker's.
    /// </summary>
    public int OomScoreAdj { get; init; } = DefaultOomScoreAdj;

    public const int DefaultOomScoreAdj = 500;
    public bool ReadonlyRootfs { get; init; }
    public IReadOnlyList<BindMount> Mounts { get; init; } = [];
    /// <summary>Where the container's /etc/hostname, /etc/hosts and /etc/resolv.conf are written before they are bound
    /// into it (writable: a job may edit them). The job's disk, so that what it writes to them counts against its limit;
    /// null: the bundle. Created if missing; the files (and the directory, once empty) go with the container.</summary>
    public string? NameFilesDir { get; init; }
    /// <summary>The owner of <see cref="NameFilesDir"/> discards its filesystem whole after the container (a job's disk): the
    /// files are left to that, not deleted one by one.</summary>
    public bool NameFilesDiscarded { get; init; }
}

public sealed record BindMount(string Source, string Destination, bool ReadOnly);

/// <summary>
/// Where the container's stdout and stderr are stored: the head files of two stored streams (<see cref="Logs.LogFiles"/>),
/// created or continued, each kept within <see cref="Limits"/>.
/// </summary>
public sealed record ContainerIo(string StdoutPath, string StderrPath)
{
    public Logs.LogLimits Limits { get; init; } = Logs.LogLimits.Unlimited;
}

/// <summary>An OCI runtime (runc, crun) driving containers from bundles.</summary>
public interface IContainerRuntime
{
    /// <summary>"runc" or "crun".</summary>
    string Name { get; }
    string Version { get; }

    /// <summary>
    /// Writes an OCI bundle (config.json) into <paramref name="bundleDir"/> and starts the container.
    /// Returns once the container's process runs. On failure everything it created is removed and a
    /// <see cref="ContainerStartException"/> says why.
    /// </summary>
    Task<IRunningContainer> StartAsync(ContainerSpec spec, string bundleDir, ContainerIo io, CancellationToken ct);

    /// <summary>Kills and deletes every container (and its cgroup) whose id starts with <paramref name="idPrefix"/>.
    /// Called at worker start to remove what a crashed worker left behind. Returns the ids removed.</summary>
    Task<IReadOnlyList<string>> CleanupOrphansAsync(string idPrefix, CancellationToken ct);
}

/// <summary>
/// A started container. Disposing it kills it if still running, deletes it from the runtime (which
/// removes its cgroup) and removes the bundle directory: it is the one owner of those resources.
/// </summary>
public interface IRunningContainer : IAsyncDisposable
{
    string Id { get; }
    /// <summary>Completes when the container's main process has exited and its output is stored. Cancelling
    /// <paramref name="ct"/> stops waiting, not the container.</summary>
    Task<ExitResult> WaitAsync(CancellationToken ct);
    /// <summary>Completes when the container's output first went over <see cref="ContainerIo.Limits"/> and bytes of it
    /// were dropped (or the disk refused them); never completes otherwise.</summary>
    Task LogsTruncated { get; }
    /// <summary>SIGKILL to every process of the container. Idempotent.</summary>
    Task KillAsync(CancellationToken ct);
    /// <summary>
    /// Asks the container to stop: <paramref name="signal"/> (a <see cref="StopSignal"/> name) to its main process, then,
    /// when it has not exited within <paramref name="grace"/>, SIGKILL to every process (at once for a zero grace).
    /// Completes once its main process has exited. Cancelling <paramref name="ct"/> cuts the grace short (SIGKILL).
    /// </summary>
    Task<StopResult> StopAsync(string signal, TimeSpan grace, CancellationToken ct);
    /// <summary>Usage from the cgroup; valid while running and after exit until disposal.</summary>
    ResourceUsage ReadUsage();
}

public sealed class ContainerStartException(string message, Exception? inner = null) : Exception(message, inner);
