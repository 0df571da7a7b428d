using System.Net;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Gpus;

/// <summary>GPU jobs end to end on a node whose GPUs are test devices named by a CDI spec.</summary>
[Collection(GpuServerCollection.Name)]
public sealed class GpuJobFacts(GpuServerFixture f)
{
    private const string Probe = "ls /dev | grep nvidia | tr '\\n' ' '; echo; echo cuda=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES; cat /usr/lib/x86_64-linux-gnu/libcuda.so.1 2>&1; head -c 1 /dev/nvidia0 /dev/nvidia1 >/dev/null 2>&1 && echo opened; true";

    [Fact]
    public async Task TwoGpuJobs_GetDifferentGpus_AndAThirdWaitsUntilOneIsFree()
    {
        var spec = new { image = f.Busybox, command = new[] { "/bin/sh", "-c", Probe + "; sleep 3" }, resources = new { gpus = 1, cpus = 0.1 } };
        var a = await f.Api.SubmitIdAsync(spec);
        var b = await f.Api.SubmitIdAsync(spec);
        await f.Api.WaitForStateAsync(a, s => s == "running");
        await f.Api.WaitForStateAsync(b, s => s == "running");
        var c = await f.Api.SubmitIdAsync(spec);
        Assert.Equal("queued", (await f.Api.GetJobAsync(c)).GetProperty("state").GetString());

        var logs = new List<string>();
        foreach (var id in new[] { a, b, c })
        {
            var done = await f.Api.WaitForStateAsync(id, s => s is "succeeded" or "failed" or "cancelled");
            Assert.Equal("succeeded", done.GetProperty("state").GetString());
            logs.Add(await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs"));
        }
        var first = logs[0].Split('\n')[0].Trim();
        var second = logs[1].Split('\n')[0].Trim();
        Assert.Contains(first, new[] { "nvidia0 nvidiactl", "nvidia1 nvidiactl" });
        Assert.Contains(second, new[] { "nvidia0 nvidiactl", "nvidia1 nvidiactl" });
        Assert.NotEqual(first, second);
        Assert.All(logs, l => Assert.Contains("cuda=0 nv=GPU-test-", l));
        Assert.All(logs, l => Assert.Contains("fake driver library", l));
        // Started only after one of the first two had finished.
        var third = await f.Api.GetJobAsync(c);
        var ended = new[] { await f.Api.GetJobAsync(a), await f.Api.GetJobAsync(b) }.Min(j => j.GetProperty("finishedAt").GetDateTimeOffset());
        Assert.True(third.GetProperty("startedAt").GetDateTimeOffset() >= ended);
    }

    [Fact]
    public async Task JobWithoutGpus_SeesNoGpuDevice()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", Probe } });
        var done = await f.Api.WaitForStateAsync(id, s => s is "succeeded" or "failed");
        var log = await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs");
        Assert.Equal("succeeded", done.GetProperty("state").GetString());
        Assert.DoesNotContain("nvidia", log.Split('\n')[0]);
        Assert.DoesNotContain("opened", log);
        Assert.Contains("cuda= nv=", log);
    }

    [Fact]
    public async Task MoreGpusThanAnyNodeHas_Gets400NamingTheLargestNode()
    {
        var r = await f.Api.PostJobAsync(new { image = f.Busybox, resources = new { gpus = 3 } });
        Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
        var errors = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("errors");
        Assert.Contains("largest live node has 2", errors.GetProperty("resources.gpus")[0].GetString());
    }

    [Fact]
    public async Task GpuModelNoNodeHas_Gets400NamingTheModels()
    {
        // Before submission and the executor asked one NodeFit, such a job was accepted and bounced between nodes forever.
        var r = await f.Api.PostJobAsync(new { image = f.Busybox, resources = new { gpus = 1, gpuModel = "H100" } });
        Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
        var errors = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("errors");
        Assert.Contains("(models: Test GPU)", errors.GetProperty("resources.gpuModel")[0].GetString());

        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" }, resources = new { gpus = 1, gpuModel = "test gpu", cpus = 0.1 } });
        Assert.Equal("succeeded", (await f.Api.WaitForStateAsync(id, s => s is "succeeded" or "failed" or "cancelled")).GetProperty("state").GetString());
    }

    [Fact]
    public async Task GpuFigures_AppearOnTheJob_AndInMetricsWhileItRuns()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "3" }, resources = new { gpus = 1, cpus = 0.1 } });
        await f.Api.WaitForStateAsync(id, s => s == "running");
        var metrics = await Poll.UntilAsync(() => f.Client.GetStringAsync("/metrics"), m => m.Contains($"job_id=\"{id}\""), TimeSpan.FromSeconds(20), "gpu job info series");
        Assert.Contains("batchrunner_gpu_job_info", metrics);
        Assert.Contains("batchrunner_gpu_utilization_ratio", metrics);

        var done = await f.Api.WaitForStateAsync(id, s => s is "succeeded" or "failed");
        var gpus = done.GetProperty("usage").GetProperty("gpus");
        Assert.True(gpus.GetProperty("samples").GetInt32() >= 1);
        var peak = gpus.GetProperty("peakUtilizationPercent").GetDouble();
        Assert.True(peak is 37 or 81, $"peak {peak}");
        Assert.True(gpus.GetProperty("peakMemoryBytes").GetInt64() is 512L << 20 or 768L << 20);
        var after = await f.Client.GetStringAsync("/metrics");
        Assert.DoesNotContain($"job_id=\"{id}\"", after.Split('\n').Where(l => l.StartsWith("batchrunner_gpu_job_info")).DefaultIfEmpty(""));

        var health = JsonDocument.Parse(await f.Client.GetStringAsync("/healthz")).RootElement;
        Assert.Equal(2, health.GetProperty("gpus").GetProperty("count").GetInt32());
    }
}
