using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Bench;

/// <summary>
/// Submitting a large array: <c>POST /api/v1/jobs</c> with <c>array.size</c> children, its wall time and the database
/// round trips it makes (every Npgsql command or batch, BatchRunner's and Hangfire's, counted by listening to Npgsql's
/// activity source), against its natural baseline, the same number of jobs submitted one by one. Then how long the
/// dispatcher takes to give the first <c>parallelism</c> children their Hangfire messages.
/// </summary>
/// <remarks>The server is an <see cref="ApiBenchServer"/>: nothing runs the children.</remarks>
public static class ArrayBench
{
    public static async Task<int> RunAsync(int size, int parallelism, int rounds, int singles)
    {
        await using var server = await ApiBenchServer.StartAsync("array", "--Logging:LogLevel:BatchRunner.Requests=Warning");
        var app = server.App;
        var commands = 0L;
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == "Npgsql",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.PropagationData,
            ActivityStarted = _ => Interlocked.Increment(ref commands),
        };
        ActivitySource.AddActivityListener(listener);
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(5) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ApiBenchServer.Key);
        object Spec(int? n) => n is { } s
            ? new { image = "127.0.0.1:5000/demo/busybox:1", command = new[] { "true" }, resources = new { cpus = 0.1, memory = "16Mi" }, array = new { size = s, parallelism } }
            : new { image = "127.0.0.1:5000/demo/busybox:1", command = new[] { "true" }, resources = new { cpus = 0.1, memory = "16Mi" } };
        var store = app.Services.GetRequiredService<JobStore>();

        // Warm-up: JIT, connection pools, the children statement's plan.
        (await http.PostAsJsonAsync("/api/v1/jobs", Spec(100))).EnsureSuccessStatusCode();

        Console.WriteLine($"BatchRunner array submission, {Environment.ProcessorCount} CPUs: array of {size:N0}, parallelism {parallelism}, {rounds} rounds");
        Console.WriteLine("| round | POST (ms) | round trips in the request | first children dispatched (ms after the answer) |");
        Console.WriteLine("|---|---|---|---|");
        for (var round = 1; round <= rounds; round++)
        {
            var before = Interlocked.Read(ref commands);
            var sw = Stopwatch.StartNew();
            var response = await http.PostAsJsonAsync("/api/v1/jobs", Spec(size));
            var body = await response.Content.ReadAsStringAsync();
            var posted = sw.Elapsed.TotalMilliseconds;
            var trips = Interlocked.Read(ref commands) - before;
            response.EnsureSuccessStatusCode();
            var id = Guid.Parse(JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!);
            var first = Math.Min(parallelism, size);
            sw.Restart();
            while ((await store.ListChildrenAsync(id, null, first, -1, default)).Items.Count(c => c.HangfireJobId is not null) < first)
                await Task.Delay(20);
            Console.WriteLine($"| {round} | {posted:F0} | {trips} | {sw.Elapsed.TotalMilliseconds:F0} |");
        }

        // The baseline: the same jobs one by one (a sample of them, extrapolated).
        var before1 = Interlocked.Read(ref commands);
        var one = Stopwatch.StartNew();
        for (var i = 0; i < singles; i++) (await http.PostAsJsonAsync("/api/v1/jobs", Spec(null))).EnsureSuccessStatusCode();
        var perJobMs = one.Elapsed.TotalMilliseconds / singles;
        var perJobTrips = (double)(Interlocked.Read(ref commands) - before1) / singles;
        Console.WriteLine();
        Console.WriteLine($"baseline, {singles} single POSTs one after another: {perJobMs:F1} ms and {perJobTrips:F1} round trips per job " +
                          $"(for {size:N0} jobs: {perJobMs * size / 1000:F0} s, {perJobTrips * size:N0} round trips)");
        return 0;
    }
}
