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
    // The names of env (kept from before env values were shown; secrets belong in secretEnv, never shown).
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
    // An array's parent: its size, parallelism and children per state.
    ArrayDto? Array = null,
    // An array's child: its parent and index.
    Guid? ParentId = null,
    int? ArrayIndex = null,
    IReadOnlyList<DependencyDto>? DependsOn = null,
    IReadOnlyList<InputsFromDto>? InputsFrom = null,
    Guid? ScheduleId = null,
    // Seconds between the stop signal and SIGKILL on cancel and timeout (null only for jobs from before it existed).
    int? StopGraceSeconds = null,
    // The files given at submission, under /inputs (the single-job view; null in list items).
    IReadOnlyList<OutputDto>? Inputs = null,
    // The job this one reruns (POST /api/v1/jobs/{id}/rerun).
    Guid? RerunOf = null,
    // env with its values (people use them as parameters); null in list items, which leave args and env out.
    IReadOnlyDictionary<string, string>? Env = null,
    // The names of secretEnv; its values are never shown.
    IReadOnlyList<string>? SecretEnvNames = null,
    string Tenant = JobRecord.DefaultTenant,
    // Id of the key that submitted the job ("bootstrap": the configured key).
    string? SubmittedBy = null,
    NotifyDto? Notify = null,
    // stdout or stderr went over its cap (logs.maxBytes or the node's MaxLogBytes): first and last parts kept.
    bool LogsTruncated = false)
{
    public static JobDto From(JobRecord j) => new(
        j.Id, j.Name, j.Image, j.ImageDigest, j.Queue, j.State, j.Reason, j.Message, j.ExitCode, j.Attempt,
        j.CreatedAt, j.StartedAt, j.FinishedAt,
        j.Spec.Command, j.IsSummary ? null : j.Spec.Args, j.Spec.WorkingDir, j.Spec.User, j.EnvNames ?? j.Spec.Env.Keys.Order(StringComparer.Ordinal).ToList(),
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
        Array: j.IsArrayParent ? new ArrayDto(j.Spec.Array!.Size, j.Spec.Array.Parallelism, null) : null,
        ParentId: j.ParentId,
        ArrayIndex: j.ArrayIndex,
        DependsOn: j.Spec.DependsOn.Select(d => new DependencyDto(d.Job, d.Condition)).ToList(),
        InputsFrom: j.Spec.InputsFrom.Select(i => new InputsFromDto(i.Job, i.Path)).ToList(),
        ScheduleId: j.ScheduleId,
        StopGraceSeconds: j.Spec.StopGraceSeconds,
        RerunOf: j.RerunOf,
        Env: j.IsSummary ? null : j.Spec.Env,
        SecretEnvNames: j.Spec.SecretEnvNames,
        Tenant: j.Tenant,
        SubmittedBy: j.SubmittedBy,
        Notify: j.Notify is { } n ? new NotifyDto(n.Url, n.State, n.Attempts, n.LastError, n.DeliveredAt) : null,
        LogsTruncated: j.LogsTruncated);

    /// <summary>An array parent's children per state (every state present, 0 when none).</summary>
    public JobDto WithChildCounts(IReadOnlyDictionary<Guid, IReadOnlyDictionary<string, int>> counts) =>
        Array is null ? this : this with
        {
            Array = Array with
            {
                Counts = JobState.All.ToDictionary(s => s, s => counts.TryGetValue(Id, out var c) && c.TryGetValue(s, out var n) ? n : 0),
            },
        };

    /// <summary>The single-job view: with the files it was given.</summary>
    public JobDto WithInputs(JobRecord j) => this with { Inputs = j.Inputs.Select(o => new OutputDto(o.Path, o.Size, o.Sha256)).ToList() };

    public JobDto WithNodeAlive(IReadOnlyDictionary<Guid, bool> alive) =>
        this with { NodeAlive = alive.TryGetValue(Id, out var a) ? a : null };

    public JobDto WithAttempts(IReadOnlyList<JobStore.AttemptRecord> attempts) =>
        this with { Attempts = attempts.Select(a => new AttemptDto(a.Attempt, a.Node, a.State, a.Reason, a.Message, a.ExitCode, a.StartedAt, a.FinishedAt)).ToList() };
}

