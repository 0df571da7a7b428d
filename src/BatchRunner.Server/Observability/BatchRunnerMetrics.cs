using Prometheus;

namespace BatchRunner.Server.Observability;

/// <summary>BatchRunner's own Prometheus series. Names end in their unit, as Prometheus users expect.</summary>
public static class BatchRunnerMetrics
{
    private static readonly double[] DurationBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600];

    public static readonly Counter JobsSubmitted = Metrics.CreateCounter(
        "batchrunner_jobs_submitted_total", "Jobs accepted by the API.", "queue");

    public static readonly Counter JobsFinished = Metrics.CreateCounter(
        "batchrunner_jobs_finished_total", "Jobs that reached a final state, by state and reason.", "queue", "state", "reason");

    public static readonly Gauge JobsRunning = Metrics.CreateGauge(
        "batchrunner_jobs_running", "Jobs whose container is running on this worker.");

    public static readonly Histogram JobRunSeconds = Metrics.CreateHistogram(
        "batchrunner_job_run_seconds", "Wall time from container start to exit.",
        new HistogramConfiguration { LabelNames = ["queue"], Buckets = DurationBuckets });

    public static readonly Histogram JobQueueWaitSeconds = Metrics.CreateHistogram(
        "batchrunner_job_queue_wait_seconds", "Time from submission until a worker picked the job up.",
        new HistogramConfiguration { LabelNames = ["queue"], Buckets = DurationBuckets });

    public static readonly Histogram ImagePullSeconds = Metrics.CreateHistogram(
        "batchrunner_image_pull_seconds", "Time to make a job's image present (resolve, download, unpack); near zero on a cache hit.",
        new HistogramConfiguration { Buckets = DurationBuckets });
}
