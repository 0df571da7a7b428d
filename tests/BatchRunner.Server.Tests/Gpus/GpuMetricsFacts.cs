using System.Text;
using BatchRunner.Runtime.Gpus;
using BatchRunner.Server.Gpus;
using Microsoft.Extensions.Logging.Abstractions;
using Prometheus;

namespace BatchRunner.Server.Tests.Gpus;

public sealed class GpuMetricsFacts
{
    private sealed class FakeGpuSource(Func<int, IReadOnlyList<GpuSample>> round) : IGpuMetricsSource
    {
        private int _calls;
        public string Name => "fake";
        public Task<IReadOnlyList<GpuSample>> SampleAsync(IReadOnlyCollection<string>? uuids, CancellationToken ct) =>
            Task.FromResult(round(Interlocked.Increment(ref _calls)));
    }

    private static GpuSample S(string uuid, double util, long memMiB) =>
        new(uuid, util, memMiB << 20, 80L << 30, 61, 412.5, DateTimeOffset.UnixEpoch);

    private static async Task<string> ScrapeAsync(CollectorRegistry registry)
    {
        using var ms = new MemoryStream();
        await registry.CollectAndExportAsTextAsync(ms);
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    [Fact]
    public async Task Monitor_PublishesPerGpuSeries_AndJobInfoWhileTracked_AndRecordsJobUsage()
    {
        var registry = Metrics.NewCustomRegistry();
        var gpus = new[] { BatchRunner.Server.Tests.Scheduling.NodeReservationsFacts.G(0), BatchRunner.Server.Tests.Scheduling.NodeReservationsFacts.G(1) };
        var publisher = new GpuMetricsPublisher("node-a", gpus, registry);
        var source = new FakeGpuSource(n => [S("GPU-0", n == 1 ? 20 : 80, n * 1000), S("GPU-1", 5, 10)]);
        var monitor = new GpuMonitor(source, publisher, TimeSpan.FromSeconds(1), NullLogger<GpuMonitor>.Instance);
        var job = Guid.Parse("6f1c2b9a-0000-4000-8000-000000000001");

        var tracking = monitor.TrackJob(job, "train-resnet", [gpus[0]]);
        await monitor.SampleOnceAsync(CancellationToken.None);
        await monitor.SampleOnceAsync(CancellationToken.None);

        var text = await ScrapeAsync(registry);
        Assert.Contains("batchrunner_gpu_utilization_ratio{gpu=\"0\",uuid=\"GPU-0\",model=\"NVIDIA H100 80GB HBM3\",node=\"node-a\"} 0.8", text);
        Assert.Contains("batchrunner_gpu_utilization_ratio{gpu=\"1\",uuid=\"GPU-1\",model=\"NVIDIA H100 80GB HBM3\",node=\"node-a\"} 0.05", text);
        Assert.Contains($"batchrunner_gpu_memory_used_bytes{{gpu=\"0\",uuid=\"GPU-0\",model=\"NVIDIA H100 80GB HBM3\",node=\"node-a\"}} {2000L << 20}", text);
        Assert.Contains($"batchrunner_gpu_memory_total_bytes{{gpu=\"0\",uuid=\"GPU-0\",model=\"NVIDIA H100 80GB HBM3\",node=\"node-a\"}} {80L << 30}", text);
        Assert.Contains("batchrunner_gpu_temperature_celsius{gpu=\"0\",uuid=\"GPU-0\",model=\"NVIDIA H100 80GB HBM3\",node=\"node-a\"} 61", text);
        Assert.Contains("batchrunner_gpu_power_watts{gpu=\"0\",uuid=\"GPU-0\",model=\"NVIDIA H100 80GB HBM3\",node=\"node-a\"} 412.5", text);
        Assert.Contains($"batchrunner_gpu_job_info{{gpu=\"0\",uuid=\"GPU-0\",job_id=\"{job}\",job_name=\"train-resnet\",node=\"node-a\"}} 1", text);
        Assert.DoesNotContain("batchrunner_gpu_job_info{gpu=\"1\"", text);

        var usage = tracking.Usage;
        Assert.Equal(["GPU-0"], usage.Gpus);
        Assert.Equal((50.0, 80.0, 2000L << 20, 2), (usage.MeanUtilizationPercent!.Value, usage.PeakUtilizationPercent!.Value, usage.PeakMemoryBytes!.Value, usage.Samples));

        tracking.Dispose();
        await monitor.SampleOnceAsync(CancellationToken.None);
        text = await ScrapeAsync(registry);
        Assert.DoesNotContain("job_id=", text);
        Assert.Contains("batchrunner_gpu_utilization_ratio{gpu=\"0\"", text); // GPU series stay
        Assert.Equal(2, tracking.Usage.Samples); // no more samples after the job ended
    }

    [Fact]
    public async Task Monitor_RunsAsHostedService_AndSurvivesSourceFailures()
    {
        var registry = Metrics.NewCustomRegistry();
        var gpus = new[] { BatchRunner.Server.Tests.Scheduling.NodeReservationsFacts.G(0) };
        var calls = 0;
        var source = new FakeGpuSource(n => { Interlocked.Exchange(ref calls, n); return n % 2 == 0 ? throw new InvalidOperationException("nvml hiccup") : [S("GPU-0", 42, 1)]; });
        using var monitor = new GpuMonitor(source, new GpuMetricsPublisher("node-a", gpus, registry), TimeSpan.FromMilliseconds(20), NullLogger<GpuMonitor>.Instance);
        await monitor.StartAsync(CancellationToken.None);
        await BatchRunner.Testing.Poll.UntilAsync(() => Volatile.Read(ref calls) >= 4, TimeSpan.FromSeconds(10), "four sampling rounds");
        await monitor.StopAsync(CancellationToken.None);
        Assert.Contains("batchrunner_gpu_utilization_ratio{gpu=\"0\",uuid=\"GPU-0\",model=\"NVIDIA H100 80GB HBM3\",node=\"node-a\"} 0.42", await ScrapeAsync(registry));
    }
}
