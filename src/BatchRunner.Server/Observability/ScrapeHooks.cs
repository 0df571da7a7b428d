using Prometheus;

namespace BatchRunner.Server.Observability;

/// <summary>
/// Work that runs just before each collection of the default registry (a /metrics scrape): reading
/// cgroups of running containers, counting jobs in the database, asking Hangfire for queue lengths.
/// prometheus-net's before-collect callbacks cannot be removed, so one callback is registered per
/// process and hooks are added and removed here: a host that stops (tests start several) stops
/// contributing.
/// </summary>
/// <remarks>
/// A hook that throws does not fail the scrape: the series it feeds keep their last value and
/// <c>batchrunner_metrics_collect_failures_total{collector}</c> counts the failure.
/// </remarks>
public static partial class ScrapeHooks
{
    private static readonly Lock Gate = new();
    private static readonly List<Hook> Hooks = [];
    private static bool _registered;

    private sealed record Hook(string Name, Func<CancellationToken, Task> Run, ILogger? Log)
    {
        public long LastLoggedTicks = long.MinValue;
    }

    /// <summary>Adds a hook; disposing the result removes it. Failures are logged to <paramref name="log"/> at most once a minute.</summary>
    public static IDisposable Add(string name, Func<CancellationToken, Task> run, ILogger? log = null)
    {
        var hook = new Hook(name, run, log);
        // The failure counter exists (at 0) from the start, so "no failures" is a value, not an absence.
        BatchRunnerMetrics.CollectFailures.WithLabels(name);
        lock (Gate)
        {
            Hooks.Add(hook);
            if (!_registered)
            {
                Metrics.DefaultRegistry.AddBeforeCollectCallback(RunAllAsync);
                _registered = true;
            }
        }
        return new Removal(hook);
    }

    private static async Task RunAllAsync(CancellationToken ct)
    {
        Hook[] hooks;
        lock (Gate) hooks = [.. Hooks];
        await Task.WhenAll(hooks.Select(h => RunOneAsync(h, ct)));
    }

    private static async Task RunOneAsync(Hook hook, CancellationToken ct)
    {
        try
        {
            await hook.Run(ct);
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            BatchRunnerMetrics.CollectFailures.WithLabels(hook.Name).Inc();
            var now = Environment.TickCount64;
            if (hook.Log is not null && (hook.LastLoggedTicks == long.MinValue || now - hook.LastLoggedTicks > 60_000))
            {
                hook.LastLoggedTicks = now;
                LogCollectFailed(hook.Log, e, hook.Name);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Metrics: collecting {Collector} failed; its series keep their last values (logged at most once a minute)")]
    private static partial void LogCollectFailed(ILogger log, Exception e, string collector);

    private sealed class Removal(Hook hook) : IDisposable
    {
        public void Dispose()
        {
            lock (Gate) Hooks.Remove(hook);
        }
    }
}

/// <summary>A value computed at most once per <paramref name="maxAge"/>; concurrent scrapes share one computation.</summary>
internal sealed class CachedValue<T>(TimeSpan maxAge, Func<CancellationToken, Task<T>> compute)
{
    private readonly SemaphoreSlim _lock = new(1, 1);
    private long _computedAtTicks = long.MinValue;
    private T? _value;

    /// <summary>The fresh value, or null when the cached one is still young (nothing to publish again).</summary>
    public async Task<(bool Fresh, T? Value)> GetAsync(CancellationToken ct)
    {
        await _lock.WaitAsync(ct);
        try
        {
            var now = Environment.TickCount64;
            if (_computedAtTicks != long.MinValue && now - _computedAtTicks < maxAge.TotalMilliseconds) return (false, _value);
            _value = await compute(ct);
            _computedAtTicks = Environment.TickCount64;
            return (true, _value);
        }
        finally
        {
            _lock.Release();
        }
    }
}

/// <summary>
/// Publishes a whole labelled gauge family from a snapshot: sets every series in it and removes the
/// series this publisher set before that are not in it any more (no stale series, bounded cardinality).
/// </summary>
internal sealed class GaugeFamilyPublisher(Gauge gauge)
{
    private readonly Lock _gate = new();
    private HashSet<LabelKey> _published = [];

    public void Publish(IReadOnlyDictionary<LabelKey, double> snapshot)
    {
        lock (_gate)
        {
            foreach (var (labels, value) in snapshot) gauge.WithLabels(labels.Values).Set(value);
            foreach (var stale in _published.Where(k => !snapshot.ContainsKey(k))) gauge.RemoveLabelled(stale.Values);
            _published = [.. snapshot.Keys];
        }
    }

    public void Clear() => Publish(new Dictionary<LabelKey, double>());
}

/// <summary>Label values as a dictionary key.</summary>
internal readonly record struct LabelKey(params string[] Values)
{
    public bool Equals(LabelKey other) => Values.AsSpan().SequenceEqual(other.Values);
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (var v in Values) h.Add(v);
        return h.ToHashCode();
    }
}
