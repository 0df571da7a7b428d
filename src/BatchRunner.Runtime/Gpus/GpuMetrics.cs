namespace BatchRunner.Runtime.Gpus;

/// <summary>One reading of one GPU. A field the source could not read (not supported, no permission) is null.</summary>
public sealed record GpuSample(
    string Uuid,
    double? UtilizationPercent,
    long? MemoryUsedBytes,
    long? MemoryTotalBytes,
    double? TemperatureCelsius,
    double? PowerWatts,
    DateTimeOffset At);

/// <summary>Reads the current utilisation, memory, temperature and power of GPUs (NVML, nvidia-smi, or a fake in tests).</summary>
public interface IGpuMetricsSource
{
    /// <summary>"nvml" or "nvidia-smi".</summary>
    string Name { get; }

    /// <summary>Samples the GPUs with these UUIDs (null: every GPU the source sees). A GPU the source cannot
    /// read is left out of the result rather than failing the whole sample.</summary>
    Task<IReadOnlyList<GpuSample>> SampleAsync(IReadOnlyCollection<string>? uuids, CancellationToken ct);
}

/// <summary>
/// A job's GPU figures over its run. Mean utilisation is over every (sample, GPU) reading; peak utilisation
/// and peak memory are the highest one GPU reached (memory is per GPU because that is what runs out).
/// Null when no sample had the field.
/// </summary>
public sealed record GpuUsage(IReadOnlyList<string> Gpus, double? MeanUtilizationPercent, double? PeakUtilizationPercent, long? PeakMemoryBytes, int Samples)
{
    public static GpuUsage None(IReadOnlyList<string> gpus) => new(gpus, null, null, null, 0);
}

/// <summary>Folds samples of a job's GPUs into a <see cref="GpuUsage"/>. Thread-safe.</summary>
public sealed class GpuUsageAccumulator(IReadOnlyList<string> uuids)
{
    private readonly HashSet<string> _uuids = [.. uuids];
    private readonly Lock _lock = new();
    private double _utilSum;
    private int _utilCount;
    private double? _utilPeak;
    private long? _memPeak;
    private int _samples;

    public IReadOnlyList<string> Gpus { get; } = uuids;

    /// <summary>Adds the readings of this job's GPUs in <paramref name="samples"/> (others are ignored).</summary>
    public void Add(IEnumerable<GpuSample> samples)
    {
        lock (_lock)
        {
            var any = false;
            foreach (var s in samples)
            {
                if (!_uuids.Contains(s.Uuid)) continue;
                any = true;
                if (s.UtilizationPercent is { } u)
                {
                    _utilSum += u;
                    _utilCount++;
                    _utilPeak = Math.Max(_utilPeak ?? u, u);
                }
                if (s.MemoryUsedBytes is { } m) _memPeak = Math.Max(_memPeak ?? m, m);
            }
            if (any) _samples++;
        }
    }

    public GpuUsage Snapshot()
    {
        lock (_lock)
            return new GpuUsage(Gpus, _utilCount > 0 ? Math.Round(_utilSum / _utilCount, 2) : null, _utilPeak, _memPeak, _samples);
    }
}

/// <summary>
/// Samples a set of GPUs every <c>interval</c> (the first sample at once) until stopped. A failed sample is
/// logged through <c>onError</c> and the loop goes on: metrics never fail a job.
/// </summary>
public sealed class GpuUsageSampler : IAsyncDisposable
{
    private readonly IGpuMetricsSource _source;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private readonly Action<IReadOnlyList<GpuSample>>? _onSample;
    private readonly Action<Exception>? _onError;

    public GpuUsageAccumulator Accumulator { get; }

    private GpuUsageSampler(IGpuMetricsSource source, IReadOnlyList<string> uuids, TimeSpan interval, TimeProvider time,
        Action<IReadOnlyList<GpuSample>>? onSample, Action<Exception>? onError)
    {
        if (interval <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(interval), interval, "interval must be positive");
        _source = source;
        _onSample = onSample;
        _onError = onError;
        Accumulator = new GpuUsageAccumulator(uuids);
        _loop = RunAsync(uuids, interval, time);
    }

    public static GpuUsageSampler Start(IGpuMetricsSource source, IReadOnlyList<string> uuids, TimeSpan interval,
        Action<IReadOnlyList<GpuSample>>? onSample = null, Action<Exception>? onError = null, TimeProvider? time = null) =>
        new(source, uuids, interval, time ?? TimeProvider.System, onSample, onError);

    public GpuUsage Current => Accumulator.Snapshot();

    private async Task RunAsync(IReadOnlyList<string> uuids, TimeSpan interval, TimeProvider time)
    {
        await Task.Yield();
        using var timer = new PeriodicTimer(interval, time);
        do
        {
            try
            {
                var samples = await _source.SampleAsync(uuids, _stop.Token);
                Accumulator.Add(samples);
                _onSample?.Invoke(samples);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested) { return; }
            catch (Exception e) { _onError?.Invoke(e); }
        }
        while (await WaitAsync(timer));
    }

    private async Task<bool> WaitAsync(PeriodicTimer timer)
    {
        try { return await timer.WaitForNextTickAsync(_stop.Token); }
        catch (OperationCanceledException) { return false; }
    }

    /// <summary>Stops sampling and returns the figures.</summary>
    public async Task<GpuUsage> StopAsync()
    {
        await _stop.CancelAsync();
        await _loop;
        return Accumulator.Snapshot();
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stop.Dispose();
    }
}
