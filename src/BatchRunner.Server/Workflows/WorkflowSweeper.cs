using BatchRunner.Core;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Workflows;

/// <summary>
/// Moves workflows on, on every node: waiting jobs to queued once their dependencies hold (or to cancelled /
/// dependency_failed once one never can, cascading down a chain), arrays to their end once every child has ended,
/// free slots of an array to its next children (a Hangfire message each, never more than its parallelism
/// dispatched at once), and Hangfire's state of each job that changed outside a worker to match it. And every minute,
/// schedules to their Hangfire recurring jobs.
/// </summary>
/// <remarks>
/// A pass runs when this process's <see cref="WorkflowSignal"/> is pulsed (a job ended, was cancelled, or was submitted
/// with dependencies or children here) and every <see cref="Tick"/> otherwise. Every change that gives a sweeper work
/// pulses the node that made it, whose own sweeper moves it on at once; the tick is for what a node left half done when it
/// crashed (another node's sweeper finishes it within a tick), so it can be long: a pass costs several statements. Every step is one statement or transaction that claims its rows
/// (<c>FOR UPDATE SKIP LOCKED</c>, or the array's parent row): passes on many nodes at once never do the same work
/// twice, and a crash between a database change and its Hangfire change leaves a flag the next pass picks up.
/// </remarks>
public sealed partial class WorkflowSweeper(
    JobStore jobs, JobQueue queue, ScheduleStore schedules, ScheduleQueue recurring, WorkflowSignal signal, ILogger<WorkflowSweeper> log)
    : BackgroundService
{
    /// <summary>How often a pass runs without a pulse (it was 2 s, when it was also how another node's changes were found:
    /// idle, its five statements a pass were a tenth of a node's database traffic).</summary>
    public static readonly TimeSpan Tick = TimeSpan.FromSeconds(10);
    /// <summary>Pulsed when a job ends, is cancelled, or is submitted with dependencies or children here.</summary>
    private readonly WorkflowSignal.Subscription changed = signal.Subscribe();
    private static readonly TimeSpan ScheduleCheck = TimeSpan.FromMinutes(1);
    /// <summary>Children given a Hangfire message per array per round (each costs one Hangfire create, a few ms).</summary>
    public const int DispatchBatch = 100;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var nextScheduleCheck = 0L;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await PassAsync(stoppingToken);
                if (Environment.TickCount64 >= nextScheduleCheck)
                {
                    await ReconcileSchedulesAsync(stoppingToken);
                    nextScheduleCheck = Environment.TickCount64 + (long)ScheduleCheck.TotalMilliseconds;
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { return; }
            catch (Exception e)
            {
                // The database away, most often: the next pass tries again.
                LogPassFailed(log, e);
            }
            try { await changed.WaitAsync(Tick, stoppingToken); }
            catch (OperationCanceledException) { return; }
        }
    }

    /// <summary>One pass over every kind of work (public for tests that drive it).</summary>
    public async Task PassAsync(CancellationToken ct)
    {
        // Each round moves one level of a chain (a cancelled job's dependents are cancelled in the next).
        for (var round = 0; round < 100; round++)
        {
            var (moved, ended) = await jobs.ResolveWaitingAsync(ct);
            var arrays = await jobs.FinishArraysAsync(ct);
            foreach (var e in ended.Concat(arrays))
                BatchRunnerMetrics.JobsFinished.WithLabels(e.Queue, e.State, e.Reason ?? BatchRunnerMetrics.NoReason).Inc();
            // Jobs ended here (an array, a dependent that can never run): their webhooks are due now.
            if (ended.Count + arrays.Count > 0) signal.Pulse();
            if (moved == 0 && arrays.Count == 0) break;
        }
        foreach (var parent in await jobs.ArraysToDispatchAsync(ct))
        {
            IReadOnlyList<JobStore.DispatchedChild> children;
            do
            {
                children = await jobs.ReserveChildrenAsync(parent, DispatchBatch, ct);
                foreach (var child in children) await queue.EnqueueAsync(child.Id, child.DisplayName, child.Queue, child.Tenant, ct);
                if (children.Count > 0) LogDispatched(log, parent, children.Count);
            } while (children.Count == DispatchBatch);
        }
        for (var round = 0; round < 20 && await queue.SyncStatesAsync(ct) > 0; round++) { }
    }

    /// <summary>Every schedule that should fire has its recurring job, with its cron; no other BatchRunner recurring job exists
    /// (a crash between the row and Hangfire, a schedule deleted on another node while this one was away).</summary>
    private async Task ReconcileSchedulesAsync(CancellationToken ct)
    {
        var wanted = (await schedules.ListAsync(tenant: null, ct)).Where(s => !s.Paused).ToDictionary(s => s.Id);
        var registered = (await recurring.RegisteredAsync()).ToDictionary(r => r.Id);
        foreach (var s in wanted.Values)
            if (!registered.TryGetValue(s.Id, out var r) || r.Cron != s.Cron)
            {
                await recurring.RegisterAsync(s);
                LogScheduleRegistered(log, s.Id, s.Name);
            }
        foreach (var id in registered.Keys.Where(id => !wanted.ContainsKey(id)))
        {
            await recurring.RemoveAsync(id);
            LogScheduleRemoved(log, id);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Workflow pass failed; trying again")]
    private static partial void LogPassFailed(ILogger log, Exception e);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Array {JobId}: {Count} children dispatched")]
    private static partial void LogDispatched(ILogger log, Guid jobId, int count);

    [LoggerMessage(Level = LogLevel.Information, Message = "Schedule {ScheduleId} ({Name}) had no recurring job, or another cron; registered")]
    private static partial void LogScheduleRegistered(ILogger log, Guid scheduleId, string name);

    [LoggerMessage(Level = LogLevel.Information, Message = "Recurring job of schedule {ScheduleId} removed: the schedule is paused or gone")]
    private static partial void LogScheduleRemoved(ILogger log, Guid scheduleId);
}
