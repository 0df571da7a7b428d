using System.Collections.Concurrent;
using BatchRunner.Core;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Execution;

/// <summary>
/// The containers this node runs, as their usage is read while they run: the container phase tracks each one from
/// the moment it is marked running until it has exited; <see cref="LiveUsagePublisher"/> reads them all.
/// </summary>
public sealed class LiveUsage
{
    private readonly ConcurrentDictionary<(Guid JobId, int Attempt), Func<ResourceUsage>> _running = new();

    /// <summary>Tracks attempt <paramref name="attempt"/> of a job; <paramref name="read"/> reads its usage so far (the
    /// cgroup, and its GPUs'). Disposing the handle stops tracking it.</summary>
    public IDisposable Track(Guid jobId, int attempt, Func<ResourceUsage> read)
    {
        _running[(jobId, attempt)] = read;
        return new Handle(() => _running.TryRemove((jobId, attempt), out _));
    }

    /// <summary>Every tracked attempt's usage now; one that cannot be read (its cgroup just went away) is left out.</summary>
    public IReadOnlyList<LiveUsageSample> Sample(DateTimeOffset now)
    {
        var samples = new List<LiveUsageSample>();
        foreach (var ((jobId, attempt), read) in _running)
        {
            try { samples.Add(new LiveUsageSample(jobId, attempt, read() with { SampledAt = now })); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or ObjectDisposedException) { }
        }
        return samples;
    }

    private sealed class Handle(Action release) : IDisposable
    {
        private int _done;
        public void Dispose() { if (Interlocked.Exchange(ref _done, 1) == 0) release(); }
    }
}

/// <summary>
/// Writes the usage of this node's running jobs to their records every <see cref="BatchRunnerOptions.LiveUsageSeconds"/>,
/// in one statement per node and period, so that <c>usage</c> shows CPU seconds so far, current and peak memory and the
/// GPUs' figures while a job runs, on whichever API node is asked, in the single job and in lists alike.
/// </summary>
/// <remarks>
/// Publishing beats forwarding each GET to the node running the job (as logs are): a GET or a list then costs no
/// extra hop and works while that node is unreachable, and the cost is one UPDATE per node per period whatever the
/// number of readers. The figures are at most one period old (<c>usage.sampledAt</c> says when). Each write is fenced
/// by the attempt and the running state, so a late sample never overwrites the final usage.
/// </remarks>
public sealed partial class LiveUsagePublisher(LiveUsage live, JobStore store, IOptions<BatchRunnerOptions> options, TimeProvider time,
    ILogger<LiveUsagePublisher> log) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(Math.Max(1, options.Value.LiveUsageSeconds)), time);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            var samples = live.Sample(time.GetUtcNow());
            if (samples.Count == 0) continue;
            try
            {
                await store.PublishUsageAsync(samples, stoppingToken);
            }
            catch (Exception e) when (DatabaseErrors.IsOutage(e))
            {
                LogDatabaseAway(log, samples.Count, e.Message); // the next period tries again with fresher figures
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Live usage of {Count} running jobs not written (database away): {Reason}")]
    private static partial void LogDatabaseAway(ILogger log, int count, string reason);
}
