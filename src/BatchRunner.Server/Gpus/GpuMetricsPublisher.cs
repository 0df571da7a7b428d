using System.Globalization;
using BatchRunner.Runtime.Gpus;
using Prometheus;

namespace BatchRunner.Server.Gpus;

/// <summary>
/// Per-GPU Prometheus series in the shape of NVIDIA's DCGM exporter (one series per GPU, labelled gpu, uuid,
/// model, node) and an info series joining each assigned GPU to its job:
/// <c>batchrunner_gpu_job_info{gpu,uuid,job_id,job_name,node} 1</c>, present only while the job holds it.
/// Join in PromQL: <c>batchrunner_gpu_utilization_ratio * on(uuid) group_left(job_id, job_name) batchrunner_gpu_job_info</c>.
/// </summary>
public sealed class GpuMetricsPublisher
{
    private static readonly string[] GpuLabels = ["gpu", "uuid", "model", "node"];
    private static readonly string[] JobLabels = ["gpu", "uuid", "job_id", "job_name", "node"];

    private readonly string _node;
    private readonly Dictionary<string, Gpu> _gpus;
    private readonly Gauge _utilization, _memoryUsed, _memoryTotal, _temperature, _power, _jobInfo;
    private readonly Lock _lock = new();
    private readonly Dictionary<Guid, List<string[]>> _jobSeries = [];

    public GpuMetricsPublisher(string node, IReadOnlyList<Gpu> gpus, CollectorRegistry? registry = null)
    {
        _node = node;
        _gpus = gpus.ToDictionary(g => g.Uuid, StringComparer.Ordinal);
        var f = Metrics.WithCustomRegistry(registry ?? Metrics.DefaultRegistry);
        _utilization = f.CreateGauge("batchrunner_gpu_utilization_ratio", "Fraction of the last sample period a kernel ran on the GPU (0-1).", GpuLabels);
        _memoryUsed = f.CreateGauge("batchrunner_gpu_memory_used_bytes", "GPU memory in use.", GpuLabels);
        _memoryTotal = f.CreateGauge("batchrunner_gpu_memory_total_bytes", "GPU memory installed.", GpuLabels);
        _temperature = f.CreateGauge("batchrunner_gpu_temperature_celsius", "GPU core temperature.", GpuLabels);
        _power = f.CreateGauge("batchrunner_gpu_power_watts", "GPU power draw.", GpuLabels);
        _jobInfo = f.CreateGauge("batchrunner_gpu_job_info", "1 for each GPU assigned to a running job.", JobLabels);
        // Memory size is known from the inventory before the first sample.
        foreach (var g in gpus.Where(g => g.MemoryBytes > 0)) _memoryTotal.WithLabels(Labels(g)).Set(g.MemoryBytes);
    }

    private string[] Labels(Gpu g) => [g.Index.ToString(CultureInfo.InvariantCulture), g.Uuid, g.Model, _node];

    /// <summary>Sets the series of the sampled GPUs. A field the sample lacks removes its series rather than leave a stale value.</summary>
    public void Publish(IEnumerable<GpuSample> samples)
    {
        foreach (var s in samples)
        {
            if (!_gpus.TryGetValue(s.Uuid, out var gpu)) continue;
            var labels = Labels(gpu);
            Set(_utilization, labels, s.UtilizationPercent / 100.0);
            Set(_memoryUsed, labels, s.MemoryUsedBytes);
            Set(_memoryTotal, labels, s.MemoryTotalBytes ?? (gpu.MemoryBytes > 0 ? gpu.MemoryBytes : null));
            Set(_temperature, labels, s.TemperatureCelsius);
            Set(_power, labels, s.PowerWatts);
        }
    }

    private static void Set(Gauge gauge, string[] labels, double? value)
    {
        if (value is { } v) gauge.WithLabels(labels).Set(v);
        else gauge.RemoveLabelled(labels);
    }

    /// <summary>Adds the job's info series, one per GPU.</summary>
    public void Assign(Guid jobId, string? jobName, IReadOnlyList<Gpu> gpus)
    {
        lock (_lock)
        {
            Unassign(jobId);
            var series = gpus.Select(g => new[] { g.Index.ToString(CultureInfo.InvariantCulture), g.Uuid, jobId.ToString(), jobName ?? "", _node }).ToList();
            foreach (var labels in series) _jobInfo.WithLabels(labels).Set(1);
            _jobSeries[jobId] = series;
        }
    }

    /// <summary>Removes the job's info series. Idempotent.</summary>
    public void Unassign(Guid jobId)
    {
        lock (_lock)
        {
            if (!_jobSeries.Remove(jobId, out var series)) return;
            foreach (var labels in series) _jobInfo.RemoveLabelled(labels);
        }
    }
}
