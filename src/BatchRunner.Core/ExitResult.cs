namespace BatchRunner.Core;

/// <summary>How a container's main process ended, as observed by the runtime.</summary>
/// <param name="ExitCode">The exit code; 128+N when killed by signal N (shell convention).</param>
/// <param name="Signal">The signal that killed the process, if any.</param>
/// <param name="OomKilled">True when the job's memory cgroup recorded an OOM kill (any process in it).</param>
public sealed record ExitResult(int ExitCode, int? Signal, bool OomKilled)
{
    public bool Successful => ExitCode == 0 && !OomKilled;
}

/// <summary>
/// Resources a container used, read from its cgroup before the cgroup is removed. A null field was
/// not measured (the controller or file is absent on this host), which is not the same as zero.
/// </summary>
public sealed record ResourceUsage
{
    public double? CpuSeconds { get; init; }
    public double? CpuUserSeconds { get; init; }
    public double? CpuSystemSeconds { get; init; }
    public long? CpuThrottledPeriods { get; init; }
    public double? CpuThrottledSeconds { get; init; }
    public long? MemoryBytes { get; init; }
    public long? MaxMemoryBytes { get; init; }
    public long? OomKills { get; init; }
    public long? Pids { get; init; }
    public long? PidsLimitHits { get; init; }
    /// <summary>Peak of what the job had written on its disk (root layer and /outputs); null without a disk limit.</summary>
    public long? DiskBytes { get; init; }
    /// <summary>GPU figures of the job's assigned GPUs; null for a job without GPUs.</summary>
    public GpuUsageSummary? Gpus { get; init; }
    /// <summary>When the figures of a running job were read; null for the usage recorded when it ended.</summary>
    public DateTimeOffset? SampledAt { get; init; }

    public static readonly ResourceUsage Empty = new();
}
