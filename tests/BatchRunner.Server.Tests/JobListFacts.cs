using System.Net;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>
/// Listing that finds your jobs and never silently matches everything (issue 19, item 1): filters by name, labels,
/// states, creation time and queue, each narrowing, within the caller's tenant (an admin: every tenant, or ?tenant=);
/// keyset pages under a filter; the summary view.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class JobListFacts(ServerFixture f)
{
    [Fact]
    public async Task List_ReturnsOnlyMatchingJobs_ForEveryFilter_WithinTheCallersTenant()
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        var (mineTenant, theirTenant) = ("t-" + tag + "-a", "t-" + tag + "-b");
        using var mine = await f.Api.ClientForNewKeyAsync(mineTenant, "user");
        using var theirs = await f.Api.ClientForNewKeyAsync(theirTenant, "user");
        var a = await SubmitAsync(mine, $"fx-{tag}-train-1", new() { ["run"] = tag, ["project"] = "ds" }, "true");
        var b = await SubmitAsync(mine, $"fx-{tag}-train-2", new() { ["run"] = tag, ["project"] = "ds", ["lr"] = "0.1" }, "false", queue: "limited");
        var c = await SubmitAsync(mine, $"fx-{tag}-eval", new() { ["run"] = tag, ["project"] = "other" }, "true");
        // Must match none of the filters below: another run's job with a name that only shares the start of the prefix.
        var unrelated = await SubmitAsync(mine, $"fx-{tag}-trai", new() { ["run"] = "x" + tag, ["project"] = "ds" }, "true");
        // Matches every filter a matches, but belongs to another tenant: only an admin listing every tenant sees it.
        var other = await SubmitAsync(theirs, $"fx-{tag}-train-1", new() { ["run"] = tag, ["project"] = "ds" }, "true");
        var times = new Dictionary<string, DateTimeOffset>();
        foreach (var id in new[] { a, b, c, unrelated, other })
            times[id] = (await f.Api.WaitForFinalAsync(id)).GetProperty("createdAt").GetDateTimeOffset();

        Assert.Equal([a], await IdsAsync(mine, $"name=fx-{tag}-train-1"));
        Assert.Equal([b, a], await IdsAsync(mine, $"name=fx-{tag}-train-*"));
        Assert.Equal([b, a], await IdsAsync(mine, $"label=run%3D{tag}&label=project%3Dds"));
        Assert.Equal([b], await IdsAsync(mine, $"label=run%3D{tag}&label=lr%3D0.1"));
        Assert.Equal([b], await IdsAsync(mine, $"label=run%3D{tag}&state=failed"));
        Assert.Equal([c, b, a], await IdsAsync(mine, $"label=run%3D{tag}&state=failed,succeeded"));
        Assert.Equal([b], await IdsAsync(mine, $"label=run%3D{tag}&queue=limited"));
        Assert.Equal([c, b], await IdsAsync(mine, $"label=run%3D{tag}&since={Uri.EscapeDataString(times[b].ToString("O"))}"));
        Assert.Equal([a], await IdsAsync(mine, $"label=run%3D{tag}&until={Uri.EscapeDataString(times[b].ToString("O"))}"));
        Assert.Empty(await IdsAsync(mine, $"label=run%3D{tag}&name=fx-{tag}-trai"));
        Assert.Empty(await IdsAsync(mine, $"label=run%3D{tag}&label=project%3Dnope"));
        Assert.Equal([other], await IdsAsync(theirs, $"label=run%3D{tag}"));
        // An admin: every tenant's matches, or one tenant's (?tenant= is a filter like the others).
        Assert.Equal([other, a], await IdsAsync(f.Api, $"name=fx-{tag}-train-1"));
        Assert.Equal([a], await IdsAsync(f.Api, $"name=fx-{tag}-train-1&tenant={mineTenant}"));
        Assert.Equal([other], await IdsAsync(f.Api, $"label=run%3D{tag}&tenant={theirTenant}&view=summary"));
        Assert.Equal(HttpStatusCode.Forbidden, (await mine.Http.GetAsync($"/api/v1/jobs?label=run%3D{tag}&tenant={theirTenant}")).StatusCode);

        // Keyset pages under a filter: every match once, in order, and nothing else.
        var paged = new List<string>();
        string? cursor = null;
        do
        {
            var page = await PageAsync(mine, $"label=run%3D{tag}&limit=1" + (cursor is null ? "" : $"&cursor={cursor}"));
            paged.AddRange(page.GetProperty("items").EnumerateArray().Select(BatchRunnerClient.Id));
            cursor = page.GetProperty("nextCursor").GetString();
        } while (cursor is not null);
        Assert.Equal([c, b, a], paged);
    }

    [Fact]
    public async Task List_SummaryView_LeavesOutCommandEnvAndOutputs_AndKeepsWhatTellsJobsApart()
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        var id = await SubmitAsync(f.Api, $"summary-{tag}", new() { ["run"] = tag }, "echo hi > /outputs/x.txt", env: new() { ["SEED"] = "7" });
        await f.Api.WaitForFinalAsync(id);
        var summary = (await PageAsync(f.Api, $"label=run%3D{tag}&view=summary")).GetProperty("items").EnumerateArray().Single();
        var names = summary.EnumerateObject().Select(p => p.Name).ToHashSet();
        foreach (var gone in new[] { "command", "args", "env", "outputs", "attempts", "workingDir", "user" })
            Assert.DoesNotContain(gone, names);
        foreach (var kept in new[] { "id", "name", "image", "imageDigest", "queue", "state", "reason", "message", "exitCode", "attempt",
                     "createdAt", "startedAt", "finishedAt", "resources", "labels", "usage", "node", "nodeAlive", "envNames", "secretEnvNames",
                     "tenant", "submittedBy", "logsTruncated" })
            Assert.Contains(kept, names);
        Assert.Equal(tag, summary.GetProperty("labels").GetProperty("run").GetString());
        Assert.Equal("succeeded", summary.GetProperty("state").GetString());
        Assert.Equal(["SEED"], summary.GetProperty("envNames").EnumerateArray().Select(e => e.GetString()));

        // The default view keeps every field a list item had (command, envNames); args and env values, whose size
        // only the submission limit bounds, are in the single job's view.
        var full = (await PageAsync(f.Api, $"label=run%3D{tag}")).GetProperty("items").EnumerateArray().Single();
        Assert.Equal("/bin/sh", full.GetProperty("command")[0].GetString());
        Assert.Equal("SEED", full.GetProperty("envNames")[0].GetString());
        Assert.Equal(JsonValueKind.Null, full.GetProperty("env").ValueKind);
        Assert.Equal("7", (await f.Api.GetJobAsync(id)).GetProperty("env").GetProperty("SEED").GetString());
    }

    [Theory]
    [InlineData("state=bogus", "state")]
    [InlineData("state=queued,nope", "state")]
    [InlineData("since=yesterday", "since")]
    [InlineData("until=2025-13-45T00:00:00Z", "until")]
    [InlineData("since=2025-02-01&until=2025-01-01", "until")]
    [InlineData("name=a*b", "name")]
    [InlineData("name=*", "name")]
    [InlineData("label=nokey", "label")]
    [InlineData("label==v", "label")]
    [InlineData("view=tiny", "view")]
    [InlineData("limit=0", "limit")]
    [InlineData("limit=ten", "limit")]
    [InlineData("nmae=train", "nmae")]
    [InlineData("labels=run%3Dx", "labels")]
    public async Task List_Gets400NamingTheParameter_WhenAFilterCannotBeRead(string query, string parameter)
    {
        var response = await f.Client.GetAsync("/api/v1/jobs?" + query);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, text);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.True(JsonDocument.Parse(text).RootElement.GetProperty("errors").TryGetProperty(parameter, out _), text);
    }

    private async Task<string> SubmitAsync(BatchRunnerClient client, string name, Dictionary<string, string> labels, string script, string queue = "default",
        Dictionary<string, string>? env = null) =>
        await client.SubmitIdAsync(new { name, image = f.Busybox, command = new[] { "/bin/sh", "-c", script }, labels, queue, env, resources = new { cpus = 0.1, memory = "16Mi" } });

    private static async Task<JsonElement> PageAsync(BatchRunnerClient client, string query)
    {
        var response = await client.Http.GetAsync("/api/v1/jobs?" + query);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{query}: {(int)response.StatusCode} {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    private static async Task<List<string>> IdsAsync(BatchRunnerClient client, string query) =>
        (await PageAsync(client, query + "&limit=1000")).GetProperty("items").EnumerateArray().Select(BatchRunnerClient.Id).ToList();
}
