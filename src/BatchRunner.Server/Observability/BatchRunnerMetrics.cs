using Prometheus;

namespace BatchRunner.Server.Observability;

/// <summary>
/// BatchRunner's own Prometheus series. Names end in their unit, as Prometheus users expect. Every
/// series' help text says what it really measures; README.md (Monitoring) lists them.
/// </summary>
/// <remarks>
/// Per-container series (cAdvisor names) live in <see cref="ContainerMetrics"/>, node capacity in
/// <see cref="NodeMetrics"/>, GPU series in Gpus/GpuMetricsPublisher (created on nodes with GPUs). Series computed at scrape time
/// (job counts from the database, Hangfire queues, image cache size) are filled by the collectors that
/// <see cref="ObservabilityServices.AddBatchRunnerObservability"/> registers.
/// </remarks>
public static class BatchRunnerMetrics
{
    private static readonly double[] DurationBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600];

    // ---- jobs -------------------------------------------------------------------------------------------------

    public static readonly Counter JobsSubmitted = Metrics.CreateCounter(
        "batchrunner_jobs_submitted_total", "Jobs accepted by the API (counted by the API process that accepted them).", "queue");

    public static readonly Counter JobsFinished = Metrics.CreateCounter(
        "batchrunner_jobs_finished_total",
        "Jobs that reached a final state, by state and reason (reason \"none\" for succeeded): counted by the worker that " +
        "ran the job, or by the API process for a job cancelled while queued.",
        "queue", "state", "reason");

    /// <summary>The reason label of a job that succeeded: an empty label value reads as a missing label in PromQL.</summary>
    public const string NoReason = "none";

    public static readonly Gauge Jobs = Metrics.CreateGauge(
        "batchrunner_jobs",
        "Jobs in the database by state and queue, read at scrape time (cached for 2 s). Every state is present " +
        "(0 when empty) for each configured queue and each queue that has jobs. Every BatchRunner process exports the " +
        "same database-wide counts: aggregate with max, not sum.",
        "state", "queue");

    public static readonly Gauge ArrayChildren = Metrics.CreateGauge(
        "batchrunner_array_children",
        "Children of each array job by state, read at scrape time (cached for 2 s), for arrays not ended and those ended in the " +
        "last 15 minutes (at most 100, newest first). Database-wide, like batchrunner_jobs: aggregate with max.",
        "job_id", "job_name", "state");

    public static readonly Gauge JobsRunning = Metrics.CreateGauge(
        "batchrunner_jobs_running", "Jobs whose container is running on this worker process.");

    public static readonly Histogram JobRunSeconds = Metrics.CreateHistogram(
        "batchrunner_job_run_seconds", "Wall time from container start to exit, per attempt.",
        new HistogramConfiguration { LabelNames = ["queue"], Buckets = DurationBuckets });

    public static readonly Histogram JobQueueWaitSeconds = Metrics.CreateHistogram(
        "batchrunner_job_queue_wait_seconds", "Time from submission until a worker picked the job up (first attempts only).",
        new HistogramConfiguration { LabelNames = ["queue"], Buckets = DurationBuckets });

    public static readonly Histogram JobStartLatencySeconds = Metrics.CreateHistogram(
        "batchrunner_job_start_latency_seconds",
        "Time from submission until the job's first container runs (queue wait + image pull + rootfs + container start); " +
        "a job is observed once, at its first container start.",
        new HistogramConfiguration { LabelNames = ["queue"], Buckets = DurationBuckets });

    // ---- images -----------------------------------------------------------------------------------------------

    public static readonly Histogram ImagePullSeconds = Metrics.CreateHistogram(
        "batchrunner_image_pull_seconds", "Time to make a job's image present (resolve, download, unpack); near zero on a cache hit. Successful pulls only.",
        new HistogramConfiguration { Buckets = DurationBuckets });

    public static readonly Counter ImagePullBytes = Metrics.CreateCounter(
        "batchrunner_image_pull_bytes_total",
        "Compressed bytes of image blobs (config and layers) that job image pulls found missing from this node's cache and fetched. " +
        "A blob two concurrent pulls share is downloaded once but counted by both.");

    public static readonly Counter ImageCacheHits = Metrics.CreateCounter(
        "batchrunner_image_cache_hits_total",
        "Job image pulls that needed no blob download: every layer and the config were already in this node's cache " +
        "(with pullPolicy always the manifest is still re-resolved at the registry).");

    public static readonly Counter ImageCacheMisses = Metrics.CreateCounter(
        "batchrunner_image_cache_misses_total", "Job image pulls that had to download at least one blob.");

    public static readonly Counter ImagePullFailures = Metrics.CreateCounter(
        "batchrunner_image_pull_failures_total", "Job image pulls that failed (bad reference, registry error, missing with pullPolicy never).");

    public static readonly Gauge ImageCacheSizeBytes = Metrics.CreateGauge(
        "batchrunner_image_cache_size_bytes",
        "Apparent size of the regular files under this node's image directory (blobs, unpacked layers, records), " +
        "measured by a directory scan at most every 30 s.");

    // ---- Hangfire ---------------------------------------------------------------------------------------------

    public static readonly Gauge HangfireQueueLength = Metrics.CreateGauge(
        "batchrunner_hangfire_queue_length", "Hangfire jobs enqueued and not yet fetched by a worker, per queue (cached for 5 s; storage-wide, like the two below: aggregate processes with max).", "queue");

    public static readonly Gauge HangfireServers = Metrics.CreateGauge(
        "batchrunner_hangfire_servers", "Hangfire servers (worker processes) with a live heartbeat in the storage (cached for 5 s).");

    public static readonly Gauge HangfireWorkers = Metrics.CreateGauge(
        "batchrunner_hangfire_workers", "Worker slots (jobs that can run at once) summed over live Hangfire servers (cached for 5 s).");

    // ---- the metrics pipeline itself --------------------------------------------------------------------------

    public static readonly Counter CollectFailures = Metrics.CreateCounter(
        "batchrunner_metrics_collect_failures_total",
        "Scrape-time collections that failed (database unavailable, ...); the affected series keep their last value.", "collector");
}
