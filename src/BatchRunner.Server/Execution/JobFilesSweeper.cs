using BatchRunner.Server.Hosting;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Every <see cref="RetentionSettings.SweepSeconds"/> on every node: deletes the records of finished jobs older than
/// <see cref="RetentionSettings.FinishedJobs"/> (and their Hangfire messages), then removes the files this node owes
/// (of jobs deleted by retention or by DELETE while it was down, or whose forwarded removal failed), and inputs tars
/// no job names. Each node removes only its own files; the records are shared, and a job being deleted by one
/// node is skipped by the others.
/// </summary>
public sealed partial class JobFilesSweeper(JobStore store, JobQueue queue, JobFiles files, IOptions<BatchRunnerOptions> options,
    ILogger<JobFilesSweeper> log) : BackgroundService
{
    private const int Batch = 500;
    /// <summary>An inputs tar younger than this may belong to a submission whose record is being written.</summary>
    private static readonly TimeSpan OrphanInputsAge = TimeSpan.FromMinutes(10);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var retention = options.Value.Retention;
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(retention.SweepSeconds));
        do
        {
            try { await SweepAsync(retention.FinishedJobsAge(), stoppingToken); }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { return; }
            catch (Exception e) { LogSweepFailed(log, e); }
        } while (await WaitAsync(timer, stoppingToken));
    }

    /// <summary>One sweep (also called by tests).</summary>
    public async Task SweepAsync(TimeSpan? maxAge, CancellationToken ct)
    {
        if (maxAge is { } age)
        {
            IReadOnlyList<DeletedJob> expired;
            do
            {
                expired = await store.DeleteFinishedBeforeAsync(age, Batch, ct);
                foreach (var job in expired)
                    if (job.HangfireJobId is { } hf) await queue.PurgeAsync(hf, ct);
                if (expired.Count > 0) LogExpired(log, expired.Count, age.TotalHours);
            } while (expired.Count >= Batch); // (arrays' children come with their parents: a full batch may be more)
        }
        await files.RemoveAllOwedAsync(Batch, ct);
        await files.RemoveOrphanInputsAsync(OrphanInputsAge, ct);
    }

    private static async Task<bool> WaitAsync(PeriodicTimer timer, CancellationToken ct)
    {
        try { return await timer.WaitForNextTickAsync(ct); }
        catch (OperationCanceledException) { return false; }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Retention: deleted {Count} jobs that finished more than {Hours:0.#} h ago")]
    private static partial void LogExpired(ILogger log, int count, double hours);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job files sweep failed; trying again at the next one")]
    private static partial void LogSweepFailed(ILogger log, Exception e);
}
