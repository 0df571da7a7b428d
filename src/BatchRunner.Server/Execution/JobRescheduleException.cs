using BatchRunner.Server.Storage;
using Hangfire.Common;
using Hangfire.States;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Thrown by the performer when this node must not run the job now: it goes back to its queue (at once,
/// for another node to take) or to Hangfire's schedule (after a delay: a retry back-off, a full queue).
/// Not a failure: <see cref="RescheduleFilter"/> turns it into the right state.
/// </summary>
public sealed class JobRescheduleException(string reason, TimeSpan? delay = null) : Exception(reason)
{
    public TimeSpan? Delay { get; } = delay;
}

/// <summary>
/// Turns a <see cref="JobRescheduleException"/> into Enqueued (no delay) or Scheduled state, and a delivery
/// that failed because the database was away into a new delivery shortly after.
/// </summary>
public sealed class RescheduleFilter : JobFilterAttribute, IElectStateFilter
{
    /// <summary>Hangfire's filters are global: one instance, added once however many hosts a process builds.</summary>
    public static readonly RescheduleFilter Instance = new();

    /// <summary>How soon a delivery that failed for a database outage is tried again.</summary>
    public static readonly TimeSpan OutageRetryDelay = TimeSpan.FromSeconds(2);

    public void OnStateElection(ElectStateContext context)
    {
        if (context.CandidateState is FailedState { Exception: { } e } &&
            Replacement(e, context.BackgroundJob.Job.Queue ?? EnqueuedState.DefaultQueue) is { } state)
            context.CandidateState = state;
    }

    /// <summary>
    /// The state that replaces Failed for <paramref name="e"/>, or null when the failure stands. A database
    /// outage is not the job's failure: Hangfire's own filters read the database before the job method runs
    /// (job parameters, on a connection the outage may have broken), and a failed job stays failed (no
    /// automatic retries), which left the BatchRunner job queued for good. Nothing can run twice: attempts
    /// are fenced, and a delivery of a job that is final or running elsewhere runs nothing.
    /// </summary>
    public static IState? Replacement(Exception e, string queue) => e switch
    {
        JobRescheduleException { Delay: { } delay } r when delay > TimeSpan.Zero => new ScheduledState(delay) { Reason = r.Message },
        JobRescheduleException r => new EnqueuedState(queue) { Reason = r.Message },
        _ when DatabaseErrors.IsOutage(e) => new ScheduledState(OutageRetryDelay) { Reason = $"the database was away ({e.GetBaseException().Message}); delivered again" },
        _ => null,
    };
}
