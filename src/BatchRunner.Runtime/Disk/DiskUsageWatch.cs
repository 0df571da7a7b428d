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
/// always seen: <see cref="StopAsync"/> reads once more. The readings of every watch are taken by one thread, in
/// shared rounds (<see cref="DiskUsageSampler"/>).
/// </remarks>
public sealed class DiskUsageWatch : IAsyncDisposable
{
    public static readonly TimeSpan MaxInterval = TimeSpan.FromMilliseconds(200);
    public static readonly TimeSpan MinInterval = TimeSpan.FromMilliseconds(1);
    /// <summary>Faster than page-cache writes measured here (2-3 GB/s); what the sampling interval is sized for.</summary>
    public const long AssumedWriteBytesPerSecond = 8L << 30;

    private readonly IDiskVolume _volume;
    private readonly TimeSpan _maxInterval;
    private readonly DiskUsageSampler _sampler;
    private readonly object _gate = new();
    // Held while the sampler reads: a stop waits for a reading under way, and none starts after it.
    private readonly object _reading = new();
    private bool _stopped;
    private Exception? _fault;
    private long _peakUsedBytes;
    private bool _overLimit;
    private bool _outOfInodes;
    private DiskUsage _last;

    private DiskUsageWatch(IDiskVolume volume, TimeSpan maxInterval, DiskUsageSampler sampler)
    {
        _volume = volume;
        _maxInterval = maxInterval;
        _sampler = sampler;
        Observe(volume.ReadUsage());
        sampler.Add(this, NextInterval(Last.AvailableBytes, maxInterval));
    }

    /// <summary>Reads <paramref name="volume"/> now and then again and again until stopped, at most <paramref name="maxInterval"/> apart.</summary>
    public static DiskUsageWatch Start(IDiskVolume volume, TimeSpan? maxInterval = null) =>
        new(volume, maxInterval ?? MaxInterval, DiskUsageSampler.Shared);

    /// <summary>As <see cref="Start(IDiskVolume, TimeSpan?)"/>, read by <paramref name="sampler"/> (tests).</summary>
    internal static DiskUsageWatch Start(IDiskVolume volume, TimeSpan maxInterval, DiskUsageSampler sampler) =>
        new(volume, maxInterval, sampler);

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

    // The sampler's schedule of this watch (its Stopwatch timestamps; read and written under the sampler's lock).
    internal long DueTimestamp;
    internal long EarlyTimestamp;

    /// <summary>Stops sampling and reads once more (the final state, after the job's processes are gone).</summary>
    /// <exception cref="Exception">What a reading of the sampler's threw, other than the volume found unmounted.</exception>
    public ValueTask<DiskUsageSummary> StopAsync()
    {
        Stop();
        if (_fault is { } fault) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(fault);
        Observe(_volume.ReadUsage());
        lock (_gate) return ValueTask.FromResult(new DiskUsageSummary(_peakUsedBytes, _last.UsedBytes, _volume.LimitBytes, _overLimit, _outOfInodes));
    }

    public ValueTask DisposeAsync()
    {
        Stop();
        return ValueTask.CompletedTask;
    }

    private void Stop()
    {
        _sampler.Remove(this);
        lock (_reading) _stopped = true;
    }

    /// <summary>The sampler's reading: the interval to the next one, or null when there is nothing more to read.</summary>
    internal TimeSpan? SampleNow()
    {
        lock (_reading)
        {
            if (_stopped) return null;
            try
            {
                Observe(_volume.ReadUsage());
                return NextInterval(Last.AvailableBytes, _maxInterval);
            }
            catch (InvalidOperationException) { } // unmounted under us: nothing more to see
            catch (Exception e) { _fault = e; }   // the stop rethrows it, as the watch's own loop used to
            _stopped = true;
            return null;
        }
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
}

/// <summary>What a job did with its disk: its peak and final usage, and whether it exceeded <paramref name="LimitBytes"/>.</summary>
/// <param name="OutOfInodes">The limit was reached by the number of files rather than their size.</param>
public sealed record DiskUsageSummary(long PeakUsedBytes, long FinalUsedBytes, long LimitBytes, bool OverLimit, bool OutOfInodes);
