using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Storage;
using Hangfire;
using Hangfire.States;
using Microsoft.Extensions.DependencyInjection;
using BatchRunner.Oci.Store;
using Npgsql;

namespace BatchRunner.Bench;

/// <summary>
/// Submission under load, against the natural baseline: BatchRunner's POST /api/v1/jobs (validation,
/// job row, Hangfire message) versus a raw Hangfire Create of the same job in the same process, on the
/// same embedded PostgreSQL. Then, with the queue holding 10,000 jobs, open-loop latency phases at a fixed
/// rate: POST alone, GET of one job alone, and POST mixed half and half with GET /api/v1/jobs?state=queued&amp;limit=100.
/// </summary>
/// <remarks>
/// The server runs as role "api" so nothing consumes the queue; a node record with ample capacity is
/// registered (and heartbeated) by the benchmark itself, as a worker would, so admission accepts jobs.
/// Database round trips per request are counted from Npgsql's activity source (every command or batch of the
/// process, background loops included: an upper bound) over requests sent one after another.
/// </remarks>
public static class LoadBench
{
    /// <summary>Latency percentiles of one kind of request in one phase, in ms, and the CPU the phase cost per request: this
    /// process (server and load generator) and the PostgreSQL cluster.</summary>
    public sealed record Latencies(int Count, double P50, double P95, double P99, double Max, double ProcessCpuMsPerRequest = double.NaN, double PostgresCpuMsPerRequest = double.NaN);

    public sealed record Result(
        double ApiJobsPerSecond, double RawJobsPerSecond, int Rate, int Seconds, int Queued,
        Latencies Post, Latencies GetOne, Latencies MixedPost, Latencies MixedList, Latencies RawCreate, Latencies RawGet,
        double PostRoundTrips, double GetOneRoundTrips);

    private static readonly object Spec = new { image = "127.0.0.1:5000/demo/busybox:1", command = new[] { "true" }, resources = new { cpus = 0.1, memory = "16Mi" } };

