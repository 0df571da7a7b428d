namespace BatchRunner.Server.Storage;

/// <summary>
/// The job store as one attempt uses it: read the job, begin the attempt, record progress and the end. Every
/// write is fenced by the attempt number: a write of an attempt that is no longer the job's current one changes
/// nothing (the methods that can tell return false). <see cref="JobStore"/> in production; executor tests use a fake.
/// </summary>
public interface IAttemptStore
{
    /// <summary>The job's record without the lists of its inputs and outputs (an attempt needs neither); see
    /// <see cref="JobStore.GetForAttemptAsync"/>.</summary>
    Task<JobRecord?> GetForAttemptAsync(Guid id, CancellationToken ct);

    /// <summary>See <see cref="JobStore.BeginAttemptAsync"/>.</summary>
    Task<AttemptStart> BeginAttemptAsync(Guid id, string node, Guid instance, string queue, int? queueLimit, CancellationToken ct);

    /// <summary>See <see cref="JobStore.SetWaitReasonAsync"/>.</summary>
    Task SetWaitReasonAsync(Guid id, string message, CancellationToken ct);

    Task SetPullProgressAsync(Guid id, int attempt, long done, long total, CancellationToken ct);

    Task SetImageDigestAsync(Guid id, int attempt, string digest, CancellationToken ct);

    /// <summary>starting → running. False when the attempt was fenced off or the job cancelled meanwhile.</summary>
    Task<bool> MarkRunningAsync(Guid id, int attempt, DateTimeOffset startedAt, string? imageDigest, CancellationToken ct);

    /// <summary>The job's output went over its cap (<c>logsTruncated</c>).</summary>
    Task MarkLogsTruncatedAsync(Guid id, int attempt, CancellationToken ct);

    /// <summary>The cancel flag (set by the API); the worker's backstop when Hangfire's token did not fire.</summary>
    Task<bool> IsCancelRequestedAsync(Guid id, CancellationToken ct);

    /// <summary>The attempt failed and is retried after <paramref name="delay"/>; false when the attempt was stale.</summary>
    Task<bool> RetryLaterAsync(Guid id, int attempt, JobOutcome outcome, TimeSpan delay, CancellationToken ct);

    /// <summary>The attempt's final outcome (and outputs); false when the attempt was stale.</summary>
    Task<bool> FinishAsync(Guid id, int attempt, JobOutcome outcome, CancellationToken ct);

    /// <summary>See <see cref="JobStore.DependencyLinksAsync"/> (the executor names a waiting job's first dependency to Hangfire).</summary>
    Task<IReadOnlyList<JobStore.DependencyLink>> DependencyLinksAsync(Guid id, bool dependents, CancellationToken ct);

    /// <summary>What <paramref name="producer"/> left in /outputs (each child's, for an array): what a job's <c>inputsFrom</c> mounts.</summary>
    Task<IReadOnlyList<ProducedOutputs>> GetProducedOutputsAsync(Guid producer, CancellationToken ct);

    /// <summary>The worker is shutting down under the attempt: the job goes back to queued, the attempt is closed.</summary>
    Task RequeueAsync(Guid id, int attempt, string message, CancellationToken ct);
}
