using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using BatchRunner.Server.Execution;
using Hangfire;
using Hangfire.States;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Bench;

/// <summary>
/// Submission under load, against the natural baseline: BatchRunner's POST /api/v1/jobs (validation,
/// job row, Hangfire message) versus a raw Hangfire Create of the same job in the same process, on the
/// same embedded PostgreSQL. Then, with the queue holding 10,000 jobs, a concurrent load of POSTs and
/// GET /api/v1/jobs?state=queued&amp;limit=100, reporting latency percentiles.
/// </summary>
/// <remarks>
/// The server runs as role "api" so nothing consumes the queue; a node record with ample capacity is
/// registered (and heartbeated) by the benchmark itself, as a worker would, so admission accepts jobs.
/// </remarks>
public static class LoadBench
{
    public static async Task<int> RunAsync(int jobs, int clients, int seconds, int rate)
    {
        await using var server = await ApiBenchServer.StartAsync("load");
        var app = server.App;
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 64 }) { BaseAddress = server.Address };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ApiBenchServer.Key);
        var spec = new { image = "127.0.0.1:5000/demo/busybox:1", command = new[] { "true" }, resources = new { cpus = 0.1, memory = "16Mi" } };
        var hangfire = app.Services.GetRequiredService<IBackgroundJobClient>();

        // Warm-up: JIT, connection pools.
        await Fill(200, clients, async () => (await http.PostAsJsonAsync("/api/v1/jobs", spec)).EnsureSuccessStatusCode());
        await Fill(200, clients, () => { hangfire.Create<JobPerformer>(p => p.RunAsync(Guid.NewGuid(), "raw", CancellationToken.None), new EnqueuedState("default")); return Task.CompletedTask; });

        // Throughput, side by side: half the jobs through each path, alternating blocks.
        double apiRate = 0, rawRate = 0;
        var half = jobs / 2;
        for (int round = 0; round < 2; round++)
        {
            apiRate += await Fill(half / 2, clients, async () => (await http.PostAsJsonAsync("/api/v1/jobs", spec)).EnsureSuccessStatusCode());
            rawRate += await Fill(half / 2, clients, () =>
            {
                hangfire.Create<JobPerformer>(p => p.RunAsync(Guid.NewGuid(), "raw", CancellationToken.None), new EnqueuedState("default"));
                return Task.CompletedTask;
            });
        }
        apiRate /= 2;
        rawRate /= 2;

        // Latency under a steady concurrent load (open loop: requests start on a schedule, whether or not
        // earlier ones have finished, so a slow response cannot hide by slowing the generator down).
        var post = new List<double>();
        var list = new List<double>();
        var pending = new List<Task>();
        var interval = TimeSpan.FromSeconds(1.0 / rate);
        var clock = Stopwatch.StartNew();
        for (long i = 0; clock.Elapsed < TimeSpan.FromSeconds(seconds); i++)
        {
            var due = interval * i;
            if (due > clock.Elapsed) await Task.Delay(due - clock.Elapsed);
            var isPost = i % 2 == 0;
            pending.Add(Task.Run(async () =>
            {
                var sw = Stopwatch.StartNew();
                if (isPost) (await http.PostAsJsonAsync("/api/v1/jobs", spec)).EnsureSuccessStatusCode();
                else
                {
                    var r = await http.GetAsync("/api/v1/jobs?state=queued&limit=100");
                    r.EnsureSuccessStatusCode();
                    await r.Content.ReadAsByteArrayAsync();
                }
                var target = isPost ? post : list;
                lock (target) target.Add(sw.Elapsed.TotalMilliseconds);
            }));
        }
        await Task.WhenAll(pending);

        Console.WriteLine($"BatchRunner load benchmark, {Environment.ProcessorCount} CPUs, {jobs:N0} jobs queued before the latency phase, {clients} concurrent submitters; latency phase: {rate} requests/s, half POST, half GET");
        Console.WriteLine($"| path | jobs/s |");
        Console.WriteLine($"|---|---|");
        Console.WriteLine($"| POST /api/v1/jobs | {apiRate:F0} |");
        Console.WriteLine($"| raw Hangfire Create (same process) | {rawRate:F0} |");
        Console.WriteLine($"ratio API / raw Hangfire: {apiRate / rawRate:F2}");
        Console.WriteLine();
        Console.WriteLine($"| request ({seconds} s of load) | n | p50 ms | p95 ms | p99 ms |");
        Console.WriteLine($"|---|---|---|---|---|");
        Console.WriteLine(Row("POST /api/v1/jobs", post));
        Console.WriteLine(Row("GET /api/v1/jobs?state=queued&limit=100", list));
        return 0;
    }

    /// <summary>Runs <paramref name="count"/> operations on <paramref name="clients"/> concurrent loops; returns operations per second.</summary>
    private static async Task<double> Fill(int count, int clients, Func<Task> op)
    {
        var left = count;
        var sw = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(async _ =>
        {
            while (Interlocked.Decrement(ref left) >= 0) await op();
        }));
        return count / sw.Elapsed.TotalSeconds;
    }

    private static string Row(string name, List<double> ms)
    {
        ms.Sort();
        double P(double q) => ms.Count == 0 ? double.NaN : ms[Math.Min(ms.Count - 1, (int)Math.Ceiling(q * ms.Count) - 1)];
        return $"| {name} | {ms.Count} | {P(0.50):F1} | {P(0.95):F1} | {P(0.99):F1} |";
    }
}
