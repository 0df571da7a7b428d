namespace BatchRunner.Runtime.Disk;

/// <summary>
/// Samples a volume while its job runs: the peak of its usage, and whether it ever exceeded its limit. The kernel
/// stops writes at the limit plus a headroom (ENOSPC); this is how the attempt learns that it happened even when
/// the job caught the error and exited 0, as the cgroup's OOM counter tells an OOM kill.
/// </summary>
/// <remarks>
/// ext4 counts no ENOSPC anywhere a caller can read, so the verdict comes from the usage itself. The watch looks
/// again before a writer at <see cref="AssumedWriteBytesPerSecond"/> could fill what is left (every 200 ms with
/// plenty left, down to every millisecond near the limit); a writer meets ENOSPC only after writing the headroom past
/// the limit, which at that rate takes longer than the interval. What it can still miss: a job that passes its limit
/// and frees the space again faster than that (or while the sampler is starved of CPU), and a write refused as a
/// whole (fallocate of more than is left) that never changed the usage. A disk found over its limit at the end is
/// always seen: <see cref="StopAsync"/> reads once more.
/// </remarks>
public sealed class DiskUsageWatch : IAsyncDisposable
{
    public static readonly TimeSpan MaxInterval = TimeSpan.FromMilliseconds(200);
    public static readonly TimeSpan MinInterval = TimeSpan.FromMilliseconds(1);
    /// <summary>Faster than page-cache writes measured here (2-3 GB/s); what the sampling interval is sized for.</summary>
    public const long AssumedWriteBytesPerSecond = 8L << 30;

    private readonly IDiskVolume _volume;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private readonly object _gate = new();
    private long _peakUsedBytes;
    private bool _overLimit;
    private bool _outOfInodes;
    private DiskUsage _last;

    private DiskUsageWatch(IDiskVolume volume, TimeSpan maxInterval, TimeProvider time)
    {
        _volume = volume;
        Observe(volume.ReadUsage());
        _loop = SampleAsync(maxInterval, time);
    }

    /// <summary>Reads <paramref name="volume"/> now and then again and again until stopped, at most <paramref name="maxInterval"/> apart.</summary>
    public static DiskUsageWatch Start(IDiskVolume volume, TimeSpan? maxInterval = null, TimeProvider? time = null) =>
        new(volume, maxInterval ?? MaxInterval, time ?? TimeProvider.System);

    /// <summary>When to look again after a reading that left <paramref name="availableBytes"/>: before a fast writer could use it up.</summary>
    public static TimeSpan NextInterval(long availableBytes, TimeSpan maxInterval)
    {
        var seconds = Math.Max(0, availableBytes) / (double)AssumedWriteBytesPerSecond;
        return TimeSpan.FromSeconds(Math.Clamp(seconds, MinInterval.TotalSeconds, maxInterval.TotalSeconds));
    }

    /// <summary>The highest usage seen so far.</summary>
    public long PeakUsedBytes { get { lock (_gate) return _peakUsedBytes; } }

    /// <summary>True once any reading was over the limit (or out of inodes).</summary>
    public bool OverLimit { get { lock (_gate) return _overLimit; } }

    /// <summary>The latest reading.</summary>
    public DiskUsage Last { get { lock (_gate) return _last; } }

    /// <summary>Stops sampling and reads once more (the final state, after the job's processes are gone).</summary>
    public async Task<DiskUsageSummary> StopAsync()
    {
        await _stop.CancelAsync();
        await _loop;
        Observe(_volume.ReadUsage());
        lock (_gate) return new DiskUsageSummary(_peakUsedBytes, _last.UsedBytes, _volume.LimitBytes, _overLimit, _outOfInodes);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _loop;
        _stop.Dispose();
    }

    private void Observe(DiskUsage usage)
    {
        lock (_gate)
        {
            _last = usage;
            _peakUsedBytes = Math.Max(_peakUsedBytes, usage.UsedBytes);
            _overLimit |= usage.OverLimit;
            _outOfInodes |= usage.FreeInodes <= 0;
        }
    }

    private async Task SampleAsync(TimeSpan maxInterval, TimeProvider time)
    {
        // The stop ends the delay without an exception thrown (one TaskCanceledException per job before).
        while (true)
        {
            await Task.Delay(NextInterval(Last.AvailableBytes, maxInterval), time, _stop.Token)
                .ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (_stop.IsCancellationRequested) return;
            try { Observe(_volume.ReadUsage()); }
            catch (InvalidOperationException) { return; } // unmounted under us: nothing more to see
        }
    }
}

/// <summary>What a job did with its disk: its peak and final usage, and whether it exceeded <paramref name="LimitBytes"/>.</summary>
/// <param name="OutOfInodes">The limit was reached by the number of files rather than their size.</param>
public sealed record DiskUsageSummary(long PeakUsedBytes, long FinalUsedBytes, long LimitBytes, bool OverLimit, bool OutOfInodes);
