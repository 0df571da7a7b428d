using BatchRunner.Core;
using BatchRunner.Server.Storage;
using Hangfire.Common;
using Hangfire.States;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Thrown by the performer to leave the job's Hangfire message in <see cref="State"/> instead of Succeeded: a cancelled job
/// goes to Deleted, one that waits for dependencies to Awaiting, an array's parent to <see cref="ArrayParentState"/> (a job
/// that failed throws <see cref="JobFailedException"/> itself, which Hangfire's Failed state shows as it is). Not a failure of the performer: <see cref="HangfireStateMirrorFilter"/> elects the state.
/// </summary>
public sealed class JobStateException(IState state) : Exception(state.Reason)
{
    public IState State { get; } = state;
}

/// <summary>
/// Elects the <see cref="JobStateException.State"/> the performer asked for, and names a BatchRunner failure
/// (<see cref="JobFailedException"/>) as such in Hangfire's Failed state. Hangfire's history keeps the candidate a filter
/// replaced: that entry says it was no failure.
/// </summary>
public sealed class HangfireStateMirrorFilter : JobFilterAttribute, IElectStateFilter
{
    /// <summary>Hangfire's filters are global: one instance, added once however many hosts a process builds.</summary>
    public static readonly HangfireStateMirrorFilter Instance = new();

    public void OnStateElection(ElectStateContext context)
    {
        switch (context.CandidateState)
        {
            case FailedState { Exception: JobFailedException e } failed:
                failed.Reason = HangfireStates.FailedReason(e.Reason);
                break;
            case FailedState { Exception: JobStateException e } failed:
                failed.Reason = $"{HangfireStates.MirrorReason}: not a failure; its state follows";
                context.CandidateState = e.State;
                break;
        }
    }
}

/// <summary>
/// What a worker leaves in Hangfire for a job it does not run (any more): the Hangfire state matching the job's row, so
/// that the dashboard's lists and counts say what the API says. A worker never returns normally (Hangfire's Succeeded)
/// for a job that did not succeed, whatever delivered it: a duplicate, a re-delivery after a crash, or "Requeue" pressed
/// in the dashboard on a job that has ended (refused: the job's record is unchanged and the message goes back to the
/// state its end calls for, saying why).
/// </summary>
internal static class HangfireStateMirror
{
    /// <summary>How long a delivery of a job that runs elsewhere (on a live node) waits before it looks again.</summary>
    public static readonly TimeSpan RunningElsewhereDelay = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Ends this delivery of <paramref name="job"/>, which is not run here: returns for a succeeded job (Hangfire's
    /// Succeeded), throws the exception that elects the matching state otherwise. <paramref name="awaitingParent"/> is
    /// the parent Hangfire's Awaiting page shows (the first dependency with a Hangfire message); <paramref name="redelivered"/>:
    /// the job had already ended before this delivery.
    /// </summary>
    public static async Task EndAsync(JobRecord job, Func<Task<string>> awaitingParent, bool redelivered)
    {
        switch (job.State)
        {
            case JobState.Succeeded:
                return;
            case JobState.Failed:
                throw new JobFailedException(job.Reason, job.Message, redelivered
                    ? $"delivered again after it had ended ({job.FinishedAt:u}); BatchRunner does not run an ended job again: submit it anew"
                    : null);
            case JobState.Cancelled:
                throw new JobStateException(HangfireStates.Deleted(job.Reason, job.Message));
            case JobState.Waiting:
                throw new JobStateException(HangfireStates.Awaiting(await awaitingParent(), job.Queue, job.Message));
            case not null when job.IsArrayParent:
                throw new JobStateException(new ArrayParentState(job.Spec.Array!.Size, job.Spec.Array.Parallelism));
            default:
                // Starting or running on another live node (or in this process): this delivery is a duplicate. It looks
                // again later, and then ends as the job did; returning would read as Succeeded whatever the end.
                throw new JobRescheduleException(
                    $"job is {job.State} on node {job.Node ?? "?"} (attempt {job.Attempt}); this delivery looks again in {RunningElsewhereDelay.TotalSeconds:0} s",
                    RunningElsewhereDelay);
        }
    }
}
