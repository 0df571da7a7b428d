using BatchRunner.Server.Storage;
using Hangfire;
using Hangfire.Common;
using Hangfire.States;
using Hangfire.Storage;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// Enqueues a job this process put in Hangfire's Scheduled state (a retry's back-off, a job bounced by a full node) the
/// moment it is due, instead of when Hangfire's delayed-job scheduler next polls the schedule. So that poll, which takes a
/// distributed lock and costs about eight statements each time on every node, can run every few seconds instead of every
/// second without a scheduled job waiting longer for it.
/// </summary>
/// <remarks>
/// Only a shortcut: the delayed-job scheduler still enqueues every due job (one scheduled by a process that has stopped
/// since, say). The change is Hangfire's own (Scheduled → Enqueued, only from Scheduled, the job's own queue), as the
/// scheduler makes it, so of the two only the first moves the job; a job scheduled again for later meanwhile is left to its
/// new wake-up. Process-wide (Hangfire's filters are), each wake-up uses the storage of the host that scheduled the job.
/// The wake-ups' Hangfire calls run on two threads of the filter's own (<see cref="HangfireCalls"/>), never on the
/// thread pool: a full node bouncing many jobs at once would otherwise block as many pool threads at their due time.
/// </remarks>
internal sealed class DueScheduledJobs : IApplyStateFilter
{
    public static readonly DueScheduledJobs Instance = new();

    /// <summary>For the process's lifetime, as the filter: its threads wait for work without holding anything.</summary>
    private static readonly HangfireCalls Calls = new(2);

    public void OnStateApplied(ApplyStateContext context, IWriteOnlyTransaction transaction)
    {
        if (context.NewState is not ScheduledState scheduled) return;
        var storage = context.Storage;
        var id = context.BackgroundJob.Id;
        var delay = scheduled.EnqueueAt - DateTime.UtcNow;
        // The state is committed after this filter runs: a job due at once waits a moment for that.
        _ = Task.Delay(delay > MinDelay ? delay : MinDelay).ContinueWith(_ => Calls.RunAsync(() => EnqueueIfDue(storage, id)), TaskScheduler.Default);
    }

    public void OnStateUnapplied(ApplyStateContext context, IWriteOnlyTransaction transaction) { }

    private static readonly TimeSpan MinDelay = TimeSpan.FromMilliseconds(50);

    private static void EnqueueIfDue(JobStorage storage, string id)
    {
        try
        {
            using (var connection = storage.GetConnection())
            {
                var state = connection.GetStateData(id);
                if (state?.Name != ScheduledState.StateName) return;
                if (state.Data.TryGetValue("EnqueueAt", out var at) && JobHelper.DeserializeNullableDateTime(at) is { } due && due > DateTime.UtcNow.AddMilliseconds(20))
                    return;
            }
            new BackgroundJobClient(storage).ChangeState(id, new EnqueuedState { Reason = "Due (BatchRunner's wake-up of the jobs it scheduled)" }, ScheduledState.StateName);
        }
        catch (Exception)
        {
            // The host stopped, or the database is away: the delayed-job scheduler's poll enqueues it.
        }
    }
}
