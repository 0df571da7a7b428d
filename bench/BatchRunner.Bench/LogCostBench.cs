using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Bench;

/// <summary>
/// What logging costs per trivial job: a real BatchRunner process (its own embedded PostgreSQL and data
/// directory) runs <c>true</c> in busybox N times for a client that submits, polls the job every 100 ms
/// until it ends and reads its log, as the CLI does. Measured per job, after a warm-up job: bytes and lines
/// the process wrote to stdout/stderr, CPU time of the server process (utime + stime from /proc), wall time.
/// </summary>
/// <remarks>
/// Configurations, alternated each round:
/// <list type="bullet">
/// <item><c>before</c>: what BatchRunner logged before appsettings.json shipped: every category at
///   Information (ASP.NET Core's five or six lines per request), no request line;</item>
/// <item><c>after</c>: the shipped appsettings.json (ASP.NET Core at Warning, one line per request);</item>
/// <item><c>before-json</c>, <c>after-json</c>: the same with <c>BATCHRUNNER_LOG_FORMAT=json</c>.</item>
/// </list>
/// </remarks>
public static class LogCostBench
{
    private const string Root = "/var/tmp/batchrunner-bench/logcost";
    private const string Key = "logcost-bench-key";

    private static readonly (string Name, string[] Args, bool Json)[] Configs =
    [
        ("before", ["--Logging:LogLevel:Microsoft.AspNetCore=Information", "--Logging:LogLevel:BatchRunner.Requests=None"], false),
        ("after", [], false),
        ("before-json", ["--Logging:LogLevel:Microsoft.AspNetCore=Information", "--Logging:LogLevel:BatchRunner.Requests=None"], true),
        ("after-json", [], true),
    ];

