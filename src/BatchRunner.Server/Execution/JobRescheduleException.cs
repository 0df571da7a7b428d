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

/// <summary>Turns a <see cref="JobRescheduleException"/> into Enqueued (no delay) or Scheduled state.</summary>
public sealed class RescheduleFilter : JobFilterAttribute, IElectStateFilter
{
    /// <summary>Hangfire's filters are global: one instance, added once however many hosts a process builds.</summary>
    public static readonly RescheduleFilter Instance = new();

    public void OnStateElection(ElectStateContext context)
    {
        if (context.CandidateState is not FailedState { Exception: JobRescheduleException e }) return;
        var queue = context.BackgroundJob.Job.Queue ?? EnqueuedState.DefaultQueue;
        context.CandidateState = e.Delay is { } delay && delay > TimeSpan.Zero
            ? new ScheduledState(delay) { Reason = e.Message }
            : new EnqueuedState(queue) { Reason = e.Message };
    }
}
