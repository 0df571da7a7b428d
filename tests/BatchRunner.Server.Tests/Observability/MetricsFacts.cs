using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Observability;

/// <summary>/metrics of a real server while and after jobs run; the Grafana dashboards against it.</summary>
[Collection(ServerCollection.Name)]
public sealed class MetricsFacts(ServerFixture f)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task ContainerSeries_AppearWhileAJobRuns_AndAreRemovedWhenItEnds()
    {
        var name = "metrics-sleep-" + Guid.NewGuid().ToString("N")[..6];
        var id = (await f.Api.SubmitAsync(new
        {
            name,
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "sleep 3" },
            resources = new { cpus = 0.5, memory = "64Mi" },
        })).GetProperty("id").GetString()!;

        var running = await Poll.UntilAsync(() => MetricsText.ScrapeAsync(f.Anonymous),
            m => m.Where("container_cpu_usage_seconds_total", ("job_id", id)).Any(), Deadline, $"container series of job {id}", 100);

        var cpu = running.Where("container_cpu_usage_seconds_total", ("job_id", id)).Single();
        Assert.Equal(name, cpu.Labels["job_name"]);
        Assert.Equal("default", cpu.Labels["queue"]);
        Assert.Equal(f.Busybox, cpu.Labels["image"]);
        Assert.False(string.IsNullOrEmpty(cpu.Labels["node"]));
        Assert.Equal(64.0 * 1024 * 1024, running.Where("container_spec_memory_limit_bytes", ("job_id", id)).Single().Value);
        Assert.Equal(50_000, running.Where("container_spec_cpu_quota", ("job_id", id)).Single().Value);
        Assert.Equal(100_000, running.Where("container_spec_cpu_period", ("job_id", id)).Single().Value);
        Assert.True(running.Where("container_memory_working_set_bytes", ("job_id", id)).Single().Value > 0);
        Assert.True(running.Where("container_memory_max_usage_bytes", ("job_id", id)).Single().Value > 0);
        Assert.Equal(0, running.Where("container_oom_events_total", ("job_id", id)).Single().Value);
        Assert.Single(running.Where("container_cpu_cfs_throttled_seconds_total", ("job_id", id)));
        Assert.True(running.Where("batchrunner_node_allocated_cpus").Sum(s => s.Value) >= 0.5);

        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("succeeded", done.GetProperty("state").GetString());
        await Poll.UntilAsync(() => MetricsText.ScrapeAsync(f.Anonymous),
            m => !m.Samples.Any(s => s.Labels.TryGetValue("job_id", out var j) && j == id), Deadline, $"series of job {id} to be removed", 100);
    }

    [Fact]
    public async Task JobCounts_ListEveryState_WithTheDatabaseCounts()
    {
        var id = (await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "/bin/true" } })).GetProperty("id").GetString()!;
        await f.Api.WaitForFinalAsync(id);
        var list = JsonDocument.Parse(await f.Client.GetStringAsync("/api/v1/jobs?state=succeeded&limit=1000")).RootElement;
        var succeededAtLeast = list.GetProperty("items").GetArrayLength();

        // Counts are cached for 2 s: poll until the scrape has caught up with what the API shows.
        var m = await Poll.UntilAsync(() => MetricsText.ScrapeAsync(f.Anonymous),
            m => m.Where("batchrunner_jobs", ("state", "succeeded"), ("queue", "default")).SingleOrDefault()?.Value >= succeededAtLeast,
            Deadline, "batchrunner_jobs{state=succeeded}", 200);
        foreach (var state in BatchRunner.Core.JobState.All)
            Assert.Single(m.Where("batchrunner_jobs", ("state", state), ("queue", "default")));
        // Successes carry reason="none": an empty label value reads as no label at all in PromQL (issue 19, item 7).
        Assert.True(m.Where("batchrunner_jobs_finished_total", ("state", "succeeded"), ("reason", "none")).Single().Value >= 1);
        Assert.DoesNotContain(m.Where("batchrunner_jobs_finished_total"), s => s.Labels.GetValueOrDefault("reason") is null or "");
    }

    [Fact]
    public async Task ProcessSeries_HttpRuntimeHangfireAndImages_AreExported()
    {
        var id = (await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "/bin/true" } })).GetProperty("id").GetString()!;
        await f.Api.WaitForFinalAsync(id);
        // The array panels read batchrunner_array_children, which has series for recent arrays.
        var array = await f.Api.SubmitIdAsync(new { name = "dashboard-array", image = f.Busybox, command = new[] { "true" }, array = new { size = 1 } });
        await f.Api.WaitForFinalAsync(array);
        await f.Client.GetStringAsync("/healthz");

        var m = await Poll.UntilAsync(() => MetricsText.ScrapeAsync(f.Anonymous),
            // Hangfire's figures are cached for 5 s, the image cache size is re-measured after a pull that downloaded.
            m => m.Where("batchrunner_hangfire_workers").Any(s => s.Value > 0) && m.Where("batchrunner_image_cache_size_bytes").Single().Value > 0,
            Deadline, "hangfire workers and image cache size", 200);
        Assert.Contains(m.Samples, s => s.Name == "http_requests_received_total" && s.Labels.GetValueOrDefault("endpoint") == "/healthz");
        Assert.Contains(m.Samples, s => s.Name == "http_request_duration_seconds_bucket");
        Assert.Contains(m.Samples, s => s.Name == "dotnet_collection_count_total");
        Assert.Contains(m.Samples, s => s.Name == "process_cpu_seconds_total");
        Assert.Contains(m.Samples, s => s.Name == "process_working_set_bytes");
        Assert.True(m.Where("batchrunner_hangfire_servers").Single().Value >= 1);
        Assert.Single(m.Where("batchrunner_hangfire_queue_length", ("queue", "default")));
        // The busybox image was pulled by earlier jobs of this server: from now on every pull is a hit.
        Assert.True(m.Where("batchrunner_image_cache_hits_total").Single().Value + m.Where("batchrunner_image_cache_misses_total").Single().Value >= 1);
        Assert.True(m.Where("batchrunner_job_start_latency_seconds_count", ("queue", "default")).Single().Value >= 1);
        Assert.Contains(m.Where("batchrunner_node_capacity_cpus"), s => s.Value >= 1);
        Assert.Contains(m.Where("batchrunner_node_capacity_memory_bytes"), s => s.Value > 0);
    }

    [Fact]
    public async Task ImagePulls_CountMissThenHit_AndBytesPulled()
    {
        // The counters are process-wide, and other test collections run servers in this process at the same time: a pull
        // of theirs between two scrapes adds to them. What this test causes only ever adds, so a count below the expected
        // one fails at once; a count above it is another test's pull, and the round is measured again with a new image.
        const int Rounds = 3;
        var seen = new List<string>();
        for (var round = 1; round <= Rounds; round++)
        {
            var r = await MeasurePullsAsync();
            Assert.True(r.Misses >= 1, $"the first job's pull of a new image counted no cache miss: {r}");
            Assert.True(r.PulledBytes >= 100, $"the first job's pull counted {r.PulledBytes} bytes: {r}");
            Assert.True(r.HitsAfterSecond >= 1, $"the second job's image counted no cache hit: {r}");
            // The new layer and the new config were fetched: at least the layer's compressed bytes, far less than the image;
            // and the second job, on the same image, fetched nothing and counted no miss.
            if (r is { Misses: 1, HitsAfterSecond: 1, MissesAfterSecond: 0, BytesAfterSecond: 0 } && r.PulledBytes <= 100_000) return;
            seen.Add(r.ToString());
        }
        Assert.Fail($"in {Rounds} rounds other pulls always overlapped this test's: {string.Join("; ", seen)}");
    }

    private sealed record PullCounts(double Misses, double PulledBytes, double HitsAfterSecond, double MissesAfterSecond, double BytesAfterSecond);

    /// <summary>A new image pulled by one job, then used by a second: what the counters moved by, over each job.</summary>
    private async Task<PullCounts> MeasurePullsAsync()
    {
        // An image with a layer no other test has: its first pull must download blobs, the second none.
        var image = await PushUniqueImageAsync();
        double V(MetricsText m, string n) => m.Where(n).Single().Value;
        var before = await MetricsText.ScrapeAsync(f.Anonymous);

        var first = (await f.Api.SubmitAsync(new { image, command = new[] { "/bin/cat", "/obs-unique.txt" } })).GetProperty("id").GetString()!;
        Assert.Equal("succeeded", (await f.Api.WaitForFinalAsync(first)).GetProperty("state").GetString());
        var afterFirst = await MetricsText.ScrapeAsync(f.Anonymous);
        var second = (await f.Api.SubmitAsync(new { image, command = new[] { "/bin/true" } })).GetProperty("id").GetString()!;
        Assert.Equal("succeeded", (await f.Api.WaitForFinalAsync(second)).GetProperty("state").GetString());
        var afterSecond = await MetricsText.ScrapeAsync(f.Anonymous);

        const string Misses = "batchrunner_image_cache_misses_total", Hits = "batchrunner_image_cache_hits_total", Bytes = "batchrunner_image_pull_bytes_total";
        return new PullCounts(
            V(afterFirst, Misses) - V(before, Misses),
            V(afterFirst, Bytes) - V(before, Bytes),
            V(afterSecond, Hits) - V(afterFirst, Hits),
            V(afterSecond, Misses) - V(afterFirst, Misses),
            V(afterSecond, Bytes) - V(afterFirst, Bytes));
    }

    /// <summary>Busybox plus a layer holding a random file (umoci unpack + repack of a copy of the test layout).</summary>
    private async Task<string> PushUniqueImageAsync()
    {
        var work = Directory.CreateTempSubdirectory("br-obs-image-").FullName;
        try
        {
            var layout = Path.Combine(work, "layout");
            var bundle = Path.Combine(work, "bundle");
            await ExternalCommand.RunAsync("cp", ["-a", await TestImages.LayoutAsync(), layout]);
            await ExternalCommand.RunAsync("umoci", ["unpack", "--image", $"{layout}:busybox", bundle]);
            await File.WriteAllTextAsync(Path.Combine(bundle, "rootfs", "obs-unique.txt"), Guid.NewGuid() + "\n");
            await ExternalCommand.RunAsync("umoci", ["repack", "--image", $"{layout}:unique", bundle]);
            var reference = $"{f.Registry.Host}/obs/unique:{Guid.NewGuid().ToString("N")[..8]}";
            await ExternalCommand.RunAsync("skopeo", ["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false", $"oci:{layout}:unique", $"docker://{reference}"]);
            return reference;
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    /// <summary>
    /// Every metric a dashboard queries is exported by BatchRunner. Names are taken from every PromQL
    /// expression and variable query; a name counts as exported when the live scrape declares it (its
    /// <c># TYPE</c> line; prometheus-net prints it for a family that has no series yet). Beyond that,
    /// every name must have samples after a job ran — except <c>batchrunner_gpu_*</c>: the GPU publisher exists
    /// only on a node with GPUs, so those names are checked against what <see cref="BatchRunner.Server.Gpus.GpuMetricsPublisher"/>
    /// declares in a registry of its own.
    /// </summary>
    [Fact]
    public async Task Dashboards_QueryOnlyMetricsThatBatchRunnerExports()
    {
        var id = (await f.Api.SubmitAsync(new
        {
            name = "dashboard-check",
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "sleep 3" },
            resources = new { cpus = 0.5, memory = "32Mi" },
        })).GetProperty("id").GetString()!;
        // Per-container series exist only while the job runs; the rest is read after it ended.
        var during = await Poll.UntilAsync(() => MetricsText.ScrapeAsync(f.Anonymous),
            m => m.Where("container_cpu_usage_seconds_total", ("job_id", id)).Any(), Deadline, $"container series of job {id}", 100);
        await f.Api.WaitForFinalAsync(id);
        // The array panels read batchrunner_array_children, which has series for recent arrays.
        var array = await f.Api.SubmitIdAsync(new { name = "dashboard-array", image = f.Busybox, command = new[] { "true" }, array = new { size = 1 } });
        await f.Api.WaitForFinalAsync(array);
        await f.Client.GetStringAsync("/healthz");
        var after = await Poll.UntilAsync(() => MetricsText.ScrapeAsync(f.Anonymous),
            m => m.Where("batchrunner_hangfire_servers").Any(), Deadline, "hangfire series", 200);

        var withSamples = during.NamesWithSamples();
        withSamples.UnionWith(after.NamesWithSamples());
        var declared = new HashSet<string>(after.Types.Keys);
        declared.UnionWith(during.Types.Keys);

        var gpuNames = await GpuMetricNamesAsync();
        Assert.Contains("batchrunner_gpu_job_info", gpuNames);
        var queried = DashboardQueries();
        Assert.NotEmpty(queried);
        var problems = new List<string>();
        foreach (var (where, expr) in queried)
        {
            foreach (var name in where.EndsWith(":variable", StringComparison.Ordinal) ? PromQl.VariableQueryMetricNames(expr) : PromQl.MetricNames(expr))
            {
                var family = after.FamilyOf(name) is var fam && fam != name ? fam : during.FamilyOf(name);
                if (family.StartsWith("batchrunner_gpu_", StringComparison.Ordinal))
                {
                    if (!gpuNames.Contains(name)) problems.Add($"{where}: {name} is not a series of GpuMetricsPublisher (in: {expr})");
                }
                else if (!declared.Contains(family))
                    problems.Add($"{where}: {name} is not exported (in: {expr})");
                else if (!withSamples.Contains(family))
                    problems.Add($"{where}: {name} has no samples after a job ran (in: {expr})");
            }
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    /// <summary>The metric families the GPU publisher declares, read from a registry of its own (no GPU needed).</summary>
    private static async Task<HashSet<string>> GpuMetricNamesAsync()
    {
        var registry = Prometheus.Metrics.NewCustomRegistry();
        _ = new BatchRunner.Server.Gpus.GpuMetricsPublisher("test-node", [], registry);
        using var text = new MemoryStream();
        await registry.CollectAndExportAsTextAsync(text);
        return [.. new MetricsText(System.Text.Encoding.UTF8.GetString(text.ToArray())).Types.Keys];
    }

    /// <summary>(dashboard file / panel title, expression) for every target and every query variable.</summary>
    internal static List<(string Where, string Expr)> DashboardQueries()
    {
        var result = new List<(string, string)>();
        var files = Directory.GetFiles(RepoPaths.Dashboards, "*.json");
        Assert.True(files.Length >= 3, $"expected the overview, job and nodes dashboards in {RepoPaths.Dashboards}");
        foreach (var file in files)
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            var root = doc.RootElement;
            var fileName = Path.GetFileName(file);
            void Panels(JsonElement panels)
            {
                foreach (var p in panels.EnumerateArray())
                {
                    if (p.TryGetProperty("panels", out var nested)) Panels(nested);
                    if (!p.TryGetProperty("targets", out var targets)) continue;
                    foreach (var t in targets.EnumerateArray())
                        if (t.TryGetProperty("expr", out var e) && e.GetString() is { Length: > 0 } expr)
                            result.Add(($"{fileName} / {p.GetProperty("title").GetString()}", expr));
                }
            }
            Panels(root.GetProperty("panels"));
            if (root.TryGetProperty("templating", out var templ))
                foreach (var v in templ.GetProperty("list").EnumerateArray())
                {
                    if (v.GetProperty("type").GetString() != "query") continue;
                    var q = v.GetProperty("query");
                    var text = q.ValueKind == JsonValueKind.String ? q.GetString()! : q.GetProperty("query").GetString()!;
                    result.Add(($"{fileName} / ${v.GetProperty("name").GetString()}:variable", text));
                }
        }
        return result;
    }
}