/// <summary>An array's parent: <c>size</c> children, at most <c>parallelism</c> at once; <c>counts</c>: children per state.</summary>
public sealed record ArrayDto(int Size, int Parallelism, IReadOnlyDictionary<string, int>? Counts);

public sealed record DependencyDto(Guid Job, string Condition);

public sealed record InputsFromDto(Guid Job, string? Path);

/// <summary>A job's webhook (notify.url) and how its delivery went: state waiting (the job has not ended), pending
/// (due, or waiting for its next try), delivered or failed.</summary>
public sealed record NotifyDto(string Url, string State, int Attempts, string? LastError, DateTimeOffset? DeliveredAt);

/// <summary>One run of a job on a node.</summary>
public sealed record AttemptDto(int Attempt, string Node, string State, string? Reason, string? Message, int? ExitCode,
    DateTimeOffset StartedAt, DateTimeOffset? FinishedAt);

/// <param name="Disk">resources.disk as a quantity, <paramref name="DiskBytes"/> in bytes; null for jobs submitted before disk limits.</param>
public sealed record ResourcesDto(double Cpus, string Memory, long MemoryBytes, int Pids, int Gpus, string? GpuModel, string? Disk = null, long? DiskBytes = null);

/// <summary>
/// Measured usage; a null field was not measured on this host. While the job runs it is the usage so far, read
/// every few seconds (<see cref="SampledAt"/>; <see cref="MemoryBytes"/> is the memory in use then); once it ended,
/// what it used in all (no sampledAt, no current memory).
/// </summary>
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
    long? MemoryBytes = null,
    DateTimeOffset? SampledAt = null,
    // Peak of what the job wrote on its disk (root filesystem and /outputs together); null without a disk limit.
    long? DiskBytes = null)
{
    public static UsageDto From(ResourceUsage u) => new(
        u.CpuSeconds, u.CpuUserSeconds, u.CpuSystemSeconds, u.MaxMemoryBytes, u.CpuThrottledPeriods, u.CpuThrottledSeconds, u.OomKills, u.PidsLimitHits, u.Gpus,
        u.SampledAt is null ? null : u.MemoryBytes, u.SampledAt, u.DiskBytes);
}

public sealed record OutputDto(string Path, long Size, string Sha256);

public sealed record JobListDto(IReadOnlyList<JobDto> Items, string? NextCursor);

/// <summary>
/// A job as <c>GET /api/v1/jobs?view=summary</c> lists it: what tells jobs apart and how they went, without what can
/// be large (command, args, env values, outputs, attempts). The names of env and secretEnv stay (bounded by the
/// submission limit, and what people look for). The single-job view keeps everything.
/// </summary>
public sealed record JobSummaryDto(
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
    ResourcesDto Resources,
    IReadOnlyDictionary<string, string> Labels,
    UsageDto? Usage,
    string? Node,
    bool? NodeAlive,
    Guid? RerunOf,
    IReadOnlyList<string> EnvNames,
    IReadOnlyList<string>? SecretEnvNames,
    string Tenant,
    string? SubmittedBy,
    NotifyDto? Notify,
    bool LogsTruncated,
    // Workflows: an array's size, parallelism and children per state (small: one count per state), its dependencies,
    // and the schedule that started it.
    ArrayDto? Array = null,
    IReadOnlyList<DependencyDto>? DependsOn = null,
    Guid? ScheduleId = null)
{
    public static JobSummaryDto From(JobDto j) => new(
        j.Id, j.Name, j.Image, j.ImageDigest, j.Queue, j.State, j.Reason, j.Message, j.ExitCode, j.Attempt,
        j.CreatedAt, j.StartedAt, j.FinishedAt, j.Resources, j.Labels, j.Usage, j.Node, j.NodeAlive, j.RerunOf,
        j.EnvNames, j.SecretEnvNames, j.Tenant, j.SubmittedBy, j.Notify, j.LogsTruncated, j.Array, j.DependsOn, j.ScheduleId);
}

public sealed record JobSummaryListDto(IReadOnlyList<JobSummaryDto> Items, string? NextCursor);