    public static async Task<int> RunAsync(int jobs, int rounds)
    {
        if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
        Directory.CreateDirectory(Root);
        await using var registry = await TestRegistry.StartAsync();
        var image = await TestImages.PushBusyboxAsync(registry);
        Console.WriteLine($"{jobs} jobs of `true` per run, client polls every 100 ms; per job after one warm-up job;");
        Console.WriteLine($"then {Requests} sequential GET /api/v1/jobs/{{id}} of a finished job: per request");
        Console.WriteLine("| config | log bytes/job | log lines/job | requests/job | server CPU ms/job | wall ms/job | log bytes/GET | server CPU µs/GET |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (var round = 0; round < rounds; round++)
        {
            var order = round % 2 == 0 ? Configs : Configs.Reverse().ToArray();
            foreach (var config in order)
            {
                var r = await RunOneAsync(config.Name, config.Args, config.Json, image, jobs);
                Console.WriteLine($"| {config.Name} | {r.Bytes / (double)jobs:0} | {r.Lines / (double)jobs:0.0} | {r.Requests / (double)jobs:0.0} | {r.CpuMs / jobs:0.0} | {r.WallMs / jobs:0} " +
                    $"| {r.GetBytes / (double)Requests:0} | {r.GetCpuMs * 1000 / Requests:0} |");
            }
        }
        Directory.Delete(Root, recursive: true);
        return 0;
    }

    private const int Requests = 1000;

    private sealed record Result(long Bytes, long Lines, int Requests, double CpuMs, double WallMs, long GetBytes, double GetCpuMs);

    private static async Task<Result> RunOneAsync(string name, string[] args, bool json, string image, int jobs)
    {
        var dataDir = Path.Combine(Root, name + "-" + Guid.NewGuid().ToString("N")[..6]);
        var port = BenchServerProcess.FreePort();
        var psi = new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, "batchrunner"))
        {
            UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true,
        };
        foreach (var a in (string[])["--urls", $"http://127.0.0.1:{port}", $"--BatchRunner:DataDir={dataDir}", $"--BatchRunner:ApiKey={Key}",
                     "--BatchRunner:Workers=2", $"--BatchRunner:NodeName=logcost-{name}", .. TestRegistry.ServerArgs, .. args])
            psi.ArgumentList.Add(a);
        if (json) psi.Environment["BATCHRUNNER_LOG_FORMAT"] = "json";
        else psi.Environment.Remove("BATCHRUNNER_LOG_FORMAT");
        using var process = Process.Start(psi)!;
        process.StandardInput.Close();
        var counter = new OutputCounter();
        var pumps = Task.WhenAll(counter.PumpAsync(process.StandardOutput.BaseStream), counter.PumpAsync(process.StandardError.BaseStream));
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Key);
        try
        {
            await NodeProcess.WaitHealthyAsync(process, http, name);
            await RunJobAsync(http, image); // warm-up: image pull, first container, JIT

            var (bytes0, lines0) = counter.Snapshot();
            var cpu0 = CpuMs(process.Id);
            var sw = Stopwatch.StartNew();
            var requests = 0;
            string? last = null;
            for (var i = 0; i < jobs; i++) requests += await RunJobAsync(http, image, id => last = id);
            var wall = sw.Elapsed.TotalMilliseconds;
            var cpu = CpuMs(process.Id) - cpu0;
            // The last job's final lines (executor, Hangfire) are written just after its state: let them land.
            await Task.Delay(500);
            var (bytes1, lines1) = counter.Snapshot();

            // The request path alone: the same GET, answered from the database, a thousand times.
            var cpu2 = CpuMs(process.Id);
            for (var i = 0; i < Requests; i++) await http.GetStringAsync($"/api/v1/jobs/{last}");
            var getCpu = CpuMs(process.Id) - cpu2;
            await Task.Delay(500);
            var (bytes2, _) = counter.Snapshot();
            return new Result(bytes1 - bytes0, lines1 - lines0, requests, cpu, wall, bytes2 - bytes1, getCpu);
        }
        finally
        {
            BatchRunner.Testing.UnixSignals.Send(process.Id, BatchRunner.Testing.UnixSignals.Term);
            await process.WaitForExitAsync();
            await pumps;
            Directory.Delete(dataDir, recursive: true);
        }
    }

    /// <summary>Submit, poll every 100 ms until final, read the log; returns the number of requests.</summary>
    private static async Task<int> RunJobAsync(HttpClient http, string image, Action<string>? submitted = null)
    {
        var submit = await http.PostAsJsonAsync("/api/v1/jobs", new { image, command = new[] { "true" }, resources = new { cpus = 0.5, memory = "32Mi" } });
        submit.EnsureSuccessStatusCode();
        var id = JsonDocument.Parse(await submit.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!;
        submitted?.Invoke(id);
        var requests = 1;
        while (true)
        {
            requests++;
            var state = JsonDocument.Parse(await http.GetStringAsync($"/api/v1/jobs/{id}")).RootElement.GetProperty("state").GetString();
            if (state is "succeeded" or "failed" or "cancelled")
            {
                if (state != "succeeded") throw new InvalidOperationException($"job {id} {state}");
                break;
            }
            await Task.Delay(100);
        }
        await http.GetStringAsync($"/api/v1/jobs/{id}/logs");
        return requests + 1;
    }

    /// <summary>utime + stime of the process itself (its containers and runc are other processes).</summary>
    private static double CpuMs(int pid) => ProcStat.CpuMs(pid) ?? throw new InvalidOperationException($"process {pid} is gone");

    private sealed class OutputCounter
    {
        private long _bytes, _lines;

        public (long Bytes, long Lines) Snapshot() => (Interlocked.Read(ref _bytes), Interlocked.Read(ref _lines));

        public async Task PumpAsync(Stream stream)
        {
            var buffer = new byte[16384];
            int n;
            while ((n = await stream.ReadAsync(buffer)) > 0)
            {
                Interlocked.Add(ref _bytes, n);
                Interlocked.Add(ref _lines, buffer.AsSpan(0, n).Count((byte)'\n'));
            }
        }
    }
}
