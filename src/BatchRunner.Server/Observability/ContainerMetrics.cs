using Prometheus;

namespace BatchRunner.Server.Observability;

/// <summary>
/// Per-container series in cAdvisor's vocabulary, so dashboards and habits made for cAdvisor/kubelet carry
/// over. One set of series per running job, labelled <c>job_id, job_name, queue, node, image</c>; a job's
/// series exist from its container's start until the container is gone (<see cref="JobTelemetry"/>).
/// Values come from the job's cgroup (v1 or v2) at scrape time.
/// </summary>
/// <remarks>
/// What each series measures, and where it differs from cAdvisor:
/// <list type="bullet">
/// <item><c>container_cpu_usage_seconds_total</c>: CPU time of all processes of the cgroup (v1 cpuacct.usage, v2 cpu.stat usage_usec).</item>
/// <item><c>container_cpu_cfs_throttled_seconds_total</c>: time the cgroup was throttled by its CFS quota (v1 cpu.stat throttled_time, v2 throttled_usec).</item>
/// <item><c>container_cpu_cfs_throttled_periods_total</c>: CFS periods in which it was throttled (nr_throttled).</item>
/// <item><c>container_memory_working_set_bytes</c>: the cgroup's memory usage (v1 memory.usage_in_bytes, v2 memory.current).
/// It includes page cache, so it is an upper bound of cAdvisor's working set (which subtracts inactive file pages).</item>
/// <item><c>container_memory_max_usage_bytes</c>: peak memory usage (v1 memory.max_usage_in_bytes, v2 memory.peak on Linux 5.19+; absent on older v2 kernels).</item>
/// <item><c>container_spec_memory_limit_bytes</c>: the memory limit the job asked for (absent when unlimited).</item>
/// <item><c>container_spec_cpu_quota</c> / <c>container_spec_cpu_period</c>: CFS quota and period in microseconds (quota/period = CPUs; absent when unlimited).</item>
/// <item><c>container_oom_events_total</c>: OOM kills in the cgroup (v1 memory.oom_control oom_kill, v2 memory.events oom_kill).</item>
/// <item><c>container_processes</c>: processes in the cgroup now (pids.current).</item>
/// <item><c>container_fs_usage_bytes</c> / <c>container_fs_limit_bytes</c>: what the job has written on its disk (root
/// filesystem and /outputs together, sampled every 200 ms by the attempt) and its resources.disk; absent where disk
/// limits are not enforced. cAdvisor reports these per device; here there is one device, the job's disk.</item>
/// </list>
/// A job shorter than the scrape interval may never be seen; its final usage is in the job record.
/// </remarks>
public static class ContainerMetrics
{
    public static readonly string[] Labels = ["job_id", "job_name", "queue", "node", "image"];

    public static readonly Counter CpuUsageSeconds = Metrics.CreateCounter(
        "container_cpu_usage_seconds_total", "Cumulative CPU time consumed by the job's container, in seconds.", Labels);

    public static readonly Counter CpuThrottledSeconds = Metrics.CreateCounter(
        "container_cpu_cfs_throttled_seconds_total", "Total time the job's container was throttled by its CPU quota, in seconds.", Labels);

    public static readonly Counter CpuThrottledPeriods = Metrics.CreateCounter(
        "container_cpu_cfs_throttled_periods_total", "CFS periods in which the job's container was throttled.", Labels);

    public static readonly Gauge MemoryWorkingSetBytes = Metrics.CreateGauge(
        "container_memory_working_set_bytes",
        "Memory usage of the job's cgroup (v1 memory.usage_in_bytes, v2 memory.current), page cache included: an upper bound of cAdvisor's working set.",
        Labels);

    public static readonly Gauge MemoryMaxUsageBytes = Metrics.CreateGauge(
        "container_memory_max_usage_bytes", "Peak memory usage of the job's cgroup, in bytes.", Labels);

    public static readonly Gauge SpecMemoryLimitBytes = Metrics.CreateGauge(
        "container_spec_memory_limit_bytes", "Memory limit of the job's container, in bytes.", Labels);

    public static readonly Gauge SpecCpuQuota = Metrics.CreateGauge(
        "container_spec_cpu_quota", "CPU quota of the job's container in microseconds per period (CPUs = quota / period).", Labels);

    public static readonly Gauge SpecCpuPeriod = Metrics.CreateGauge(
        "container_spec_cpu_period", "CFS period of the job's container, in microseconds.", Labels);

    public static readonly Counter OomEvents = Metrics.CreateCounter(
        "container_oom_events_total", "Processes of the job's container killed by the kernel's OOM killer.", Labels);

    public static readonly Gauge Processes = Metrics.CreateGauge(
        "container_processes", "Processes running in the job's container.", Labels);

    public static readonly Gauge FsUsageBytes = Metrics.CreateGauge(
        "container_fs_usage_bytes", "What the job has written on its disk (root filesystem and /outputs together), in bytes.", Labels);

    public static readonly Gauge FsLimitBytes = Metrics.CreateGauge(
        "container_fs_limit_bytes", "The job's disk limit (resources.disk), in bytes.", Labels);

    internal static readonly Collector[] All =
        [CpuUsageSeconds, CpuThrottledSeconds, CpuThrottledPeriods, MemoryWorkingSetBytes, MemoryMaxUsageBytes,
         SpecMemoryLimitBytes, SpecCpuQuota, SpecCpuPeriod, OomEvents, Processes, FsUsageBytes, FsLimitBytes];
}
