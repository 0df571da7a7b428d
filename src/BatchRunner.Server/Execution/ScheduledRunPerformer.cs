using BatchRunner.Core;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Storage;
using Hangfire.Server;
using Hangfire.States;

namespace BatchRunner.Server.Execution;

/// <summary>
/// A schedule firing (<see cref="IScheduleRunner"/>, the Hangfire job its recurring job creates): starts one run of the
/// schedule and runs it, as <see cref="JobPerformer"/> runs a submitted job. The run is a BatchRunner job whose Hangfire
/// message is this very Hangfire job, so the dashboard's Recurring Jobs page links each firing to its run and every
/// count stays one job per run. A firing that forbid skips ends Deleted, naming the run that is still going (the skip is
/// recorded on the schedule); replace cancels that run first.
/// </summary>
public sealed partial class ScheduledRunPerformer(ScheduleStore schedules, JobQueue queue, JobExecutor executor, ILogger<ScheduledRunPerformer> log) : IScheduleRunner
{
    public async Task RunAsync(Guid scheduleId, string displayName, PerformContext? context, CancellationToken cancellationToken)
    {
        var hangfireId = context?.BackgroundJob.Id ?? throw new InvalidOperationException("a schedule's run needs its Hangfire job (PerformContext)");
        // The fetch that delivered this firing took this process's turn to admit a job (Scheduling/FairShare): the executor
        // gives it back once the run has begun or gone back, and a firing that starts no run gives it back at once. Held
        // for the run's whole life, it would keep this process from fetching anything else meanwhile.
        var turn = FetchTurn.TakeCurrent();
        ScheduleRun run;
        try { run = await Durably.RunAsync(c => schedules.StartRunAsync(scheduleId, hangfireId, s => JobRecord.New(s.Spec with { Name = s.Spec.Name ?? s.Name }), c)); }
        catch
        {
            turn?.Dispose();
            throw;
        }
        if (run is not (ScheduleRun.Existing or ScheduleRun.Started)) turn?.Dispose();
        switch (run)
        {
            case ScheduleRun.Existing existing:
                await executor.ExecuteAsync(existing.JobId, cancellationToken, turn);
                return;
            case ScheduleRun.Started started:
                LogStarted(log, scheduleId, started.Job.Id);
                BatchRunnerMetrics.JobsSubmitted.WithLabels(started.Job.Queue).Inc();
                if (started.Replaces is { } previous)
                {
                    JobStore.CancelOutcome cancelled;
                    try { cancelled = await queue.CancelAsync(previous, tenant: null, CancellationToken.None); }
                    catch
                    {
                        turn?.Dispose();
                        throw;
                    }
                    foreach (var (queueName, count) in cancelled.CancelledNow)
                        BatchRunnerMetrics.JobsFinished.WithLabels(queueName, JobState.Cancelled, FailureReason.Cancelled).Inc(count);
                    LogReplaced(log, scheduleId, previous);
                }
                await executor.ExecuteAsync(started.Job.Id, cancellationToken, turn);
                return;
            case ScheduleRun.Skipped skipped:
                LogSkipped(log, scheduleId, skipped.Message);
                throw new JobStateException(new DeletedState { Reason = $"skipped: {skipped.Message}" });
            case ScheduleRun.NotRunnable gone:
                throw new JobStateException(new DeletedState { Reason = $"not run: {gone.Why}" });
            default:
                throw new ArgumentOutOfRangeException(nameof(run), run, "a schedule run this performer does not know");
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Schedule {ScheduleId}: run {JobId} started")]
    private static partial void LogStarted(ILogger log, Guid scheduleId, Guid jobId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Schedule {ScheduleId}: the previous run {JobId} was still going; cancelled (concurrency replace)")]
    private static partial void LogReplaced(ILogger log, Guid scheduleId, Guid jobId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Schedule {ScheduleId}: {Message}")]
    private static partial void LogSkipped(ILogger log, Guid scheduleId, string message);
}
