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
    /// <summary>The files given at submission; null when there were none.</summary>
    public JobInputs? Inputs { get; init; }
    /// <summary>stdout or stderr went over its cap: the log keeps its first and last parts.</summary>
    public bool LogsTruncated { get; init; }
    public IReadOnlyList<OutputFile> Outputs { get; init; } = [];
}

/// <summary>
/// Where a job's inputs are: a tar named by its <paramref name="Digest"/>, kept by node <paramref name="Node"/> (which
/// took the submission) and served node-to-node at <paramref name="Url"/>. The node that runs the job fetches it,
/// checks the digest and unpacks it before the container starts.
/// </summary>
public sealed record JobInputs(string Digest, long Bytes, string Node, string? Url);

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
