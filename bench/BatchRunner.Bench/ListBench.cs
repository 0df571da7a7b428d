using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text.Json;
using BatchRunner.Server.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Bench;

/// <summary>
/// GET /api/v1/jobs with its filters (issue 19) against 100,000 jobs: latency percentiles per filter, sequential
/// requests from a few concurrent clients, and the plan PostgreSQL chose for each (which index). The jobs are made by
/// SQL (one submitted job cloned with generated names, labels, states, queues and times over 30 days), as 100,000
/// submissions would take minutes and measure submission, not listing.
/// </summary>
public static class ListBench
{
    private const string Key = "bench-key";

    public static async Task<int> RunAsync(int jobs, int requests, int clients)
    {
        var dir = Path.Combine("/var/tmp", "batchrunner-bench", "list-" + Guid.NewGuid().ToString("N")[..8]);
        var app = await BatchRunnerApp.BuildAsync([
            "--urls", "http://127.0.0.1:0", $"--BatchRunner:DataDir={dir}", $"--BatchRunner:ApiKey={Key}",
            "--BatchRunner:Role=api", "--BatchRunner:Queues:0=default", "--BatchRunner:Queues:1=gpu", "--Logging:LogLevel:Default=Warning",
        ]);
        await app.StartAsync();
        try
        {
            var db = app.Services.GetRequiredService<NpgsqlDataSource>();
            var sw = Stopwatch.StartNew();
            await FillAsync(db, jobs);
            Console.WriteLine($"{jobs:N0} jobs made in {sw.Elapsed.TotalSeconds:F1} s");

            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            using var http = new HttpClient { BaseAddress = new Uri(address) };
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Key);
            var day = DateTimeOffset.UtcNow.AddDays(-10).ToString("yyyy-MM-dd");
            var next = DateTimeOffset.UtcNow.AddDays(-9).ToString("yyyy-MM-dd");
            (string Name, string Query, string Where)[] cases =
            [
                ("no filter", "limit=50", "true"),
                ("state=failed,cancelled", "state=failed,cancelled&limit=50", "state = any('{failed,cancelled}')"),
                ("label=project=p7 (1 in 20)", "label=project%3Dp7&limit=50", "spec->'labels' @> '{\"project\":\"p7\"}'"),
                ("label=project=p7&label=run=r42 (50 jobs)", "label=project%3Dp7&label=run%3Dr42&limit=50", "spec->'labels' @> '{\"project\":\"p7\",\"run\":\"r42\"}'"),
                ("name=sweep-420-* (prefix, 100 jobs)", "name=sweep-420-*&limit=50", "name like 'sweep-420-%'"),
                ("name=sweep-420-7 (exact)", "name=sweep-420-7&limit=50", "name = 'sweep-420-7'"),
                ("since/until (one day)", $"since={day}&until={next}&limit=50", $"created_at >= '{day}' and created_at < '{next}'"),
                ("state=queued", "state=queued&limit=50", "state = 'queued'"),
                ("queue=gpu&state=queued (none match)", "queue=gpu&state=queued&limit=50", "queue = 'gpu' and state = 'queued'"),
                ("queue=gpu&state=succeeded", "queue=gpu&state=succeeded&limit=50", "queue = 'gpu' and state = 'succeeded'"),
                ("label=project=p7, page 20 (cursor)", "label=project%3Dp7&limit=50&PAGE=20", "spec->'labels' @> '{\"project\":\"p7\"}'"),
                ("view=summary&limit=1000", "view=summary&limit=1000", "true"),
            ];
            Console.WriteLine($"BatchRunner list benchmark, {Environment.ProcessorCount} CPUs, {jobs:N0} jobs, {requests} requests per row from {clients} concurrent clients");
            Console.WriteLine("| GET /api/v1/jobs? | items | p50 ms | p95 ms | p99 ms | plan |");
            Console.WriteLine("|---|---|---|---|---|---|");
            foreach (var (name, query, where) in cases)
            {
                var (items, times) = await MeasureAsync(http, query, requests, clients);
                Console.WriteLine($"| {name} | {items} | {P(times, 0.50):F1} | {P(times, 0.95):F1} | {P(times, 0.99):F1} | {await PlanAsync(db, where)} |");
            }
            return 0;
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    // 100 sweeps of 1000 jobs: names sweep-<sweep>-<i>, labels project (1 in 20), run (1 in 100 sweeps), lr; 70 %
    // succeeded, 10 % failed, 5 % cancelled, 15 % queued; 1 in 5 on queue gpu; created over the last 30 days.
    private static async Task FillAsync(NpgsqlDataSource db, int jobs)
    {
        await using var cmd = db.CreateCommand("""
            insert into batchrunner.jobs (id, name, image, queue, spec, state, created_at, reason, exit_code)
            select gen_random_uuid(), 'sweep-' || (i / 100) || '-' || (i % 100), 'registry.example/ml/train:3',
                   case when i % 5 = 0 then 'gpu' else 'default' end,
                   jsonb_build_object('image', 'registry.example/ml/train:3', 'name', 'sweep-' || (i / 100) || '-' || (i % 100),
                       'command', jsonb_build_array('python3', '/work/train.py', '--lr', ((i % 7) * 0.01)::text, '--epochs', '20', '--seed', i::text),
                       'env', jsonb_build_object('WANDB_MODE', 'offline', 'SEED', i::text),
                       'labels', jsonb_build_object('project', 'p' || (i % 20), 'run', 'r' || (i / 1000), 'lr', ((i % 7) * 0.01)::text),
                       'resources', jsonb_build_object('cpus', 1, 'memoryBytes', 536870912, 'pids', 1024), 'timeoutSeconds', 3600, 'queue',
                       case when i % 5 = 0 then 'gpu' else 'default' end),
                   case when i % 20 < 14 then 'succeeded' when i % 20 < 16 then 'failed' when i % 20 < 17 then 'cancelled' else 'queued' end,
                   now() - interval '30 days' + (i * interval '30 days' / @n),
                   case when i % 20 between 14 and 15 then 'exit_code' when i % 20 = 16 then 'cancelled' end,
                   case when i % 20 < 14 then 0 when i % 20 < 16 then 1 end
              from generate_series(0, @n - 1) as i;
            analyze batchrunner.jobs;
            """);
        cmd.Parameters.AddWithValue("n", jobs);
        cmd.CommandTimeout = 600;
        await cmd.ExecuteNonQueryAsync();
    }

    private static async Task<(int Items, List<double> Ms)> MeasureAsync(HttpClient http, string query, int requests, int clients)
    {
        var pages = query.Contains("&PAGE=") ? int.Parse(query[(query.IndexOf("&PAGE=", StringComparison.Ordinal) + 6)..]) : 1;
        query = query.Contains("&PAGE=") ? query[..query.IndexOf("&PAGE=", StringComparison.Ordinal)] : query;
        // The cursor of page `pages` (walked once, not measured): the row measures a deep page.
        string? cursor = null;
        for (var p = 1; p < pages; p++)
            cursor = JsonDocument.Parse(await http.GetStringAsync($"/api/v1/jobs?{query}" + (cursor is null ? "" : $"&cursor={cursor}"))).RootElement.GetProperty("nextCursor").GetString();
        var url = $"/api/v1/jobs?{query}" + (cursor is null ? "" : $"&cursor={cursor}");
        var items = JsonDocument.Parse(await http.GetStringAsync(url)).RootElement.GetProperty("items").GetArrayLength();
        for (var i = 0; i < 20; i++) await http.GetByteArrayAsync(url); // warm-up
        var times = new List<double>();
        var left = requests;
        await Task.WhenAll(Enumerable.Range(0, clients).Select(async _ =>
        {
            while (Interlocked.Decrement(ref left) >= 0)
            {
                var sw = Stopwatch.StartNew();
                await http.GetByteArrayAsync(url);
                lock (times) times.Add(sw.Elapsed.TotalMilliseconds);
            }
        }));
        return (items, times);
    }

    // The plan of the list's query shape for this filter: its top scan node and index, so the table says which index served it.
    private static async Task<string> PlanAsync(NpgsqlDataSource db, string where)
    {
        await using var cmd = db.CreateCommand($"explain (format json) select id from batchrunner.jobs where {where} order by created_at desc, id desc limit 51");
        using var plan = JsonDocument.Parse((string)(await cmd.ExecuteScalarAsync())!);
        var scans = new List<string>();
        void Walk(JsonElement node)
        {
            var type = node.GetProperty("Node Type").GetString()!;
            if (type.Contains("Scan")) scans.Add(node.TryGetProperty("Index Name", out var ix) ? $"{type} {ix.GetString()}" : type);
            if (node.TryGetProperty("Plans", out var children)) foreach (var c in children.EnumerateArray()) Walk(c);
        }
        Walk(plan.RootElement[0].GetProperty("Plan"));
        return string.Join(", ", scans);
    }

    private static double P(List<double> ms, double q)
    {
        ms.Sort();
        return ms.Count == 0 ? double.NaN : ms[Math.Min(ms.Count - 1, (int)Math.Ceiling(q * ms.Count) - 1)];
    }
}
