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
/// or move it, nor change the method's signature or attributes.
/// </remarks>
public sealed class JobPerformer(JobExecutor executor) : IJobPerformer
{
    [AutomaticRetry(Attempts = 0, OnAttemptsExceeded = AttemptsExceededAction.Fail)]
    [JobDisplayName("{1}")]
    [DisplayName("{1}")]
    public Task RunAsync(Guid jobId, string displayName, CancellationToken cancellationToken)
    {
        // The fetch that delivered this message took this process's turn to admit a job (Scheduling/FairShare); the
        // executor gives it back once the job has begun or gone back.
        var running = executor.ExecuteAsync(jobId, cancellationToken, FetchTurn.TakeCurrent());
        // Hangfire's worker waits for the task returned with Task.Wait, which spins (sched_yield) before it blocks: 1.1 %
        // of the server's CPU samples at 33 trivial jobs/s on 2 cores. This worker thread sleeps here instead, and
        // Hangfire gets the task completed, its exception or cancellation as it was.
        SleepUntilCompleted(running);
        return running;
    }

    /// <summary>Blocks the calling thread until <paramref name="task"/> has completed, asleep from the start.</summary>
    internal static void SleepUntilCompleted(Task task)
    {
        if (task.IsCompleted) return;
        var gate = new object();
        var done = false;
        task.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(() =>
        {
            lock (gate)
            {
                done = true;
                Monitor.Pulse(gate);
            }
        });
        lock (gate)
            while (!done) Monitor.Wait(gate);
    }
}
