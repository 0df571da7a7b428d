using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Observability;

/// <summary>
/// BATCHRUNNER_LOG_FORMAT=json on a real BatchRunner process (the server's own executable, its own
/// embedded PostgreSQL and data directory): every stdout line is a JSON object, and every line about a job
/// carries the job's id, including lines of components that know nothing of jobs (the image store).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed partial class JsonLogsFacts(ServerFixture f)
{
    private const string Key = "json-logs-key";

    [Fact]
    public async Task JsonLogs_AreJsonLines_AndLinesAboutAJobCarryItsId()
    {
        var dataDir = Path.Combine("/tmp", "br-jsonlogs-" + Guid.NewGuid().ToString("N")[..8]);
        var lines = new ConcurrentQueue<string>();
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            ArgumentList =
            {
                Path.Combine(AppContext.BaseDirectory, "batchrunner.dll"),
                "--urls", "http://127.0.0.1:0",
                $"--BatchRunner:DataDir={dataDir}",
                $"--BatchRunner:ApiKey={Key}",
                "--BatchRunner:Workers=1",
                "--BatchRunner:NodeName=jsonlogs-" + Guid.NewGuid().ToString("N")[..6],
                "--Logging:LogLevel:Default=Information",
            },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.Environment["BATCHRUNNER_LOG_FORMAT"] = "json";
        psi.Environment.Remove("ASPNETCORE_ENVIRONMENT");
        using var process = Process.Start(psi)!;
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lines.Enqueue(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lines.Enqueue("stderr: " + e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            // The address comes from the host's own (JSON) "Now listening on" line.
            var address = await Poll.UntilAsync(() =>
            {
                if (process.HasExited) throw new InvalidOperationException($"batchrunner exited {process.ExitCode}:\n{string.Join('\n', lines)}");
                var m = lines.Select(l => ListeningOn().Match(l)).FirstOrDefault(m => m.Success);
                return Task.FromResult(m?.Groups[1].Value);
            }, a => a is not null, TimeSpan.FromSeconds(60), "batchrunner to listen", 100);

            using var http = new HttpClient { BaseAddress = new Uri(address!) };
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Key);
            var submit = await http.PostAsJsonAsync("/api/v1/jobs", new { name = "json-logs", image = f.Busybox, command = new[] { "/bin/sh", "-c", "echo hi" } });
            Assert.True(submit.IsSuccessStatusCode, await submit.Content.ReadAsStringAsync());
            var id = JsonDocument.Parse(await submit.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!;
            await Poll.UntilAsync(async () => JsonDocument.Parse(await http.GetStringAsync($"/api/v1/jobs/{id}")).RootElement.GetProperty("state").GetString(),
                s => s is "succeeded" or "failed" or "cancelled", TimeSpan.FromSeconds(60), $"job {id}", 100);
            // The executor logs the outcome after recording it: wait for that line.
            await Poll.UntilAsync(() => lines.Any(l => l.Contains(id) && l.Contains("ended")), TimeSpan.FromSeconds(10), "the job's final log line");

            await StopAsync(process);
            var all = lines.ToList();
            Assert.DoesNotContain(all, l => l.StartsWith("stderr: ", StringComparison.Ordinal) && l.Length > "stderr: ".Length);
            var parsed = all.Select(l =>
            {
                try { return JsonDocument.Parse(l).RootElement.Clone(); }
                catch (JsonException e) { throw new Xunit.Sdk.XunitException($"not a JSON line: {l} ({e.Message})"); }
            }).ToList();
            Assert.All(parsed, p => Assert.True(p.TryGetProperty("Timestamp", out _) && p.TryGetProperty("LogLevel", out _) && p.TryGetProperty("Category", out _)));

            // Every line that mentions the job carries its id as a structured field (state or scope).
            var aboutJob = parsed.Where(p => p.GetRawText().Contains(id, StringComparison.OrdinalIgnoreCase)).ToList();
            Assert.NotEmpty(aboutJob);
            Assert.All(aboutJob, p => Assert.True(HasJobId(p, id), $"log line without JobId: {p.GetRawText()}"));
            // The scope reaches components that know nothing of jobs.
            Assert.Contains(parsed, p => p.GetProperty("Category").GetString()!.StartsWith("BatchRunner.Oci", StringComparison.Ordinal) && InScope(p, id));
            Assert.Contains(parsed, p => p.GetProperty("Category").GetString() == "BatchRunner.Server.Execution.JobExecutor" && InScope(p, id));
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync();
            }
            await StopEmbeddedPostgresAsync(dataDir);
            if (Directory.Exists(dataDir)) Directory.Delete(dataDir, recursive: true);
        }
    }

    /// <summary>
    /// The id is in a structured field: <c>JobId</c> in the message's state or a scope, or (ASP.NET Core's
    /// request lines, logged before routing) the request path of the job's API URL.
    /// </summary>
    private static bool HasJobId(JsonElement line, string id) =>
        InScope(line, id)
        || (line.TryGetProperty("State", out var state) && state.TryGetProperty("JobId", out var j) && string.Equals(j.GetString(), id, StringComparison.OrdinalIgnoreCase))
        || (line.TryGetProperty("Scopes", out var scopes) && scopes.EnumerateArray().Any(s =>
            s.ValueKind == JsonValueKind.Object && s.TryGetProperty("RequestPath", out var path) && path.GetString()!.Contains("/jobs/" + id, StringComparison.OrdinalIgnoreCase)));

    private static bool InScope(JsonElement line, string id) =>
        line.TryGetProperty("Scopes", out var scopes)
        && scopes.EnumerateArray().Any(s => s.ValueKind == JsonValueKind.Object && s.TryGetProperty("JobId", out var j) && string.Equals(j.GetString(), id, StringComparison.OrdinalIgnoreCase));

    /// <summary>SIGTERM: the host stops gracefully (and its embedded PostgreSQL with it).</summary>
    private static async Task StopAsync(Process process)
    {
        await ExternalCommand.RunAsync("kill", ["-TERM", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(cts.Token);
    }

    /// <summary>When the process had to be killed, its PostgreSQL is still running: stop it before removing the directory.</summary>
    private static async Task StopEmbeddedPostgresAsync(string dataDir)
    {
        var pgData = Path.Combine(dataDir, "postgres");
        if (!File.Exists(Path.Combine(pgData, "postmaster.pid"))) return;
        var pgCtl = Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin", "pg_ctl")).First(File.Exists);
        try { await ExternalCommand.RunAsync("runuser", ["-u", "postgres", "--", pgCtl, "-D", pgData, "-m", "immediate", "-w", "stop"]); }
        catch (Exception) { /* already stopped */ }
    }

    [GeneratedRegex(@"Now listening on: (http://127\.0\.0\.1:\d+)")]
    private static partial Regex ListeningOn();
}
