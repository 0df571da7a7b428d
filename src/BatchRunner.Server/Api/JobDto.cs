using BatchRunner.Core;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Api;

/// <summary>A job as the HTTP API v1 shows it. Field names and state strings are a public contract.</summary>
public sealed record JobDto(
    Guid Id,
    string? Name,
    string Image,
    string? ImageDigest,
    string Queue,
    string State,
    string? Reason,
    string? Message,
    int? ExitCode,
    int Attempt,
    DateTimeOffset CreatedAt,
    DateTimeOffset? StartedAt,
    DateTimeOffset? FinishedAt,
    IReadOnlyList<string>? Command,
    IReadOnlyList<string>? Args,
    string? WorkingDir,
    string? User,
    // Env values may hold secrets: only the names are shown.
    IReadOnlyList<string> EnvNames,
    ResourcesDto Resources,
    int TimeoutSeconds,
    IReadOnlyDictionary<string, string> Labels,
    UsageDto? Usage,
    PullProgressRecord? PullProgress,
    string? Node,
    IReadOnlyList<OutputDto> Outputs,
    string PullPolicy,
    IReadOnlyDictionary<string, string> NodeSelector,
    RetryPolicy Retry,
    IReadOnlyList<AttemptDto>? Attempts = null,
    // Null when the job has no node; false when that node stopped heartbeating (see JobNodeLiveness).
    bool? NodeAlive = null,
    // stdout or stderr went over its cap (logs.maxBytes or the node's MaxLogBytes): first and last parts kept.
    bool LogsTruncated = false)
{
    public static JobDto From(JobRecord j) => new(
        j.Id, j.Name, j.Image, j.ImageDigest, j.Queue, j.State, j.Reason, j.Message, j.ExitCode, j.Attempt,
        j.CreatedAt, j.StartedAt, j.FinishedAt,
        j.Spec.Command, j.Spec.Args, j.Spec.WorkingDir, j.Spec.User, j.Spec.Env.Keys.Order().ToList(),
        new ResourcesDto(j.Spec.Resources.Cpus, Quantity.FormatBytes(j.Spec.Resources.MemoryBytes), j.Spec.Resources.MemoryBytes, j.Spec.Resources.Pids,
            j.Spec.Resources.Gpus, j.Spec.Resources.GpuModel,
            j.Spec.Resources.DiskBytes > 0 ? Quantity.FormatBytes(j.Spec.Resources.DiskBytes) : null,
            j.Spec.Resources.DiskBytes > 0 ? j.Spec.Resources.DiskBytes : null),
        j.Spec.TimeoutSeconds, j.Spec.Labels,
        j.Usage is null ? null : UsageDto.From(j.Usage),
        j.PullProgress, j.Node,
        j.Outputs.Select(o => new OutputDto(o.Path, o.Size, o.Sha256)).ToList(),
        j.Spec.PullPolicy,
        j.Spec.NodeSelector,
        j.Spec.Retry,
        LogsTruncated: j.LogsTruncated);

    public JobDto WithNodeAlive(IReadOnlyDictionary<Guid, bool> alive) =>
        this with { NodeAlive = alive.TryGetValue(Id, out var a) ? a : null };

    public JobDto WithAttempts(IReadOnlyList<JobStore.AttemptRecord> attempts) =>
        this with { Attempts = attempts.Select(a => new AttemptDto(a.Attempt, a.Node, a.State, a.Reason, a.Message, a.ExitCode, a.StartedAt, a.FinishedAt)).ToList() };
}

/// <summary>One run of a job on a node.</summary>
public sealed record AttemptDto(int Attempt, string Node, string State, string? Reason, string? Message, int? ExitCode,
    DateTimeOffset StartedAt, DateTimeOffset? FinishedAt);

/// <param name="Disk">resources.disk as a quantity, <paramref name="DiskBytes"/> in bytes; null for jobs submitted before disk limits.</param>
public sealed record ResourcesDto(double Cpus, string Memory, long MemoryBytes, int Pids, int Gpus, string? GpuModel, string? Disk = null, long? DiskBytes = null);

/// <summary>Measured usage; a null field was not measured on this host.</summary>
public sealed record UsageDto(
    double? CpuSeconds,
    double? CpuUserSeconds,
    double? CpuSystemSeconds,
    long? MaxMemoryBytes,
    long? CpuThrottledPeriods,
    double? CpuThrottledSeconds,
    long? OomKills,
    long? PidsLimitHits,
    GpuUsageSummary? Gpus,
    // Peak of what the job wrote on its disk (root filesystem and /outputs together); null without a disk limit.
    long? DiskBytes = null)
{
    public static UsageDto From(ResourceUsage u) => new(
        u.CpuSeconds, u.CpuUserSeconds, u.CpuSystemSeconds, u.MaxMemoryBytes, u.CpuThrottledPeriods, u.CpuThrottledSeconds, u.OomKills, u.PidsLimitHits, u.Gpus,
        u.DiskBytes);
}

public sealed record OutputDto(string Path, long Size, string Sha256);

public sealed record JobListDto(IReadOnlyList<JobDto> Items, string? NextCursor);
