using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Observability;

/// <summary>
/// A real Prometheus (Debian's package) scrapes the test server with the repository's scrape configuration
/// (dashboards/prometheus/prometheus.local.yml, target replaced, 1 s interval), and its HTTP API answers
/// queries about a job that burned CPU.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class PrometheusFacts(ServerFixture f)
{
    [Fact]
    public async Task Prometheus_ScrapesBatchRunner_AndAnswersForAJobsCpuAndOutcome()
    {
        await using var prometheus = await PrometheusProcess.StartAsync(f.Client.BaseAddress!);

        // Up: the scrape of BatchRunner works with the repo's config.
        await Poll.UntilAsync(() => prometheus.QueryAsync("up{job=\"batchrunner\"}"),
            r => r.Count == 1 && r[0].Value == 1, TimeSpan.FromSeconds(30), "up{job=\"batchrunner\"} == 1", 250);

        var id = (await f.Api.SubmitAsync(new
        {
            name = "prometheus-burn",
            image = f.Busybox,
            // Busy for about 6 s of wall time: several 1 s scrapes see the container past 1 s of CPU, also on a loaded
            // machine (with 4 s, a run under the full suite's load saw 0.91 s at its last scrape).
            command = new[] { "/bin/sh", "-c", "end=$(( $(date +%s) + 6 )); while [ $(date +%s) -lt $end ]; do :; done" },
            resources = new { cpus = 1 },
        })).GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("succeeded", done.GetProperty("state").GetString());

        // The series ended with the job (a staleness marker hides it from instant queries): ask over a window.
        var cpu = await Poll.UntilAsync(() => prometheus.QueryAsync($"max_over_time(container_cpu_usage_seconds_total{{job_id=\"{id}\"}}[5m])"),
            r => r.Count == 1 && r[0].Value > 1, TimeSpan.FromSeconds(30), $"container_cpu_usage_seconds_total of job {id}", 500);
        Assert.Equal("prometheus-burn", cpu[0].Labels["job_name"]);

        var finished = await Poll.UntilAsync(() => prometheus.QueryAsync("sum(batchrunner_jobs_finished_total{state=\"succeeded\"})"),
            r => r.Count == 1 && r[0].Value >= 1, TimeSpan.FromSeconds(30), "batchrunner_jobs_finished_total", 500);
        Assert.True(finished[0].Value >= 1);
    }

    /// <summary>A prometheus process on a free loopback port with a temp TSDB; disposal kills it and removes its files.</summary>
    private sealed class PrometheusProcess : IAsyncDisposable
    {
        private readonly Process _process;
        private readonly string _dir;
        private readonly HttpClient _http;
        private readonly System.Text.StringBuilder _output = new();

        private PrometheusProcess(Process process, string dir, int port)
        {
            _process = process;
            _dir = dir;
            _http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(10) };
        }

        public static async Task<PrometheusProcess> StartAsync(Uri target)
        {
            var dir = Directory.CreateTempSubdirectory("br-prometheus-").FullName;
            try
            {
                var source = await File.ReadAllTextAsync(Path.Combine(RepoPaths.Root, "dashboards", "prometheus", "prometheus.local.yml"));
                Assert.Contains("\"127.0.0.1:8080\"", source);
                Assert.Contains("scrape_interval: 5s", source);
                var config = source
                    .Replace("\"127.0.0.1:8080\"", $"\"{target.Host}:{target.Port}\"")
                    .Replace("scrape_interval: 5s", "scrape_interval: 1s");
                var configPath = Path.Combine(dir, "prometheus.yml");
                await File.WriteAllTextAsync(configPath, config);
                var port = FreePort();
                var psi = new ProcessStartInfo("prometheus")
                {
                    ArgumentList =
                    {
                        $"--config.file={configPath}",
                        $"--storage.tsdb.path={Path.Combine(dir, "data")}",
                        $"--web.listen-address=127.0.0.1:{port}",
                        "--log.level=warn",
                    },
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                    UseShellExecute = false,
                };
                var process = Process.Start(psi) ?? throw new InvalidOperationException("prometheus did not start");
                var p = new PrometheusProcess(process, dir, port);
                process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (p._output) p._output.AppendLine(e.Data); };
                process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (p._output) p._output.AppendLine(e.Data); };
                process.BeginOutputReadLine();
                process.BeginErrorReadLine();
                try
                {
                    await Poll.UntilAsync(async () =>
                    {
                        if (process.HasExited) throw new InvalidOperationException($"prometheus exited with {process.ExitCode}: {p.Output}");
                        try { return (await p._http.GetAsync("/-/ready")).StatusCode == HttpStatusCode.OK; }
                        catch (HttpRequestException) { return false; }
                    }, ok => ok, TimeSpan.FromSeconds(30), "prometheus /-/ready", 100);
                }
                catch
                {
                    await p.DisposeAsync();
                    throw;
                }
                return p;
            }
            catch
            {
                if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
                throw;
            }
        }

        public string Output { get { lock (_output) return _output.ToString(); } }

        public sealed record Series(IReadOnlyDictionary<string, string> Labels, double Value)
        {
            public override string ToString() => $"{{{string.Join(",", Labels.Select(l => $"{l.Key}={l.Value}"))}}} {Value}";
        }

        /// <summary>A result list that prints its series (for timeout messages).</summary>
        public sealed class Result(IEnumerable<Series> items) : List<Series>(items)
        {
            public override string ToString() => "[" + string.Join("; ", this) + "]";
        }

        /// <summary>An instant query through /api/v1/query; a vector result as (labels, value) pairs.</summary>
        public async Task<Result> QueryAsync(string promql)
        {
            var body = await _http.GetStringAsync("/api/v1/query?query=" + Uri.EscapeDataString(promql));
            using var doc = JsonDocument.Parse(body);
            Assert.Equal("success", doc.RootElement.GetProperty("status").GetString());
            var data = doc.RootElement.GetProperty("data");
            Assert.Equal("vector", data.GetProperty("resultType").GetString());
            return new Result(data.GetProperty("result").EnumerateArray().Select(r => new Series(
                r.GetProperty("metric").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!),
                double.Parse(r.GetProperty("value")[1].GetString()!, NumberStyles.Float, CultureInfo.InvariantCulture))));
        }

        public async ValueTask DisposeAsync()
        {
            _http.Dispose();
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                await _process.WaitForExitAsync(cts.Token);
            }
            _process.Dispose();
            if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
        }

        private static int FreePort()
        {
            using var l = new TcpListener(IPAddress.Loopback, 0);
            l.Start();
            return ((IPEndPoint)l.LocalEndpoint).Port;
        }
    }
}
