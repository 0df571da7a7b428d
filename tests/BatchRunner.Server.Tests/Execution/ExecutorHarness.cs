using BatchRunner.Core;
using BatchRunner.Runtime.Gpus;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Execution.Phases;
using BatchRunner.Server.Gpus;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;
using BatchRunner.Testing.Fakes;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace BatchRunner.Server.Tests.Execution;

/// <summary>
/// The real <see cref="JobExecutor"/>, <see cref="AttemptRunner"/> and phases on fakes of everything below them:
/// image store, snapshotter, container runtime, job store, time, fencing and the host's lifetime. A decision
/// test runs in milliseconds, needs no root, registry, runc or database, and controls every signal.
/// </summary>
internal sealed class ExecutorHarness : IDisposable
{
    public const int GraceSeconds = 30;

    private readonly CancellationTokenSource _fence = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly JobTelemetry _telemetry = new();

    public ExecutorHarness()
    {
        Root = Directory.CreateTempSubdirectory("br-executor-").FullName;
        var layer = Directory.CreateDirectory(Path.Combine(Root, "layer")).FullName;
        Images = new FakeImageStore(layer);
        Paths = new DataPaths(Path.Combine(Root, "data"));
        var node = NodeIdentity.For("executor-" + Guid.NewGuid().ToString("N")[..6], Paths.Root);
        var options = Microsoft.Extensions.Options.Options.Create(new BatchRunnerOptions { ShutdownGraceSeconds = GraceSeconds, NodeName = node.Name });
        Disk = new NodeDisk(Paths.Root, ReserveBytes, read: _ => new BatchRunner.Runtime.Disk.FilesystemSpace(DiskTotalBytes, DiskFreeBytes));
        Reservations = new NodeReservations(node.Name, new NodeCapacity(4, 8L << 30, 0), [], Disk);
        var gpus = new GpuNode(GpuInventory.None, new GpuMonitor(null, new GpuMetricsPublisher(node.Name, []), TimeSpan.FromSeconds(5), NullLogger<GpuMonitor>.Instance));
        var runner = new AttemptRunner(
            new InputsPhase(Paths, Inputs, options, NullLogger<InputsPhase>.Instance),
            new InputsFromPhase(Store, Paths, node, NodeFiles, new ListLogger<InputsFromPhase>()),
            new ImagePhase(Images, Store),
            new DiskPhase(Disk, options, Volumes),
            new RootfsPhase(Snapshotter, NullLogger<RootfsPhase>.Instance),
            new ContainerPhase(Runtime, Store, Store, Paths, node, _telemetry, gpus, Live, options, Time, ContainerLog),
            new OutputsPhase(Paths, NullLogger<OutputsPhase>.Instance),
            Store, Paths, node, Time, RunnerLog);
        Executor = new JobExecutor(Store, runner, Reservations, new NoCluster(), node, new Fence(_fence.Token), new Lifetime(_stopping.Token), options, ExecutorLog);
    }

    public string Root { get; }
    public DataPaths Paths { get; }
    public FakeImageStore Images { get; }
    public FakeSnapshotter Snapshotter { get; } = new();
    public FakeInputsSource Inputs { get; } = new();
    public FakeContainerRuntime Runtime { get; } = new();
    public FakeDiskVolumes Volumes { get; } = new();
    public NodeDisk Disk { get; }
    public const long DiskTotalBytes = 100L << 30;
    public const long ReserveBytes = 5L << 30;
    /// <summary>What the data directory's filesystem has free (statvfs), as the test sets it.</summary>
    public long DiskFreeBytes { get; set; } = 80L << 30;
    public FakeAttemptStore Store { get; } = new();
    /// <summary>Other nodes' job files, as <see cref="InputsPhase"/> fetches them.</summary>
    public FakeNodeFiles NodeFiles { get; } = new();
    /// <summary>Starts at the real time; only <see cref="FakeTimeProvider.Advance"/> moves it (timeouts, the grace period, polls).</summary>
    public TimerCountingTimeProvider Time { get; } = new(DateTimeOffset.UtcNow);
    public NodeReservations Reservations { get; }
    /// <summary>The running containers whose usage is published while they run.</summary>
    public LiveUsage Live { get; } = new();
    public JobExecutor Executor { get; }
    public ListLogger<ContainerPhase> ContainerLog { get; } = new();
    public ListLogger<AttemptRunner> RunnerLog { get; } = new();
    public ListLogger<JobExecutor> ExecutorLog { get; } = new();

    /// <summary>Stores a queued job made from <paramref name="submission"/> (running as this process's user, so that
    /// giving it its /outputs needs no root) and returns its id.</summary>
    public Guid AddJob(JobSubmission submission)
    {
        var result = JobSpecValidator.Validate(submission with { User = submission.User ?? CurrentUser() });
        var spec = result.Spec ?? throw new ArgumentException(string.Join("; ", result.Errors.SelectMany(e => e.Value)));
        var id = Guid.CreateVersion7();
        Store.Add(new JobRecord { Id = id, Image = spec.Image, Queue = spec.Queue, Spec = spec, State = JobState.Queued, CreatedAt = DateTimeOffset.UtcNow });
        return id;
    }

