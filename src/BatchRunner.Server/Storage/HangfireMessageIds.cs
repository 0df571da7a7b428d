using Hangfire.States;
using Hangfire.Storage;

namespace BatchRunner.Server.Storage;

/// <summary>
/// Records a new message's Hangfire id on its BatchRunner job in the transaction that creates the message (the one that
/// gives it its first state), instead of in a round trip of its own after it. The caller of Hangfire's <c>Create</c>
/// opens a <see cref="Recording"/> for the job on its thread; this filter (global) adds the job's update
/// (<see cref="JobStore.HangfireJobIdCommand"/>) to that transaction when it creates a message for that job. When it
/// cannot (the library's own commit, <see cref="HangfireBatchedTransaction.AddStatement"/>), nothing is recorded there and
/// the caller records the id itself, as before.
/// </summary>
internal sealed class HangfireMessageIds : IApplyStateFilter
{
    public static readonly HangfireMessageIds Filter = new();

    [ThreadStatic] private static Recording? t_current;

    /// <summary>Until disposed, the creation of a message for <paramref name="jobId"/> on this thread records its id.</summary>
    public static Recording Begin(Guid jobId, JobStore store) => t_current = new Recording(jobId, store);

    public void OnStateApplied(ApplyStateContext context, IWriteOnlyTransaction transaction)
    {
        // A creation (no state before), of a message whose first argument is the job (IJobPerformer.RunAsync), in a batch.
        if (t_current is not { Recorded: null } recording || context.OldStateName is not null
            || transaction is not HangfireBatchedTransaction batched
            || context.BackgroundJob.Job?.Args is not [Guid jobId, ..] || jobId != recording.JobId) return;
        var hangfireId = context.BackgroundJob.Id;
        batched.AddStatement(recording.Store.HangfireJobIdCommand(jobId, hangfireId), JobStore.HangfireSyncColumn, sync =>
        {
            recording.Recorded = hangfireId;
            recording.Store.HangfireJobIdRecorded(sync);
        });
    }

    public void OnStateUnapplied(ApplyStateContext context, IWriteOnlyTransaction transaction) { }

    public sealed class Recording(Guid jobId, JobStore store) : IDisposable
    {
        public Guid JobId => jobId;

        internal JobStore Store => store;

        /// <summary>The Hangfire id recorded on the job with its message's creation; null when it was not.</summary>
        public string? Recorded { get; internal set; }

        public void Dispose()
        {
            if (t_current == this) t_current = null;
        }
    }
}
