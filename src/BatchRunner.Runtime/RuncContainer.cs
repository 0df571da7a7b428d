using System.Diagnostics;
using BatchRunner.Core;
using BatchRunner.Runtime.Cgroups;
using BatchRunner.Runtime.Spec;

namespace BatchRunner.Runtime;

/// <summary>
/// A container started by <see cref="RuncRuntime"/>. The `run --keep` child process lives as long as the
/// container's main process; when it exits, the exit status and the cgroup's OOM-kill count are read
/// once (the cgroup is kept until disposal) and make up the <see cref="ExitResult"/>.
/// </summary>
internal sealed class RuncContainer : IRunningContainer
{
    private readonly RuncRuntime _runtime;
    private readonly string _bundleDir;
    private readonly Process _run;
    private readonly ICgroupStatsReader _stats;
    private readonly Task<ExitResult> _exit;
    private ResourceUsage? _finalUsage;
    private int _disposed;

    private readonly Network.NetworkAttachment? _network;

    public RuncContainer(RuncRuntime runtime, string id, string bundleDir, Process run, Network.NetworkAttachment? network = null)
    {
        _network = network;
        _runtime = runtime;
        Id = id;
        _bundleDir = bundleDir;
        _run = run;
        _stats = runtime.StatsReader(id);
        _exit = MonitorAsync();
    }

    public string Id { get; }

    private async Task<ExitResult> MonitorAsync()
    {
        await _run.WaitForExitAsync(CancellationToken.None);
        var code = _run.ExitCode;
        // runc exits 128+N when the container's process died of signal N.
        int? signal = code is > 128 and <= 128 + 64 ? code - 128 : null;
        // The OOM killer may hit any process of the cgroup (a shell's child, say) while the main process
        // exits 0, and exit code 137 can be a plain `kill -9`: only the cgroup's counter is evidence.
        var oomKills = _stats.ReadOomKills();
        _finalUsage = _stats.Read();
        var result = new ExitResult(code, signal, oomKills > 0);
        RuntimeLog.Exited(_runtime.Logger, Id, result.ExitCode, result.Signal, result.OomKilled);
        return result;
    }

    public Task<ExitResult> WaitAsync(CancellationToken ct) => _exit.WaitAsync(ct);

    public async Task KillAsync(CancellationToken ct)
    {
        if (_run.HasExited) return;
        await _runtime.KillAsync(Id, ct);
    }

    public ResourceUsage ReadUsage() =>
        Volatile.Read(ref _disposed) != 0 ? _finalUsage ?? ResourceUsage.Empty : _stats.Read();

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        var opts = _runtime.Options;
        try
        {
            if (!_run.HasExited)
            {
                try { await _runtime.KillAsync(Id, CancellationToken.None); }
                catch (Exception e) when (e is InvalidOperationException or TimeoutException) { RuntimeLog.CleanupIncomplete(_runtime.Logger, Id, e.Message); }
                using var cts = new CancellationTokenSource(opts.KillTimeout);
                try { await _run.WaitForExitAsync(cts.Token); }
                catch (OperationCanceledException)
                {
                    // `run` did not exit: stop it; `delete --force` below kills what it left.
                    _run.Kill();
                }
            }
            await _exit; // records the final usage before the cgroup goes away
            await _runtime.DeleteAsync(Id, CancellationToken.None);
        }
        catch (Exception e) when (e is InvalidOperationException or TimeoutException or IOException)
        {
            RuntimeLog.CleanupIncomplete(_runtime.Logger, Id, e.Message);
        }
        try
        {
            // Normally a no-op: `delete` removed the cgroup. This guarantees it when delete failed.
            await _runtime.Cleaner.RemoveAsync(SpecBuilder.CgroupParent, Id, opts.KillTimeout, CancellationToken.None);
        }
        catch (IOException e)
        {
            RuntimeLog.CleanupIncomplete(_runtime.Logger, Id, e.Message);
        }
        // After delete: the namespace's last process is gone, so DEL sees a quiet interface.
        if (_network is not null && _runtime.BridgeNetwork is { } bridge)
            await bridge.DetachAsync(_network.ContainerId, CancellationToken.None);
        RuncRuntime.RemoveBundle(_bundleDir);
        _run.Dispose();
    }
}
