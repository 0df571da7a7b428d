using BatchRunner.Core;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Nodes;

/// <summary>
/// A queued job never stays queued because of what was done to its message in Hangfire's own dashboard: every
/// <see cref="BatchRunnerOptions.ReconcileSeconds"/>, on every node, a job whose message was deleted there ends
/// <c>cancelled</c> (saying so), and one whose message ended there or is gone gets a new message (re-enqueued); nor because
/// a worker died between fetching its message and beginning it (the message is made fetchable again after a lease).
/// </summary>
/// <remarks>
/// Idempotent across nodes: each change is a conditional write on the job's current message id, so two nodes
/// reconciling at once change a job once. A starting or running job whose message is deleted there is cancelled at once,
/// as by the API (<see cref="Hosting.DashboardDeleteCancels"/>), not here.
/// </remarks>
public sealed partial class QueueReconciler(JobStore store, JobQueue queue, IOptions<BatchRunnerOptions> options, ILogger<QueueReconciler> log)
    : BackgroundService
{
    public const string DeletedMessage = "deleted in the Hangfire dashboard before it ran";
    /// <summary>How long a message may look ended or gone before the job gets a new one (see <see cref="JobStore.FindOrphanedQueuedAsync"/>).</summary>
    public static readonly TimeSpan Grace = TimeSpan.FromSeconds(60);
    private const int BatchSize = 500;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(options.Value.ReconcileSeconds));
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
        {
            try
            {
                await ReconcileAsync(Grace, stoppingToken);
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                LogFailed(log, e.Message);
            }
        }
    }

    /// <summary>One pass; <paramref name="grace"/>: how long a message must have looked ended or gone (<see cref="Grace"/>).</summary>
    public async Task ReconcileAsync(TimeSpan grace, CancellationToken ct)
    {
        // Fetched by a worker that died before it began the job: fetchable again once a node's lease has passed.
        foreach (var (id, hangfireJobId) in await store.ReleaseAbandonedFetchesAsync(NodeRegistry.LeaseOf(options.Value.HeartbeatSeconds), ct))
            LogReleased(log, id, hangfireJobId);
        foreach (var orphan in await store.FindOrphanedQueuedAsync(grace, BatchSize, ct))
        {
            if (orphan.DeletedInHangfire && orphan.IsArrayParent)
            {
                // The array is cancelled as through the API: its children with it.
                var outcome = await queue.CancelAsync(orphan.Id, tenant: null, ct);
                foreach (var (queueName, count) in outcome.CancelledNow)
                    BatchRunnerMetrics.JobsFinished.WithLabels(queueName, JobState.Cancelled, FailureReason.Cancelled).Inc(count);
                LogCancelled(log, orphan.Id, orphan.HangfireJobId);
            }
            else if (orphan.DeletedInHangfire)
            {
                if (!await store.CancelOrphanAsync(orphan.Id, orphan.HangfireJobId, DeletedMessage, ct)) continue;
                BatchRunnerMetrics.JobsFinished.WithLabels(orphan.Queue, JobState.Cancelled, FailureReason.Cancelled).Inc();
                LogCancelled(log, orphan.Id, orphan.HangfireJobId);
            }
            else if (await queue.ReplaceAsync(orphan, ct))
                LogReenqueued(log, orphan.Id, orphan.HangfireJobId, orphan.HangfireState ?? "gone");
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: its Hangfire job {HangfireJobId} was deleted in the dashboard; the job is cancelled")]
    private static partial void LogCancelled(ILogger log, Guid jobId, string hangfireJobId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: queued, but its Hangfire job {HangfireJobId} is {HangfireState}; enqueued again")]
    private static partial void LogReenqueued(ILogger log, Guid jobId, string hangfireJobId, string hangfireState);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: its Hangfire job {HangfireJobId} was fetched by a worker that never began it (the worker died); it can be fetched again")]
    private static partial void LogReleased(ILogger log, Guid jobId, string hangfireJobId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Queue reconciliation failed ({Reason}); trying again")]
    private static partial void LogFailed(ILogger log, string reason);
}
