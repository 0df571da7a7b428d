using System.Collections.Concurrent;
using BatchRunner.Runtime.Gpus;

namespace BatchRunner.Server.Gpus;

/// <summary>
/// The node's one GPU sampling loop: every <c>interval</c> it reads all GPUs once (NVML or nvidia-smi),
/// publishes the per-GPU series and feeds the usage of every tracked job. One loop per node rather than one
/// per job: NVML is read once per tick however many jobs run. Without a metrics source (no driver) it only
/// keeps the job info series. Register as a hosted service.
/// </summary>
public sealed partial class GpuMonitor(IGpuMetricsSource? source, GpuMetricsPublisher publisher, TimeSpan interval, ILogger<GpuMonitor> log, TimeProvider? time = null)
    : BackgroundService
{
    private readonly ConcurrentDictionary<Guid, GpuUsageAccumulator> _jobs = new();
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private int _failures;

    /// <summary>
    /// Starts the job's info series and usage accounting; dispose the handle when the container is gone (the
    /// series disappear with it). Read <see cref="GpuJobTracking.Usage"/> just before disposing to record it on the job.
    /// </summary>
    public GpuJobTracking TrackJob(Guid jobId, string? jobName, IReadOnlyList<Gpu> gpus)
    {
        var acc = new GpuUsageAccumulator(gpus.Select(g => g.Uuid).ToList());
        _jobs[jobId] = acc;
        publisher.Assign(jobId, jobName, gpus);
        return new GpuJobTracking(acc, () =>
        {
            _jobs.TryRemove(new KeyValuePair<Guid, GpuUsageAccumulator>(jobId, acc));
            publisher.Unassign(jobId);
        });
    }

    /// <summary>One sampling round (what each tick does).</summary>
    public async Task SampleOnceAsync(CancellationToken ct)
    {
        if (source is null) return;
        IReadOnlyList<GpuSample> samples;
        try
        {
            samples = await source.SampleAsync(null, ct);
            _failures = 0;
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            // Metrics never fail jobs; log the first failure of a streak only.
            if (_failures++ == 0) LogSampleFailed(log, e, source.Name);
            return;
        }
        publisher.Publish(samples);
        foreach (var acc in _jobs.Values) acc.Add(samples);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (source is null) return;
        using var timer = new PeriodicTimer(interval, _time);
        try
        {
            do await SampleOnceAsync(stoppingToken);
            while (await timer.WaitForNextTickAsync(stoppingToken));
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "GPU metrics from {Source} failed; retrying every tick")]
    private static partial void LogSampleFailed(ILogger log, Exception e, string source);
}

/// <summary>A job's GPU accounting while its container runs. Dispose removes its info series.</summary>
public sealed class GpuJobTracking(GpuUsageAccumulator accumulator, Action stop) : IDisposable
{
    private int _disposed;

    /// <summary>Mean and peak utilisation and peak memory so far.</summary>
    public GpuUsage Usage => accumulator.Snapshot();

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) stop();
    }
}
