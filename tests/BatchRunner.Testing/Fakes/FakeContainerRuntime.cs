using System.Collections.Concurrent;
using BatchRunner.Core;
using BatchRunner.Runtime;

namespace BatchRunner.Testing.Fakes;

/// <summary>
/// An <see cref="IContainerRuntime"/> whose containers run nothing: a test ends each one (<see cref="FakeContainer.Exit"/>)
/// or lets the code under test kill it. Starting one makes its bundle directory, as the real runtime does, and
/// disposing it removes the directory. For unit tests of logic; the real runtime is tested with runc.
/// </summary>
public sealed class FakeContainerRuntime : IContainerRuntime
{
    private readonly ConcurrentQueue<FakeContainer> _started = new();
    private readonly Channel _startedSignal = new();

    public string Name => "fake";
    public string Version => "0";

    /// <summary>When set and it returns an exception, <see cref="StartAsync"/> throws that instead of starting.</summary>
    public Func<ContainerSpec, Exception?>? FailStart { get; set; }

    /// <summary>Called with each container as it starts, before <see cref="StartAsync"/> returns (e.g. to end it at once).</summary>
    public Action<FakeContainer>? OnStart { get; set; }

    public IReadOnlyCollection<FakeContainer> Started => _started;

    /// <summary>Containers started and not yet disposed.</summary>
    public int Live => _started.Count(c => !c.Disposed);

    public Task<IRunningContainer> StartAsync(ContainerSpec spec, string bundleDir, ContainerIo io, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        if (FailStart?.Invoke(spec) is { } error) throw error;
        Directory.CreateDirectory(bundleDir);
        var container = new FakeContainer(spec, bundleDir);
        _started.Enqueue(container);
        OnStart?.Invoke(container);
        _startedSignal.Signal();
        return Task.FromResult<IRunningContainer>(container);
    }

    /// <summary>The <paramref name="n"/>th container started (1-based), once it has; fails after <paramref name="timeout"/>.</summary>
    public async Task<FakeContainer> WaitForStartAsync(int n = 1, TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(10));
        while (true)
        {
            // Take the signal before looking, so a start between the two is not missed.
            var next = _startedSignal.Next;
            if (_started.Count >= n) return _started.ElementAt(n - 1);
            await next.WaitAsync(cts.Token);
        }
    }

    public Task<IReadOnlyList<string>> CleanupOrphansAsync(string idPrefix, CancellationToken ct) => Task.FromResult<IReadOnlyList<string>>([]);

    /// <summary>Wakes every waiter each time it is signalled.</summary>
    private sealed class Channel
    {
        private TaskCompletionSource _next = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Signal() => Interlocked.Exchange(ref _next, new(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

        public Task Next => Volatile.Read(ref _next).Task;
    }
}

/// <summary>A container of <see cref="FakeContainerRuntime"/>: it exits when the test (or a kill) says so.</summary>
public sealed class FakeContainer(ContainerSpec spec, string bundleDir) : IRunningContainer
{
    private readonly TaskCompletionSource<ExitResult> _exit = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _logsTruncated = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _disposed;

    public string Id => Spec.Id;
    public ContainerSpec Spec { get; } = spec;
    public bool Killed { get; private set; }
    public bool Disposed => Volatile.Read(ref _disposed) == 1;

    /// <summary>What <see cref="ReadUsage"/> returns.</summary>
    public ResourceUsage Usage { get; set; } = new() { CpuSeconds = 0.25, MaxMemoryBytes = 1 << 20 };

    /// <summary>The main process exits with <paramref name="code"/> (the cgroup counted an OOM kill when <paramref name="oomKilled"/>).</summary>
    public void Exit(int code, int? signal = null, bool oomKilled = false) => _exit.TrySetResult(new ExitResult(code, signal, oomKilled));

    public Task<ExitResult> WaitAsync(CancellationToken ct) => _exit.Task.WaitAsync(ct);

    public Task LogsTruncated => _logsTruncated.Task;

    /// <summary>The container's output went over its cap (<see cref="LogsTruncated"/> completes).</summary>
    public void TruncateLogs() => _logsTruncated.TrySetResult();

    public Task KillAsync(CancellationToken ct)
    {
        Killed = true;
        Exit(137, 9);
        return Task.CompletedTask;
    }

    /// <summary>Stop signals sent to it (<see cref="StopAsync"/>), in order.</summary>
    public List<string> StopSignals { get; } = [];

    /// <summary>When true, the stop signal is ignored and the container is killed when the grace ends (at once here:
    /// the fake does not wait); otherwise it exits on the signal (128 + 15).</summary>
    public bool IgnoresStopSignal { get; set; }

    public async Task<StopResult> StopAsync(string signal, TimeSpan grace, CancellationToken ct)
    {
        if (_exit.Task.IsCompleted) return new StopResult(signal, grace, Killed: false, AlreadyExited: true);
        lock (StopSignals) StopSignals.Add(signal);
        if (IgnoresStopSignal || grace == TimeSpan.Zero)
        {
            await KillAsync(ct);
            return new StopResult(signal, grace, Killed: true);
        }
        Exit(143, 15);
        return new StopResult(signal, grace, Killed: false);
    }

    public ResourceUsage ReadUsage() => Usage;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        if (!_exit.Task.IsCompleted) await KillAsync(CancellationToken.None);
        if (Directory.Exists(bundleDir)) Directory.Delete(bundleDir, recursive: true);
    }
}
