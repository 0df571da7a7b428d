using BatchRunner.Core;
using BatchRunner.Server.Storage;
using Hangfire;

namespace BatchRunner.Server.Observability;

/// <summary>
/// <c>batchrunner_jobs{state,queue}</c>: one grouped count of the jobs (<see cref="JobStore.CountByStateAndQueueAsync"/>), at most every 2 s however
/// many Prometheus servers scrape. Every known state appears for every configured queue and every queue
/// that has jobs, 0 when empty, so "rate of change" and "absent" queries behave.
/// </summary>
internal sealed class JobCountsCollector(JobStore jobs, IReadOnlyList<string> configuredQueues)
{
    private readonly CachedValue<Dictionary<LabelKey, double>> _counts = new(TimeSpan.FromSeconds(2), ct => CountAsync(jobs, configuredQueues, ct));

    public async Task<Dictionary<LabelKey, double>> SnapshotAsync(CancellationToken ct) => (await _counts.GetAsync(ct)).Value!;

    private static async Task<Dictionary<LabelKey, double>> CountAsync(JobStore jobs, IReadOnlyList<string> configuredQueues, CancellationToken ct)
    {
        var result = new Dictionary<LabelKey, double>();
        foreach (var q in configuredQueues)
            foreach (var s in JobState.All) result[new LabelKey(s, q)] = 0;
        foreach (var (state, queue, count) in await jobs.CountByStateAndQueueAsync(ct))
        {
            foreach (var s in JobState.All) result.TryAdd(new LabelKey(s, queue), 0);
            result[new LabelKey(state, queue)] = count;
        }
        return result;
    }
}

/// <summary>
/// <c>batchrunner_array_children{job_id,job_name,state}</c>: the progress of recent arrays (<see cref="JobStore.ArrayProgressAsync"/>),
/// every state present for each array (0 when none), at most every 2 s.
/// </summary>
internal sealed class ArrayProgressCollector(JobStore jobs)
{
    private readonly CachedValue<Dictionary<LabelKey, double>> _progress = new(TimeSpan.FromSeconds(2), ct => ReadAsync(jobs, ct));

    public async Task<Dictionary<LabelKey, double>> SnapshotAsync(CancellationToken ct) => (await _progress.GetAsync(ct)).Value!;

    private static async Task<Dictionary<LabelKey, double>> ReadAsync(JobStore jobs, CancellationToken ct)
    {
        var result = new Dictionary<LabelKey, double>();
        foreach (var (id, name, state, count) in await jobs.ArrayProgressAsync(ct))
        {
            var job = id.ToString();
            foreach (var s in JobState.All) result.TryAdd(new LabelKey(job, name, s), 0);
            result[new LabelKey(job, name, state)] = count;
        }
        return result;
    }
}

/// <summary>
/// Hangfire's view of the queue: <c>batchrunner_hangfire_queue_length{queue}</c>, <c>batchrunner_hangfire_servers</c>
/// and <c>batchrunner_hangfire_workers</c>, from the storage's monitoring API, at most every 5 s.
/// </summary>
internal sealed class HangfireCollector(JobStorage storage, IReadOnlyList<string> configuredQueues)
{
    private readonly CachedValue<Snapshot> _snapshot = new(TimeSpan.FromSeconds(5), _ => Task.Run(() => Read(storage, configuredQueues)));

    public sealed record Snapshot(Dictionary<LabelKey, double> QueueLengths, int Servers, int Workers);

    public async Task<Snapshot> SnapshotAsync(CancellationToken ct) => (await _snapshot.GetAsync(ct)).Value!;

    private static Snapshot Read(JobStorage storage, IReadOnlyList<string> configuredQueues)
    {
        var api = storage.GetMonitoringApi();
        var lengths = configuredQueues.Distinct().ToDictionary(q => new LabelKey(q), _ => 0.0);
        foreach (var q in api.Queues()) lengths[new LabelKey(q.Name)] = q.Length;
        var servers = api.Servers();
        return new Snapshot(lengths, servers.Count, servers.Sum(s => s.WorkersCount));
    }
}

/// <summary>
/// Publishes the database- and storage-wide gauges (<see cref="JobCountsCollector"/>, <see cref="HangfireCollector"/>).
/// A process normally hosts one BatchRunner; when it hosts several (tests), the gauges are the sums over
/// their databases rather than whichever host was scraped last, and a host that stops stops contributing.
/// </summary>
internal static class StorageGauges
{
    private static readonly Lock Gate = new();
    private static readonly List<(JobCountsCollector Jobs, HangfireCollector Hangfire, ArrayProgressCollector Arrays)> Sources = [];
    private static readonly GaugeFamilyPublisher JobsPublisher = new(BatchRunnerMetrics.Jobs);
    private static readonly GaugeFamilyPublisher ArraysPublisher = new(BatchRunnerMetrics.ArrayChildren);
    private static readonly GaugeFamilyPublisher QueuePublisher = new(BatchRunnerMetrics.HangfireQueueLength);
    private static IDisposable? _jobsHook, _hangfireHook;

