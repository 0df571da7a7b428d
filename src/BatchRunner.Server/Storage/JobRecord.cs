using BatchRunner.Core;

namespace BatchRunner.Server.Storage;

/// <summary>A job as stored in batchrunner.jobs (plus its outputs when read with them).</summary>
public sealed record JobRecord
{
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
    public IReadOnlyList<OutputFile> Outputs { get; init; } = [];
    /// <summary>An array's child: its parent's id and its index (0..size-1).</summary>
    public Guid? ParentId { get; init; }
    public int? ArrayIndex { get; init; }
    /// <summary>The schedule that submitted this job, if any.</summary>
    public Guid? ScheduleId { get; init; }

    /// <summary>An array's parent: it runs no container, its children do.</summary>
    public bool IsArrayParent => ParentId is null && Spec.Array is not null;

    /// <summary>Whose uploaded inputs the job mounts at /inputs: a child shares its parent's.</summary>
    public Guid InputsOwner => ParentId ?? Id;

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
}

public sealed record PullProgressRecord(long BytesDone, long BytesTotal);

public sealed record OutputFile(string Path, long Size, string Sha256);

/// <summary>How an attempt ended, as the performer records it.</summary>
public sealed record JobOutcome(
    string State,
    string? Reason,
    string? Message,
    int? ExitCode,
    ResourceUsage? Usage,
    IReadOnlyList<OutputFile> Outputs);
