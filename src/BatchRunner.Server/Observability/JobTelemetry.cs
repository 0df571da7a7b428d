using BatchRunner.Core;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Disk;
using BatchRunner.Runtime.Spec;
using BatchRunner.Server.Storage;
using Prometheus;

namespace BatchRunner.Server.Observability;

/// <summary>
/// What the executor tells the metrics side about a job's container. One instance per host.
/// <see cref="TrackContainer"/> starts the job's per-container series (<see cref="ContainerMetrics"/>)
/// and observes its start latency; disposing the handle removes the series, so they never outlive their job.
/// </summary>
/// <remarks>
/// The cgroup is read at scrape time, under the handle's lock. The executor deletes the container
/// before it disposes the handle; <see cref="IRunningContainer.ReadUsage"/> then returns the usage recorded
/// at exit, and any error reading a vanished cgroup is swallowed: a scrape never fails because a job ended.
/// </remarks>
public sealed class JobTelemetry : IDisposable
{
    private readonly Lock _gate = new();
    private readonly HashSet<Tracked> _tracked = [];
    private readonly IDisposable _hook;

    public JobTelemetry()
    {
        _hook = ScrapeHooks.Add("containers", _ =>
        {
            Sample();
            return Task.CompletedTask;
        });
    }

    /// <summary>
    /// Called once the container runs (right after the job was marked running), with the job record as read
    /// before the attempt. The handle is disposed when the container is gone.
    /// </summary>
    /// <param name="disk">The usage of the job's disk, sampled by the attempt; null without a disk limit.</param>
    public IDisposable TrackContainer(JobRecord job, string node, ContainerSpec spec, IRunningContainer container, DiskUsageWatch? disk = null)
    {
        // Submission → the job's first running container. The record is the one read before this attempt was
        // marked running: no startedAt means no container of this job ever ran (a retry after a failed run
        // would count the failed attempts' time as latency).
        if (job.StartedAt is null)
            BatchRunnerMetrics.JobStartLatencySeconds.WithLabels(job.Queue).Observe(Math.Max(0, (DateTimeOffset.UtcNow - job.CreatedAt).TotalSeconds));

        var labels = new[] { job.Id.ToString(), job.Name ?? "", job.Queue, node, job.Image };
        var tracked = new Tracked(this, labels, container, disk);
        if (disk is not null) ContainerMetrics.FsLimitBytes.WithLabels(labels).Set(disk.Last.LimitBytes);
        if (spec.MemoryLimitBytes is { } mem) ContainerMetrics.SpecMemoryLimitBytes.WithLabels(labels).Set(mem);
        if (spec.Cpus is { } cpus)
        {
            ContainerMetrics.SpecCpuQuota.WithLabels(labels).Set(Math.Round(cpus * SpecOpts.CpuPeriodMicros));
            ContainerMetrics.SpecCpuPeriod.WithLabels(labels).Set(SpecOpts.CpuPeriodMicros);
        }
        lock (_gate) _tracked.Add(tracked);
        tracked.Sample();
        return tracked;
    }

    /// <summary>Reads every tracked container's cgroup into its series.</summary>
    public void Sample()
    {
        Tracked[] all;
        lock (_gate) all = [.. _tracked];
        foreach (var t in all) t.Sample();
    }

    public void Dispose()
    {
        _hook.Dispose();
        Tracked[] all;
        lock (_gate) all = [.. _tracked];
        foreach (var t in all) t.Dispose();
    }

    private sealed class Tracked(JobTelemetry owner, string[] labels, IRunningContainer container, DiskUsageWatch? disk) : IDisposable
    {
        private readonly Lock _gate = new();
        private bool _disposed;

        public void Sample()
        {
            lock (_gate)
            {
                if (_disposed) return;
                ResourceUsage usage;
                try
                {
                    usage = container.ReadUsage();
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or ObjectDisposedException)
                {
                    return;
                }
                // Counters only move forward; a value that went down (cgroup recreated) is ignored by IncTo.
                if (usage.CpuSeconds is { } cpu) ContainerMetrics.CpuUsageSeconds.WithLabels(labels).IncTo(cpu);
                if (usage.CpuThrottledSeconds is { } thr) ContainerMetrics.CpuThrottledSeconds.WithLabels(labels).IncTo(thr);
                if (usage.CpuThrottledPeriods is { } per) ContainerMetrics.CpuThrottledPeriods.WithLabels(labels).IncTo(per);
                if (usage.MemoryBytes is { } mem) ContainerMetrics.MemoryWorkingSetBytes.WithLabels(labels).Set(mem);
                if (usage.MaxMemoryBytes is { } max) ContainerMetrics.MemoryMaxUsageBytes.WithLabels(labels).Set(max);
                if (usage.OomKills is { } oom) ContainerMetrics.OomEvents.WithLabels(labels).IncTo(oom);
                if (usage.Pids is { } pids) ContainerMetrics.Processes.WithLabels(labels).Set(pids);
                if (disk is not null) ContainerMetrics.FsUsageBytes.WithLabels(labels).Set(disk.Last.UsedBytes);
            }
        }

        public void Dispose()
        {
            lock (_gate)
            {
                if (_disposed) return;
                _disposed = true;
                foreach (var c in ContainerMetrics.All) RemoveSeries(c, labels);
            }
            lock (owner._gate) owner._tracked.Remove(this);
        }

        private static void RemoveSeries(Collector c, string[] labels)
        {
            switch (c)
            {
                case Counter counter: counter.RemoveLabelled(labels); break;
                case Gauge gauge: gauge.RemoveLabelled(labels); break;
            }
        }
    }
}