    public static async Task<int> RunAsync(int jobs, int clients, int seconds, int rate)
    {
        var r = await MeasureAsync(jobs, clients, seconds, rate);
        Console.WriteLine($"BatchRunner load benchmark, {Environment.ProcessorCount} CPUs, {r.Queued:N0} jobs queued before the latency phases, {clients} concurrent submitters; " +
                          $"latency phases: {rate} requests/s open loop, {seconds} s each");
        Console.WriteLine("| path | jobs/s |");
        Console.WriteLine("|---|---|");
        Console.WriteLine($"| POST /api/v1/jobs | {r.ApiJobsPerSecond:F0} |");
        Console.WriteLine($"| raw Hangfire Create (same process) | {r.RawJobsPerSecond:F0} |");
        Console.WriteLine($"ratio API / raw Hangfire: {r.ApiJobsPerSecond / r.RawJobsPerSecond:F2}");
        Console.WriteLine($"database round trips per request (sequential, background included): POST {r.PostRoundTrips:F1}, GET one {r.GetOneRoundTrips:F1}");
        Console.WriteLine();
        Console.WriteLine("| phase | request | n | p50 ms | p95 ms | p99 ms | max ms | CPU ms/request: bench process / PostgreSQL |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        Console.WriteLine(Row($"POST alone, {rate}/s", "POST /api/v1/jobs", r.Post));
        Console.WriteLine(Row($"GET one alone, {rate}/s", "GET /api/v1/jobs/{id}", r.GetOne));
        Console.WriteLine(Row($"baseline, {rate}/s", "raw Hangfire Create", r.RawCreate));
        Console.WriteLine(Row($"baseline, {rate}/s", "raw Hangfire GetJobData", r.RawGet));
        Console.WriteLine(Row($"mixed, {rate}/s", "POST /api/v1/jobs", r.MixedPost));
        Console.WriteLine(Row($"mixed, {rate}/s", "GET /api/v1/jobs?state=queued&limit=100", r.MixedList));
        return 0;
    }

    public static async Task<Result> MeasureAsync(int jobs, int clients, int seconds, int rate)
    {
        await using var server = await ApiBenchServer.StartAsync("load");
        var app = server.App;
        long commands = 0;
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == "Npgsql",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.PropagationData,
            ActivityStarted = _ => Interlocked.Increment(ref commands),
        };
        ActivitySource.AddActivityListener(listener);
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 256 }) { BaseAddress = server.Address };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ApiBenchServer.Key);
        var hangfire = app.Services.GetRequiredService<IBackgroundJobClient>();
        var ids = new List<string>();
        async Task Post()
        {
            using var response = await http.PostAsJsonAsync("/api/v1/jobs", Spec);
            response.EnsureSuccessStatusCode();
            var id = response.Headers.Location!.OriginalString.Split('/')[^1];
            lock (ids) ids.Add(id);
        }
        // Hangfire's Create blocks its thread for a round trip: on threads of its own, as many as the submitters, as the
        // server makes it (HangfireCalls). On the thread pool, at 100 calls/s, it starved the pool (p99 16.6 s, 2026-11-30);
        // called inline, the submitters' loops ran one after another.
        using var rawThreads = new HangfireCalls(clients);
        Task Raw() => rawThreads.RunAsync(() => hangfire.Create<JobPerformer>(p => p.RunAsync(Guid.NewGuid(), "raw", CancellationToken.None), new EnqueuedState("default")));
        async Task GetOne(string id)
        {
            using var response = await http.GetAsync($"/api/v1/jobs/{id}");
            response.EnsureSuccessStatusCode();
            await response.Content.ReadAsByteArrayAsync();
        }
        async Task GetList()
        {
            using var response = await http.GetAsync("/api/v1/jobs?state=queued&limit=100");
            response.EnsureSuccessStatusCode();
            await response.Content.ReadAsByteArrayAsync();
        }

        // Warm-up: JIT, connection pools.
        await Fill(200, clients, Post);
        await Fill(200, clients, Raw);
        await GetOne(ids[0]);
        await GetList();

        // Throughput, side by side: half the jobs through each path, alternating blocks.
        double apiRate = 0, rawRate = 0;
        var quarter = Math.Max(1, jobs / 4);
        for (int round = 0; round < 2; round++)
        {
            apiRate += await Fill(quarter, clients, Post);
            rawRate += await Fill(quarter, clients, Raw);
        }
        apiRate /= 2;
        rawRate /= 2;

        // Round trips per request, one request at a time.
        const int sequential = 100;
        var before = Interlocked.Read(ref commands);
        for (var i = 0; i < sequential; i++) await Post();
        var postTrips = (Interlocked.Read(ref commands) - before) / (double)sequential;
        var sample = ids.ToArray();
        before = Interlocked.Read(ref commands);
        for (var i = 0; i < sequential; i++) await GetOne(sample[i * 37 % sample.Length]);
        var getTrips = (Interlocked.Read(ref commands) - before) / (double)sequential;

        // Latency phases, open loop: requests start on a schedule whether or not earlier ones have finished, so a
        // slow response cannot hide by slowing the generator down.
        // Baselines at the same rate: Hangfire's own Create, and its own read of one job (GetJobData), in this process.
        var queued = ids.Count + 2 * quarter + 200;
        var storage = app.Services.GetRequiredService<JobStorage>();
        var rawIds = new List<string>();
        for (var i = 0; i < 100; i++) rawIds.Add(hangfire.Create<JobPerformer>(p => p.RunAsync(Guid.NewGuid(), "raw", CancellationToken.None), new EnqueuedState("default")));
        // Each phase starts on a settled machine (Settle): what the ones before it wrote is on disk.
        var db = app.Services.GetRequiredService<NpgsqlDataSource>();
        Task<Latencies[]> Phase(Func<long, (int Kind, Task Request)> next) => OpenLoop(rate, seconds, next, server.PostgresDataDir, db);
        var post = await Phase(_ => (0, Post()));
        var rawCreate = await Phase(_ => (0, Raw()));
        var getOne = await Phase(_ => (0, GetOne(sample[Random.Shared.Next(sample.Length)])));
        var rawGet = await Phase(_ => (0, rawThreads.RunAsync(() =>
        {
            using var connection = storage.GetConnection();
            if (connection.GetJobData(rawIds[Random.Shared.Next(rawIds.Count)]) is null) throw new InvalidOperationException("raw job gone");
        })));
        var mixed = await Phase(i => i % 2 == 0 ? (0, Post()) : (1, GetList()));
        return new Result(apiRate, rawRate, rate, seconds, queued, post[0], getOne[0], mixed[0], mixed[1], rawCreate[0], rawGet[0], postTrips, getTrips);
    }

    /// <summary>
    /// Writes what PostgreSQL and the kernel hold dirty to disk (a checkpoint, then syncfs of the cluster's filesystem)
    /// before a phase. Without
    /// it the phase right after the fill paid for the fill: its 10,000 jobs left about 55 MB of dirty pages (the tables'
    /// and indexes' new pages), which the kernel writes back some 30 s later, and every commit's WAL fsync waits behind
    /// that writeback (stalls of 50–200 ms, logged with /proc/meminfo's Dirty falling at the same moments, 2026-12-02).
    /// Whichever phase ran first took them: POST p99 29–68 ms when first against 14.9 ms when second, raw Hangfire
    /// Create's 45.9 ms when first against 14.6 ms when second.
    /// </summary>
    private static async Task Settle(NpgsqlDataSource db, string pgDataDir)
    {
        await using (var checkpoint = db.CreateCommand("CHECKPOINT")) await checkpoint.ExecuteNonQueryAsync();
        Durable.SyncFileSystemOf(pgDataDir);
    }

    /// <summary>Sends <paramref name="rate"/> requests per second for <paramref name="seconds"/>, each started on schedule
    /// (<paramref name="next"/>: kind 0 or 1, and the request), once the machine has settled (<see cref="Settle"/>); latencies
    /// per kind.</summary>
    private static async Task<Latencies[]> OpenLoop(int rate, int seconds, Func<long, (int Kind, Task Request)> next, string pgDataDir, NpgsqlDataSource db)
    {
        await Settle(db, pgDataDir);
        var cpu0 = ProcStat.CpuMs(Environment.ProcessId)!.Value;
        var pg0 = ProcStat.ClusterCpuMs(pgDataDir);
        var ms = new[] { new List<double>(), new List<double>() };
        var pending = new List<Task>();
        var interval = TimeSpan.FromSeconds(1.0 / rate);
        var clock = Stopwatch.StartNew();
        for (long i = 0; clock.Elapsed < TimeSpan.FromSeconds(seconds); i++)
        {
            var due = interval * i;
            if (due > clock.Elapsed) await Task.Delay(due - clock.Elapsed);
            var k = i;
            pending.Add(Task.Run(async () =>
            {
                var sw = Stopwatch.StartNew();
                var (kind, request) = next(k);
                await request;
                lock (ms[kind]) ms[kind].Add(sw.Elapsed.TotalMilliseconds);
            }));
        }
        await Task.WhenAll(pending);
        var n = (double)pending.Count;
        var cpu = (ProcStat.CpuMs(Environment.ProcessId)!.Value - cpu0) / n;
        var pg = (ProcStat.ClusterCpuMs(pgDataDir) - pg0) / n;
        return [Percentiles(ms[0]) with { ProcessCpuMsPerRequest = cpu, PostgresCpuMsPerRequest = pg }, Percentiles(ms[1])];
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

    private static Latencies Percentiles(List<double> ms)
    {
        ms.Sort();
        double P(double q) => ms.Count == 0 ? double.NaN : ms[Math.Min(ms.Count - 1, (int)Math.Ceiling(q * ms.Count) - 1)];
        return new Latencies(ms.Count, P(0.50), P(0.95), P(0.99), ms.Count == 0 ? double.NaN : ms[^1]);
    }

    private static string Row(string phase, string name, Latencies l) =>
        $"| {phase} | {name} | {l.Count} | {l.P50:F1} | {l.P95:F1} | {l.P99:F1} | {l.Max:F1} | {l.ProcessCpuMsPerRequest:F2} / {l.PostgresCpuMsPerRequest:F2} |";
}