    public static JobSubmission Job(int timeoutSeconds = 60, RetrySubmission? retry = null) =>
        new() { Image = "registry.test/job:1", Command = ["work"], TimeoutSeconds = timeoutSeconds, Retry = retry };

    /// <summary>One delivery of the job, as Hangfire makes it (with its token).</summary>
    public Task ExecuteAsync(Guid id, CancellationToken hangfire = default) => Executor.ExecuteAsync(id, hangfire);

    /// <summary>This node stops proving it is alive.</summary>
    public void FenceNode() => _fence.Cancel();

    /// <summary>The host begins to stop (SIGTERM).</summary>
    public void StopHost() => _stopping.Cancel();

    /// <summary>Every resource an attempt took is back: no container, no rootfs, no disk, no run directory, no reservation.</summary>
    public void AssertNothingHeld()
    {
        Assert.Equal(0, Runtime.Live);
        Assert.Equal(0, Snapshotter.Mounted);
        Assert.Equal(0, Volumes.Live);
        Assert.Equal(0, Disk.Read().JobsBytes);
        Assert.Empty(Directory.Exists(Paths.RunRoot) ? Directory.GetFileSystemEntries(Paths.RunRoot) : []);
        Assert.Equal(ResourceAmounts.Zero, Reservations.Allocated);
    }

    /// <summary>Waits until the container phase logs a line containing <paramref name="text"/>.</summary>
    public Task WaitForLogAsync(string text) =>
        BatchRunner.Testing.Poll.UntilAsync(() => ContainerLog.Lines.Any(l => l.Contains(text, StringComparison.Ordinal)), TimeSpan.FromSeconds(10), $"log line \"{text}\"", 5);

    public void Dispose()
    {
        _telemetry.Dispose();
        NodeMetrics.Remove(Reservations.NodeName);
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }

    private static string CurrentUser()
    {
        string Field(string name) => File.ReadLines("/proc/self/status").First(l => l.StartsWith(name, StringComparison.Ordinal)).Split('\t', StringSplitOptions.RemoveEmptyEntries)[1];
        return $"{Field("Uid:")}:{Field("Gid:")}";
    }

    /// <summary>A <see cref="FakeTimeProvider"/> that knows which of its timers are still alive (created and not disposed),
    /// by their due time: a wait that ends leaves none of its own behind.</summary>
    public sealed class TimerCountingTimeProvider(DateTimeOffset start) : FakeTimeProvider(start)
    {
        private readonly List<Counted> _live = [];

        /// <summary>The due times of the timers not yet disposed.</summary>
        public IReadOnlyList<TimeSpan> LiveDueTimes { get { lock (_live) return _live.Select(t => t.DueTime).ToList(); } }

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = new Counted(base.CreateTimer(callback, state, dueTime, period), dueTime, this);
            lock (_live) _live.Add(timer);
            return timer;
        }

        private sealed class Counted(ITimer inner, TimeSpan dueTime, TimerCountingTimeProvider owner) : ITimer
        {
            public TimeSpan DueTime { get; } = dueTime;
            public bool Change(TimeSpan dueTime, TimeSpan period) => inner.Change(dueTime, period);
            public void Dispose() { inner.Dispose(); lock (owner._live) owner._live.Remove(this); }
            public ValueTask DisposeAsync() { Dispose(); return ValueTask.CompletedTask; }
        }
    }

    /// <summary>Outputs held by other nodes: (node, job, path) → content.</summary>
    public sealed class FakeNodeFiles : INodeFiles
    {
        public Dictionary<(string Node, Guid Job, string Path), byte[]> Files { get; } = [];

        public Task<Stream> OpenOutputAsync(string node, Guid jobId, string path, CancellationToken ct) =>
            Files.TryGetValue((node, jobId, path), out var bytes)
                ? Task.FromResult<Stream>(new MemoryStream(bytes))
                : throw new NodeFilesUnavailableException($"node \"{node}\" is unreachable", nodeDown: false);
    }

    private sealed class Fence(CancellationToken fenced) : INodeFence
    {
        public Guid Instance { get; } = Guid.NewGuid();
        public CancellationToken Fenced { get; } = fenced;
    }

    private sealed class Lifetime(CancellationToken stopping) : IHostApplicationLifetime
    {
        public CancellationToken ApplicationStarted => CancellationToken.None;
        public CancellationToken ApplicationStopping { get; } = stopping;
        public CancellationToken ApplicationStopped => CancellationToken.None;
        public void StopApplication() { }
    }

    /// <summary>No other nodes: why a job waits is said against an empty cluster.</summary>
    private sealed class NoCluster : IClusterAllocation
    {
        public Task<IReadOnlyList<NodeInfo>> ListLiveWithAllocationAsync(CancellationToken ct) => Task.FromResult<IReadOnlyList<NodeInfo>>([]);
    }
}