    public static IDisposable Add(JobCountsCollector jobs, HangfireCollector hangfire, ArrayProgressCollector arrays, ILogger log)
    {
        var source = (jobs, hangfire, arrays);
        lock (Gate)
        {
            Sources.Add(source);
            _jobsHook ??= ScrapeHooks.Add("jobs", CollectJobsAsync, log);
            _hangfireHook ??= ScrapeHooks.Add("hangfire", CollectHangfireAsync, log);
        }
        return new Removal(source);
    }

    private static (JobCountsCollector Jobs, HangfireCollector Hangfire, ArrayProgressCollector Arrays)[] Snapshot()
    {
        lock (Gate) return [.. Sources];
    }

    private static async Task CollectJobsAsync(CancellationToken ct)
    {
        var parts = await Task.WhenAll(Snapshot().Select(s => s.Jobs.SnapshotAsync(ct)));
        JobsPublisher.Publish(Sum(parts));
        var arrays = await Task.WhenAll(Snapshot().Select(s => s.Arrays.SnapshotAsync(ct)));
        ArraysPublisher.Publish(Sum(arrays));
    }

    private static async Task CollectHangfireAsync(CancellationToken ct)
    {
        var parts = await Task.WhenAll(Snapshot().Select(s => s.Hangfire.SnapshotAsync(ct)));
        QueuePublisher.Publish(Sum(parts.Select(p => p.QueueLengths)));
        BatchRunnerMetrics.HangfireServers.Set(parts.Sum(p => p.Servers));
        BatchRunnerMetrics.HangfireWorkers.Set(parts.Sum(p => p.Workers));
    }

    private static Dictionary<LabelKey, double> Sum(IEnumerable<Dictionary<LabelKey, double>> parts)
    {
        var sum = new Dictionary<LabelKey, double>();
        foreach (var part in parts)
            foreach (var (k, v) in part) sum[k] = sum.GetValueOrDefault(k) + v;
        return sum;
    }

    private sealed class Removal((JobCountsCollector, HangfireCollector, ArrayProgressCollector) source) : IDisposable
    {
        public void Dispose()
        {
            lock (Gate)
            {
                if (!Sources.Remove(source) || Sources.Count > 0) return;
                _jobsHook?.Dispose();
                _hangfireHook?.Dispose();
                _jobsHook = _hangfireHook = null;
                JobsPublisher.Clear();
                ArraysPublisher.Clear();
                QueuePublisher.Clear();
            }
        }
    }
}

/// <summary>
/// <c>batchrunner_image_cache_size_bytes</c>: apparent size of the regular files under the node's image
/// directory, by a directory walk at most every 30 s, and after a pull that downloaded blobs
/// (<see cref="MarkChanged"/>). The walk runs off the scrape's thread; a scrape during a walk reports the
/// previous value. Symbolic links are not followed; hard links count once per name.
/// </summary>
internal sealed class ImageCacheSizeCollector(DataPaths paths)
{
    private static readonly TimeSpan MaxAge = TimeSpan.FromSeconds(30);
    private static long _changes;
    private long _lastWalkTicks = long.MinValue;
    private long _changesAtLastWalk = -1;
    private int _walking;

    /// <summary>The cache grew (a pull downloaded blobs): the next scrape walks again.</summary>
    public static void MarkChanged() => Interlocked.Increment(ref _changes);

    public Task CollectAsync(CancellationToken ct)
    {
        var now = Environment.TickCount64;
        var changes = Interlocked.Read(ref _changes);
        var last = Interlocked.Read(ref _lastWalkTicks);
        var first = last == long.MinValue;
        if (!first && now - last < MaxAge.TotalMilliseconds && changes == Interlocked.Read(ref _changesAtLastWalk)) return Task.CompletedTask;
        if (Interlocked.Exchange(ref _walking, 1) == 1) return Task.CompletedTask;
        var walk = Task.Run(() =>
        {
            try
            {
                BatchRunnerMetrics.ImageCacheSizeBytes.Set(SizeOf(paths.Images));
                Interlocked.Exchange(ref _changesAtLastWalk, changes);
                Interlocked.Exchange(ref _lastWalkTicks, Environment.TickCount64);
            }
            finally
            {
                Volatile.Write(ref _walking, 0);
            }
        }, ct);
        // The first value is awaited so that a fresh process does not report 0 for a full cache;
        // later walks refresh in the background.
        return first ? walk : Task.CompletedTask;
    }

    internal static long SizeOf(string root)
    {
        if (!Directory.Exists(root)) return 0;
        long total = 0;
        var options = new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true, AttributesToSkip = FileAttributes.ReparsePoint };
        try
        {
            foreach (var file in new DirectoryInfo(root).EnumerateFiles("*", options))
            {
                try { total += file.Length; }
                catch (IOException) { /* removed by GC during the walk */ }
            }
        }
        catch (IOException) { /* a directory removed during the walk: report what was seen */ }
        return total;
    }
}
