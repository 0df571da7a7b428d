using System.ComponentModel;
using BatchRunner.Server.Storage;
using Hangfire;

namespace BatchRunner.Server.Execution;

/// <summary>
/// The worker's <see cref="IJobPerformer"/>: Hangfire activates it for each delivery and it hands the job to
/// the <see cref="JobExecutor"/>.
/// </summary>
/// <remarks>
/// Its full name is part of the stored data: Hangfire messages enqueued before <see cref="IJobPerformer"/>
/// existed name this class (<c>BatchRunner.Server.Execution.JobPerformer, batchrunner</c>) and its method
/// <c>RunAsync(Guid, string, CancellationToken)</c>, and Hangfire reads their filters from here. Do not rename
/// or move it, nor change the methods' signatures or attributes (messages name <see cref="IJobPerformer.Run"/> since
/// 2026-12-01, <see cref="IJobPerformer.RunAsync"/> before).
/// </remarks>
public sealed class JobPerformer(JobExecutor executor) : IJobPerformer
{
    /// <summary>What new messages name. Synchronous, so Hangfire calls it on its worker thread itself (a method returning a
    /// task it starts on the thread pool and then waits for twice, spinning each time); the worker waits here for the job
    /// without spinning (<see cref="QuietWait"/>). The worker's thread is held as before, for as long as the job runs; no
    /// thread-pool thread is. No attributes here: the messages that name this method name <see cref="IJobPerformer"/>,
    /// and Hangfire reads their filters and display name from its declaration.</summary>
    public void Run(Guid jobId, string displayName, CancellationToken cancellationToken) =>
        // The fetch that delivered this message took this process's turn to admit a job (Scheduling/FairShare), on this
        // very thread; the executor gives it back once the job has begun or gone back.
        QuietWait.Wait(executor.ExecuteAsync(jobId, cancellationToken, FetchTurn.TakeCurrent()));

    /// <summary>What messages enqueued before <see cref="Run"/> existed name.</summary>
    [AutomaticRetry(Attempts = 0, OnAttemptsExceeded = AttemptsExceededAction.Fail)]
    [JobDisplayName("{1}")]
    [DisplayName("{1}")]
    public Task RunAsync(Guid jobId, string displayName, CancellationToken cancellationToken) =>
        // The task is returned at once: Hangfire calls this on a thread-pool thread (its TaskScheduler) and its worker
        // thread waits for the task. Sleeping here until the job ended (f779b38) held a pool thread per running job; with
        // twenty jobs running the pool starved, and a node's heartbeat took 7 to 11 s to come back.
        executor.ExecuteAsync(jobId, cancellationToken, FetchTurn.TakeCurrent());
}
