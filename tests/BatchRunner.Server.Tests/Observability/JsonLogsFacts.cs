using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Observability;

/// <summary>
/// BATCHRUNNER_LOG_FORMAT=json on a real BatchRunner process (the server's own executable, its own
/// embedded PostgreSQL and data directory): every stdout line is a JSON object, and every line about a job
/// carries the job's id, including lines of components that know nothing of jobs (the image store).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class JsonLogsFacts(ServerFixture f)
{
    private const string Key = "json-logs-key";

    [Fact]
    public async Task JsonLogs_AreJsonLines_AndLinesAboutAJobCarryItsId()
    {
        await using var server = await ServerProcess.StartAsync("jsonlogs",
            ["--BatchRunner:Workers=1", "--Logging:LogLevel:Default=Information", .. TestRegistry.ServerArgs],
            new Dictionary<string, string> { ["BATCHRUNNER_LOG_FORMAT"] = "json" });
        var id = await server.Api.SubmitIdAsync(new { name = "json-logs", image = f.Busybox, command = new[] { "/bin/sh", "-c", "echo hi" } });
        await server.Api.WaitForFinalAsync(id);
        // The executor logs the outcome after recording it: wait for that line.
        await Poll.UntilAsync(() => server.Lines.Any(l => l.Contains(id) && l.Contains("ended")), TimeSpan.FromSeconds(10), "the job's final log line");

        await server.StopAsync();
        var all = server.Lines;
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
}
