using BatchRunner.Server.Storage;
using Hangfire.States;
using Hangfire.Storage;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// A processing job deleted in Hangfire's dashboard is cancelled, as by <c>POST /api/v1/jobs/{id}/cancel</c>: its flag is
/// set, and the node running it is woken by the cancel notification (<see cref="CancelSignal"/>) and stops it (stop signal,
/// then SIGKILL after its stopGraceSeconds). Before this, Hangfire's token fired on that node at its next cancellation
/// check and the job, having no cancel request behind it, ran on.
/// </summary>
/// <remarks>
/// BatchRunner's own transitions from Processing to Deleted (a cancelled job ending, an API cancel's delete) find the
/// flag already set or the job ended, and change nothing. Process-wide (Hangfire's filters are): the request goes to the
/// database of the host whose storage the change was made in (<see cref="CancelSignalRequests.Register"/>), off the
/// dashboard's thread; if the database is away, the delete is only Hangfire's (as before).
/// </remarks>
internal sealed class DashboardDeleteCancels : IApplyStateFilter
{
    public static readonly DashboardDeleteCancels Instance = new();

    public void OnStateApplied(ApplyStateContext context, IWriteOnlyTransaction transaction)
    {
        if (context.NewState is not DeletedState || context.OldStateName != ProcessingState.StateName) return;
        var storage = context.Storage;
        var id = context.BackgroundJob.Id;
        _ = Task.Run(async () =>
        {
            try
            {
                await CancelSignalRequests.RequestForHangfireJobAsync(storage, id, CancellationToken.None);
            }
            catch (Exception e) when (DatabaseErrors.IsOutage(e) || e is ObjectDisposedException) { }
        });
    }

    public void OnStateUnapplied(ApplyStateContext context, IWriteOnlyTransaction transaction) { }
}
