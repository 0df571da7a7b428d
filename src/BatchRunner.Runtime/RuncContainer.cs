using BatchRunner.Core;
using BatchRunner.Runtime.Cgroups;
using BatchRunner.Runtime.Logs;
using BatchRunner.Runtime.Spec;

namespace BatchRunner.Runtime;

/// <summary>
/// A container started by <see cref="RuncRuntime"/>. Its init is our child; when it exits, the exit
/// status and the cgroup's OOM-kill count and usage are read once (the cgroup stays until `delete`, in
/// disposal) and make up the <see cref="ExitResult"/>.
/// </summary>
internal sealed class RuncContainer : IRunningContainer
{
    private readonly RuncRuntime _runtime;
    private readonly string _bundleDir;
    private readonly string? _nameFilesDir;
    private readonly ChildExit _init;
    private readonly ICgroupStatsReader _stats;
    private readonly Task<ExitResult> _exit;
    private ResourceUsage? _finalUsage;
    private int _disposed;

    private readonly Network.NetworkAttachment? _network;
    private readonly LogRelay _relay;
    private readonly bool _hasPoststopHooks;

    /// <summary>How long the output may take to end once the init has exited: the kernel kills the rest of the
    /// container's processes with it, so this is only a bound for a process stuck in the kernel.</summary>
    private static readonly TimeSpan OutputDrainTimeout = TimeSpan.FromSeconds(5);

    public RuncContainer(RuncRuntime runtime, string id, string bundleDir, ChildExit init, LogRelay relay, Network.NetworkAttachment? network = null,
        bool hasPoststopHooks = false, string? nameFilesDir = null)
    {
        _nameFilesDir = nameFilesDir;
        _hasPoststopHooks = hasPoststopHooks;
        _network = network;
        _relay = relay;
        _runtime = runtime;
        Id = id;
        _bundleDir = bundleDir;
        _init = init;
        _stats = runtime.StatsReader(id);
        _exit = MonitorAsync();
    }

    public string Id { get; }

    private async Task<ExitResult> MonitorAsync()
    {
        var (code, signal) = await _init.Task;
        // The job's output is complete (and stored) once its last process has closed the pipes.
        try { await _relay.Completion.WaitAsync(OutputDrainTimeout); }
        catch (TimeoutException) { }
        // The OOM killer may hit any process of the cgroup (a shell's child, say) while the main process
        // exits 0, and exit code 137 can be a plain `kill -9`: only the cgroup's counter is evidence.
        // One read of the cgroup: its usage, with the OOM kill count among it, is final now.
        var usage = _stats.Read();
        _finalUsage = usage;
        var result = new ExitResult(code, signal, usage.OomKills > 0);
        RuntimeLog.Exited(_runtime.Logger, Id, result.ExitCode, result.Signal, result.OomKilled);
        return result;
    }

    public Task<ExitResult> WaitAsync(CancellationToken ct) => _exit.WaitAsync(ct);

    public Task LogsTruncated => _relay.Truncated;

    public async Task KillAsync(CancellationToken ct)
    {
        if (_init.HasExited) return;
        await _runtime.KillAsync(Id, ct);
    }

    public async Task<StopResult> StopAsync(string signal, TimeSpan grace, CancellationToken ct)
    {
        if (_init.HasExited) return new StopResult(signal, grace, Killed: false, AlreadyExited: true);
        if (grace > TimeSpan.Zero)
        {
            try
            {
                // To the main process only, as `docker stop` and the kubelet do: it decides what its children get.
                await _runtime.SignalAsync(Id, signal, CancellationToken.None);
                await _init.Task.WaitAsync(grace, ct);
                return new StopResult(signal, grace, Killed: false);
            }
            catch (Exception e) when (e is TimeoutException or OperationCanceledException) { }
            catch (InvalidOperationException e)
            {
                RuntimeLog.CleanupIncomplete(_runtime.Logger, Id, e.Message); // the signal did not go out: kill instead
            }
        }
        await KillAsync(CancellationToken.None);
        await _init.Task.WaitAsync(_runtime.Options.KillTimeout, CancellationToken.None)
            .ContinueWith(_ => { }, TaskScheduler.Default); // disposal's kill escalates if this one did not take
        return new StopResult(signal, grace, Killed: true);
    }

    /// <summary>The cgroup's figures while the container runs; once it has exited (its init reaped, its output drained), the
    /// final usage read then, without reading the cgroup again.</summary>
    public ResourceUsage ReadUsage() =>
        _exit.IsCompletedSuccessfully || Volatile.Read(ref _disposed) != 0 ? _finalUsage ?? ResourceUsage.Empty : _stats.Read();

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        var opts = _runtime.Options;
        var removed = false;
        try
        {
            if (!_init.HasExited)
            {
                try { await _runtime.KillAsync(Id, CancellationToken.None); }
                catch (Exception e) when (e is InvalidOperationException or TimeoutException) { RuntimeLog.CleanupIncomplete(_runtime.Logger, Id, e.Message); }
                try { await _init.Task.WaitAsync(opts.KillTimeout); }
                catch (TimeoutException)
                {
                    // The runtime's kill did not take: signal the init ourselves; the removal below (ours or
                    // `delete --force`) kills what is left in the cgroup.
                    _init.Kill();
                }
            }
            await _exit; // records the final usage before the cgroup goes away
            // Its init is reaped, so the container is stopped: removed without a runc process where that is what
            // `delete` would do, otherwise by `delete`.
            removed = await _runtime.TryRemoveStoppedAsync(Id, _hasPoststopHooks);
            if (!removed) await _runtime.DeleteAsync(Id, CancellationToken.None);
        }
        catch (Exception e) when (e is InvalidOperationException or TimeoutException or IOException)
        {
            removed = false;
            RuntimeLog.CleanupIncomplete(_runtime.Logger, Id, e.Message);
        }
        try
        {
            // Normally a no-op after `delete`, which removed the cgroup. This guarantees it when delete failed.
            if (!removed) await _runtime.Cleaner.RemoveAsync(SpecBuilder.CgroupParent, Id, opts.KillTimeout, CancellationToken.None);
        }
        catch (IOException e)
        {
            RuntimeLog.CleanupIncomplete(_runtime.Logger, Id, e.Message);
        }
        // After delete no process of the container is left to write: what the pipes hold is stored, then the relay ends.
        await _relay.StopAsync(opts.KillTimeout);
        _relay.Dispose();
        // After delete: the namespace's last process is gone, so DEL sees a quiet interface.
        if (_network is not null && _runtime.BridgeNetwork is { } bridge)
            await bridge.DetachAsync(_network.ContainerId, CancellationToken.None);
        RuncRuntime.RemoveBundle(_bundleDir, _nameFilesDir);
    }
}
