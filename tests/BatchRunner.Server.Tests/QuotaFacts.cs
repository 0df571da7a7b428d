using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>
/// Tenant quotas, filling the node by resources, and why a queued job waits, through the HTTP API on the shared server
/// (one node of 2 CPUs and 4Gi, default Workers, queue "limited" limited to 1 job at a time).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class QuotaFacts(ServerFixture f)
{
    private static string NewTenant() => "q-" + Guid.NewGuid().ToString("N")[..10];

    private static string? Message(JsonElement job) => job.TryGetProperty("message", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString() : null;

    [Fact]
    public async Task PutTenant_SetsQuotaAndWeight_AndListShowsAdminsAllTenants_AndOthersTheirOwn()
    {
        var tenant = NewTenant();
        var put = await f.Api.PutTenantAsync(tenant, new { maxQueuedJobs = 10, maxRunning = new { cpus = 1.5, memory = "2Gi", gpus = 0 }, weight = 2 });
        Assert.Equal(tenant, put.GetProperty("name").GetString());
        Assert.Equal(10, put.GetProperty("maxQueuedJobs").GetInt32());
        Assert.Equal(1.5, put.GetProperty("maxRunning").GetProperty("cpus").GetDouble());
        Assert.Equal("2Gi", put.GetProperty("maxRunning").GetProperty("memory").GetString());
        Assert.Equal(2L << 30, put.GetProperty("maxRunning").GetProperty("memoryBytes").GetInt64());
        Assert.Equal(2, put.GetProperty("weight").GetDouble());
        Assert.Equal(0, put.GetProperty("usage").GetProperty("queuedJobs").GetInt64());

        // Setting it again replaces it: what is omitted is no limit, weight 1.
        var cleared = await f.Api.PutTenantAsync(tenant, new { maxQueuedJobs = 3 });
        Assert.Equal(JsonValueKind.Null, cleared.GetProperty("maxRunning").GetProperty("cpus").ValueKind);
        Assert.Equal(1, cleared.GetProperty("weight").GetDouble());

        var all = JsonDocument.Parse(await f.Client.GetStringAsync("/api/v1/tenants")).RootElement;
        Assert.Contains(all.EnumerateArray(), t => t.GetProperty("name").GetString() == tenant);
        Assert.Contains(all.EnumerateArray(), t => t.GetProperty("name").GetString() == "default");

        using var user = await f.Api.ClientForNewKeyAsync(tenant, "viewer");
        var own = JsonDocument.Parse(await user.Http.GetStringAsync("/api/v1/tenants")).RootElement;
        Assert.Equal(tenant, Assert.Single(own.EnumerateArray()).GetProperty("name").GetString());
        Assert.Equal(HttpStatusCode.Forbidden, (await user.Http.PutAsJsonAsync($"/api/v1/tenants/{tenant}", new { maxQueuedJobs = 100 })).StatusCode);

        var bad = await f.Client.PutAsJsonAsync("/api/v1/tenants/Bad Name", new { maxQueuedJobs = -1, maxRunning = new { memory = "lots" }, weight = 0 });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        var errors = (await BatchRunnerClient.JsonOf(bad)).GetProperty("errors");
        foreach (var field in new[] { "name", "maxQueuedJobs", "maxRunning.memory", "weight" })
            Assert.True(errors.TryGetProperty(field, out _), $"no error for {field}: {errors}");
    }

    [Fact]
    public async Task Submit_Answers429NamingTheQuota_PastMaxQueuedJobs_EvenWhenSubmissionsRace()
    {
        var tenant = NewTenant();
        // maxRunning 0 CPUs: nothing of the tenant starts, so its jobs stay queued while the test counts them.
        await f.Api.PutTenantAsync(tenant, new { maxQueuedJobs = 3, maxRunning = new { cpus = 0 } });
        using var user = await f.Api.ClientForNewKeyAsync(tenant, "user");

        var responses = await Task.WhenAll(Enumerable.Range(0, 12).Select(_ =>
            user.PostJobAsync(new { image = f.Busybox, command = new[] { "true" }, resources = new { cpus = 0.1 } })));
        var created = responses.Where(r => r.StatusCode == HttpStatusCode.Created).ToList();
        var refused = responses.Where(r => r.StatusCode == HttpStatusCode.TooManyRequests).ToList();
        Assert.Equal(3, created.Count);
        Assert.Equal(9, refused.Count);
        var problem = await BatchRunnerClient.JsonOf(refused[0]);
        Assert.Equal("application/problem+json", refused[0].Content.Headers.ContentType?.MediaType);
        Assert.Equal("maxQueuedJobs", problem.GetProperty("quota").GetString());
        Assert.Equal(3, problem.GetProperty("limit").GetInt32());
        Assert.Contains("maxQueuedJobs", problem.GetProperty("detail").GetString());
        Assert.All(refused, r => Assert.Equal(TimeSpan.FromSeconds(BatchRunner.Server.Api.TenantQuotaProblems.QueuedJobsRetryAfterSeconds), r.Headers.RetryAfter?.Delta));

        // The queued ones say why they do not start; once they are gone, the tenant may submit again.
        var ids = new List<string>();
        foreach (var r in created) ids.Add(BatchRunnerClient.Id(await BatchRunnerClient.CreatedAsync(r)));
        var waiting = await user.WaitAsync(ids[0], j => Message(j) is not null, what: "a message saying why it waits");
        Assert.Equal("queued", BatchRunnerClient.State(waiting));
        Assert.Equal("tenant quota: 0 of 0 CPU running", Message(waiting));
        foreach (var id in ids) Assert.Equal(HttpStatusCode.Accepted, (await user.CancelAsync(id)).StatusCode);
        var again = await user.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" }, resources = new { cpus = 0.1 } });
        Assert.Equal(HttpStatusCode.Accepted, (await user.CancelAsync(again)).StatusCode);
    }

    [Fact]
    public async Task MaxRunning_HoldsTheTenantsJobsInTheQueue_SampledThroughTheApi()
    {
        var tenant = NewTenant();
        await f.Api.PutTenantAsync(tenant, new { maxRunning = new { cpus = 1 } });
        using var user = await f.Api.ClientForNewKeyAsync(tenant, "user");
        var ids = new List<string>();
        for (var i = 0; i < 4; i++)
            ids.Add(await user.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "1.5" }, resources = new { cpus = 0.5, memory = "64Mi" } }));

        // The node has 2 CPUs: without the quota all four would run at once.
        var maxRunning = 0.0;
        string? quotaMessage = null;
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            var usage = JsonDocument.Parse(await user.Http.GetStringAsync("/api/v1/tenants")).RootElement[0].GetProperty("usage");
            maxRunning = Math.Max(maxRunning, usage.GetProperty("cpus").GetDouble());
            var jobs = await Task.WhenAll(ids.Select(user.GetJobAsync));
            quotaMessage ??= jobs.Select(Message).FirstOrDefault(m => m?.StartsWith("tenant quota", StringComparison.Ordinal) == true);
            if (jobs.All(j => BatchRunnerClient.State(j) == "succeeded")) break;
            await Task.Delay(50);
        }
        foreach (var id in ids) Assert.Equal("succeeded", BatchRunnerClient.State(await user.GetJobAsync(id)));
        Assert.True(maxRunning is > 0 and <= 1.0, $"tenant ran {maxRunning} CPUs at once; its quota is 1");
        Assert.Equal("tenant quota: 1 of 1 CPU running", quotaMessage);
    }

    [Fact]
    public async Task Sweep_OfEightHalfCpuJobs_RunsFourAtATime_OnATwoCpuNode_WithDefaultWorkers()
    {
        var ids = new List<string>();
        for (var i = 0; i < 8; i++)
            ids.Add(await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "1" }, resources = new { cpus = 0.5, memory = "64Mi" } }));
        var runs = new List<(DateTimeOffset Start, DateTimeOffset End)>();
        foreach (var id in ids)
        {
            var done = await f.Api.WaitForFinalAsync(id);
            Assert.Equal("succeeded", BatchRunnerClient.State(done));
            runs.Add((done.GetProperty("startedAt").GetDateTimeOffset(), done.GetProperty("finishedAt").GetDateTimeOffset()));
        }
        // The most runs overlapping at any start: 4 (2 CPUs / 0.5), never more.
        var overlap = runs.Max(r => runs.Count(o => o.Start <= r.Start && r.Start < o.End));
        Assert.Equal(4, overlap);
    }

    [Fact]
    public async Task QueuedJob_SaysItWaitsForCpus_WithTheLargestFreeOnAnyNode_AndTheMessageClearsWhenItStarts()
    {
        // A full node: its fetching worker waits up to 2 s for room, the fetched job 2 s more for a release, then it says why it waits.
        var hog = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "6" }, resources = new { cpus = 2, memory = "64Mi" } });
        await f.Api.WaitForStateAsync(hog, s => s == "running");
        var small = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "0.2" }, resources = new { cpus = 0.5, memory = "64Mi" } });
        var waiting = await f.Api.WaitAsync(small, j => Message(j) is not null, what: "a message saying why it waits");
        Assert.Equal("queued", BatchRunnerClient.State(waiting));
        Assert.Equal("waiting for 0.5 CPU on any node (largest free: 0)", Message(waiting));
        var running = await f.Api.WaitForStateAsync(small, s => s is "running" or "succeeded");
        Assert.Null(Message(running));
        Assert.Equal("succeeded", BatchRunnerClient.State(await f.Api.WaitForFinalAsync(small)));
        await f.Api.WaitForFinalAsync(hog);
    }

    [Fact]
    public async Task QueuedJob_SaysTheQueueLimitIsReached()
    {
        var first = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "3" }, queue = "limited", resources = new { cpus = 0.1 } });
        await f.Api.WaitForStateAsync(first, s => s == "running");
        var second = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" }, queue = "limited", resources = new { cpus = 0.1 } });
        var waiting = await f.Api.WaitAsync(second, j => Message(j) is not null, what: "a message saying why it waits");
        Assert.Equal("queued", BatchRunnerClient.State(waiting));
        Assert.Equal("queue limit 1 reached (queue limited)", Message(waiting));
        Assert.Equal("succeeded", BatchRunnerClient.State(await f.Api.WaitForFinalAsync(second)));
        await f.Api.WaitForFinalAsync(first);
    }

    [Fact]
    public async Task FairShare_StartsTheSecondTenantsJobsInAlternation_WhenTheFirstHasMany()
    {
        string a = NewTenant(), b = NewTenant();
        using var userA = await f.Api.ClientForNewKeyAsync(a, "user");
        using var userB = await f.Api.ClientForNewKeyAsync(b, "user");
        // One CPU each on a node of two: two jobs at a time, every start decided by fair share once both tenants wait.
        object Job() => new { image = f.Busybox, command = new[] { "sleep", "0.3" }, resources = new { cpus = 1, memory = "16Mi" } };
        var idsA = new List<string>();
        for (var i = 0; i < 200; i++) idsA.Add(await userA.SubmitIdAsync(Job()));
        var idsB = new List<string>();
        for (var i = 0; i < 20; i++) idsB.Add(await userB.SubmitIdAsync(Job()));
        var bQueued = DateTimeOffset.UtcNow;

        var startsB = await Poll.UntilAsync(() => StartsAsync(b), s => s.Count == 20, TimeSpan.FromSeconds(90), "all of tenant B's jobs started", 250);
        var startsA = await StartsAsync(a);
        foreach (var id in idsA) await f.Api.CancelAsync(id);

        // From B's submission to B's last start: one start for A per start for B (give or take the first and last).
        var window = startsA.Where(t => t > bQueued && t <= startsB.Max()).Concat(startsB)
            .Select(t => (At: t, B: startsB.Contains(t))).OrderBy(s => s.At).ToList();
        var aInWindow = window.Count(s => !s.B);
        var longestRun = window.Select((s, i) => window.Skip(i).TakeWhile(o => o.B == s.B).Count()).Max();
        var order = string.Concat(window.Select(s => s.B ? 'B' : 'A'));
        Assert.True(aInWindow is >= 16 and <= 24, $"A started {aInWindow} jobs while B's 20 started: {order}");
        Assert.True(longestRun <= 3, $"a run of {longestRun} starts of one tenant: {order}");
    }

    /// <summary>When the tenant's jobs started (running), through the listing.</summary>
    private async Task<List<DateTimeOffset>> StartsAsync(string tenant)
    {
        var page = JsonDocument.Parse(await f.Client.GetStringAsync($"/api/v1/jobs?tenant={tenant}&limit=1000")).RootElement;
        return [.. page.GetProperty("items").EnumerateArray()
            .Where(j => j.TryGetProperty("startedAt", out var s) && s.ValueKind == JsonValueKind.String)
            .Select(j => j.GetProperty("startedAt").GetDateTimeOffset())];
    }
}
