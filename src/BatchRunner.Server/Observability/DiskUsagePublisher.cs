using BatchRunner.Server.Storage;
using Prometheus;

namespace BatchRunner.Server.Observability;

/// <summary>
/// <c>batchrunner_disk_bytes{node, kind}</c>: what this node's data directory holds, by kind: <c>logs</c> (jobs'
/// stdout and stderr), <c>outputs</c>, <c>inputs</c> (unpacked in job directories, the inputs tars this node took,
/// uploads being received), <c>images</c> (blobs, unpacked layers, records) and <c>database</c> (the embedded
/// PostgreSQL's directory; absent with an external database, whose disk is not this node's).
/// </summary>
/// <remarks>
/// Apparent sizes of regular files, from a directory walk every <see cref="Interval"/> (and once at start), never
/// at scrape time: a node with many jobs' files must not make every scrape walk them.
/// </remarks>
public sealed partial class DiskUsagePublisher(DataPaths paths, string node, ILogger<DiskUsagePublisher> log) : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(60);

    public static readonly Gauge DiskBytes = Metrics.CreateGauge("batchrunner_disk_bytes",
        "Bytes of regular files in this node's data directory by kind (logs, outputs, inputs, images, database), walked every 60 s.",
        "node", "kind");

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval);
        do
        {
            try { await Task.Run(Publish, stoppingToken); }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { return; }
            catch (Exception e) { LogFailed(log, e); }
        } while (await WaitAsync(timer, stoppingToken));
    }

    /// <summary>Walks the data directory once and sets the series.</summary>
    public void Publish()
    {
        long logs = 0, outputs = 0, inputs = 0;
        if (Directory.Exists(paths.JobsRoot))
        {
            foreach (var job in new DirectoryInfo(paths.JobsRoot).EnumerateDirectories())
            {
                // A capped stream is its head file, tail parts and order indexes (Runtime/Logs/LogFiles).
                foreach (var stream in new[] { "stdout.log", "stderr.log" })
                    foreach (var file in BatchRunner.Runtime.Logs.LogFiles.All(Path.Combine(job.FullName, stream)))
                        logs += Length(new FileInfo(file));
                outputs += ImageCacheSizeCollector.SizeOf(Path.Combine(job.FullName, "outputs"));
                inputs += ImageCacheSizeCollector.SizeOf(Path.Combine(job.FullName, "inputs"));
            }
        }
        inputs += ImageCacheSizeCollector.SizeOf(paths.InputsStore) + ImageCacheSizeCollector.SizeOf(paths.InputsStaging);
        DiskBytes.WithLabels(node, "logs").Set(logs);
        DiskBytes.WithLabels(node, "outputs").Set(outputs);
        DiskBytes.WithLabels(node, "inputs").Set(inputs);
        DiskBytes.WithLabels(node, "images").Set(ImageCacheSizeCollector.SizeOf(paths.Images));
        var database = Path.Combine(paths.Root, "postgres");
        if (Directory.Exists(database)) DiskBytes.WithLabels(node, "database").Set(ImageCacheSizeCollector.SizeOf(database));
    }

    private static long Length(FileInfo file)
    {
        try { return file.Length; }
        catch (IOException) { return 0; } // removed during the walk
    }

    private static async Task<bool> WaitAsync(PeriodicTimer timer, CancellationToken ct)
    {
        try { return await timer.WaitForNextTickAsync(ct); }
        catch (OperationCanceledException) { return false; }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not measure the data directory's disk use")]
    private static partial void LogFailed(ILogger log, Exception e);
}
