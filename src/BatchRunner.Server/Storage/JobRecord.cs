using BatchRunner.Core;

namespace BatchRunner.Server.Storage;

/// <summary>A job as stored in batchrunner.jobs (plus its outputs when read with them, and its webhook delivery).</summary>
public sealed record JobRecord
{
    public const string DefaultTenant = "default";

    public required Guid Id { get; init; }
    public string? Name { get; init; }
    public required string Image { get; init; }
    public string? ImageDigest { get; init; }
    public required string Queue { get; init; }
    public required JobSpec Spec { get; init; }
    public required string State { get; init; }
    public string? Reason { get; init; }
    public string? Message { get; init; }
    public int? ExitCode { get; init; }
    public int Attempt { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset? StartedAt { get; init; }
    public DateTimeOffset? FinishedAt { get; init; }
    public ResourceUsage? Usage { get; init; }
    public PullProgressRecord? PullProgress { get; init; }
    public string? HangfireJobId { get; init; }
    public bool CancelRequested { get; init; }
    public string? Node { get; init; }
    /// <summary>stdout or stderr went over its cap: the log keeps its first and last parts.</summary>
    public bool LogsTruncated { get; init; }
    public IReadOnlyList<OutputFile> Outputs { get; init; } = [];
    /// <summary>The files given at submission (under /inputs); read with the single job, stored with its insert.</summary>
    public IReadOnlyList<OutputFile> Inputs { get; init; } = [];
    /// <summary>Where those files are packed (the tar the node that runs the job fetches); null when there were none.</summary>
    public InputsTar? InputsTar { get; init; }
    /// <summary>The job this one reruns (POST /api/v1/jobs/{id}/rerun).</summary>
    public Guid? RerunOf { get; init; }
    /// <summary>An array's child: its parent's id and its index (0..size-1).</summary>
    public Guid? ParentId { get; init; }
    public int? ArrayIndex { get; init; }
    /// <summary>The schedule that submitted this job, if any.</summary>
    public Guid? ScheduleId { get; init; }

    /// <summary>An array's parent: it runs no container, its children do.</summary>
    public bool IsArrayParent => ParentId is null && Spec.Array is not null;

    /// <summary>
    /// A new job made from <paramref name="spec"/>: waiting when it has dependencies (the workflow sweeper queues it once
    /// they hold, at once when they already do), queued otherwise.
    /// </summary>
    public static JobRecord New(JobSpec spec, Guid? scheduleId = null) => new()
    {
        Id = Guid.CreateVersion7(),
        Name = spec.Name,
        Image = spec.Image,
        Queue = spec.Queue,
        Spec = spec,
        State = spec.DependsOn.Count > 0 ? JobState.Waiting : JobState.Queued,
        Message = spec.DependsOn.Count > 0 ? $"waiting for {spec.DependsOn.Count} dependenc{(spec.DependsOn.Count == 1 ? "y" : "ies")}" : null,
        CreatedAt = DateTimeOffset.UtcNow,
        ScheduleId = scheduleId,
    };

    /// <summary>The name Hangfire shows: a child's carries its index.</summary>
    public string DisplayName => (Name ?? Image) + (ArrayIndex is { } i ? $" [{i}]" : "");
    /// <summary>The tenant that owns the job: only its keys (and admins) see it.</summary>
    public string Tenant { get; init; } = DefaultTenant;
    /// <summary>Id of the key that submitted it ("bootstrap" for the configured key; null for jobs from before keys).</summary>
    public string? SubmittedBy { get; init; }
    /// <summary>Its secrets, encrypted (<see cref="JobSecretStore.Protect"/>); set for an insert only, never read back here.</summary>
    public byte[]? ProtectedSecrets { get; init; }
    /// <summary>Whether it has stored secrets (environment or webhook key); read for an attempt only
    /// (<see cref="JobStore.GetForAttemptAsync"/>), true elsewhere so that nobody skips a read on a guess.</summary>
    public bool HasSecrets { get; init; } = true;
    /// <summary>Its webhook delivery, when it asked for one (notify.url).</summary>
    public NotificationRecord? Notify { get; init; }
    /// <summary>Read for a list: <see cref="Spec"/> lacks <c>args</c> and <c>env</c> (their size is only bounded by
    /// the submission limit), and <see cref="EnvNames"/> has the names.</summary>
    public bool IsSummary { get; init; }
    public IReadOnlyList<string>? EnvNames { get; init; }
}

/// <summary>
/// Where a job's inputs are: a tar named by its <paramref name="Digest"/>, kept by node <paramref name="Node"/> (which
/// took the submission) and served node-to-node at <paramref name="Url"/>. The node that runs the job fetches it,
/// checks the digest and unpacks it before the container starts.
/// </summary>
public sealed record InputsTar(string Digest, long Bytes, string Node, string? Url);

public sealed record PullProgressRecord(long BytesDone, long BytesTotal);

/// <summary>A regular file of a job's directory (its outputs, or its inputs), relative to that directory.</summary>
public sealed record OutputFile(string Path, long Size, string Sha256);

/// <summary>The usage of a running attempt as read now (<see cref="ResourceUsage.SampledAt"/> set).</summary>
public sealed record LiveUsageSample(Guid JobId, int Attempt, ResourceUsage Usage);

/// <summary>How an attempt ended, as the performer records it.</summary>
public sealed record JobOutcome(
    string State,
    string? Reason,
    string? Message,
    int? ExitCode,
    ResourceUsage? Usage,
    IReadOnlyList<OutputFile> Outputs);
