using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Core;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Server.Tests;

/// <summary>Admission at submission, retries, queue limits, idempotent submission, the nodes API.</summary>
[Collection(ServerCollection.Name)]
public sealed class SchedulingFacts(ServerFixture f)
{
    private static string State(JsonElement j) => j.GetProperty("state").GetString()!;

    [Fact]
    public async Task Submit_Refuses_AJobNoLiveNodeCanRun_NamingTheResource()
    {
        var response = await f.Client.PostAsJsonAsync("/api/v1/jobs", new { image = f.Busybox, resources = new { cpus = 64, memory = "1Ti" } });
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var errors = JsonDocument.Parse(text).RootElement.GetProperty("errors");
        Assert.Contains("largest live node has 2", errors.GetProperty("resources.cpus")[0].GetString());
        Assert.Contains("largest live node has 4Gi", errors.GetProperty("resources.memory")[0].GetString());
    }

    [Fact]
    public async Task Submit_Refuses_ANodeSelectorNoLiveNodeMatches_AndAcceptsOneThatMatches()
    {
        var bad = await f.Client.PostAsJsonAsync("/api/v1/jobs", new { image = f.Busybox, nodeSelector = new { zone = "b" } });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("zone=b", await bad.Content.ReadAsStringAsync());

        var id = (await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "true" }, nodeSelector = new { zone = "a" } })).GetProperty("id").GetString()!;
        Assert.Equal("succeeded", State(await f.Api.WaitForFinalAsync(id)));
    }

    [Fact]
    public async Task Submit_ChecksAgainstANodeWhoseHeartbeatIsLate_ButNotOneSilentPastTheGrace()
    {
        // A node's heartbeat held up past its lease (a loaded machine; the embedded database coming back) made every
        // submission meanwhile "no live worker node" (400). Submissions count a node for a minute past its lease.
        var nodes = f.App.Services.GetRequiredService<NodeStore>();
        var db = f.App.Services.GetRequiredService<NpgsqlDataSource>();
        var tag = Guid.NewGuid().ToString("N")[..6];
        var late = "late-" + tag;
        await nodes.RegisterAsync(late, Guid.NewGuid(), new Dictionary<string, string> { ["late"] = tag }, new NodeCapacity(1, 1L << 30, 0),
            ["default"], TimeSpan.FromSeconds(3), CancellationToken.None);
        async Task LastBeatAsync(string ago)
        {
            await using var cmd = db.CreateCommand($"update batchrunner.nodes set heartbeat_at = now() - interval '{ago}' where name = '{late}'");
            await cmd.ExecuteNonQueryAsync();
        }
        var created = new List<string>();
        async Task<HttpStatusCode> SubmitAsync()
        {
            var r = await f.Client.PostAsJsonAsync("/api/v1/jobs", new { image = f.Busybox, command = new[] { "true" }, nodeSelector = new Dictionary<string, string> { ["late"] = tag } });
            if (r.StatusCode == HttpStatusCode.Created)
                created.Add(JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!);
            return r.StatusCode;
        }
        try
        {
            await LastBeatAsync("10 seconds");
            // Dead for the nodes API and the lost-attempt reaper (its 3 s lease is over)...
            var listed = JsonDocument.Parse(await f.Client.GetStringAsync("/api/v1/nodes")).RootElement.EnumerateArray().Select(n => n.GetProperty("name").GetString());
            Assert.DoesNotContain(late, listed);
            // ...but a job only it could run is accepted (once the submission checks' 2 s cache has seen the node), and waits for it.
            await Poll.UntilAsync(SubmitAsync, s => s == HttpStatusCode.Created, TimeSpan.FromSeconds(10), "accepted", 500);

            // Silent for longer than its lease and the grace: refused, naming the selector (once the 2 s cache has passed).
            await LastBeatAsync($"{NodeStore.SubmissionGrace.TotalSeconds + 10} seconds");
            Assert.Equal(HttpStatusCode.BadRequest, await Poll.UntilAsync(SubmitAsync, s => s != HttpStatusCode.Created, TimeSpan.FromSeconds(10), "refused", 500));
        }
        finally
        {
            foreach (var id in created) await f.Api.CancelAsync(id);
            await using var rm = db.CreateCommand($"delete from batchrunner.nodes where name = '{late}'");
            await rm.ExecuteNonQueryAsync();
        }
    }

    [Fact]
    public async Task SameIdempotencyKey_ReturnsTheSameJob_AndADifferentSpecConflicts()
    {
        var key = Guid.NewGuid().ToString();
        var spec = new { image = f.Busybox, command = new[] { "true" } };
        async Task<HttpResponseMessage> Post(object body)
        {
            using var req = new HttpRequestMessage(HttpMethod.Post, "/api/v1/jobs") { Content = JsonContent.Create(body) };
            req.Headers.Add("Idempotency-Key", key);
            return await f.Client.SendAsync(req);
        }
        var first = await Post(spec);
        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        var second = await Post(spec);
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        var id1 = JsonDocument.Parse(await first.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString();
        var id2 = JsonDocument.Parse(await second.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString();
        Assert.Equal(id1, id2);
        var third = await Post(new { image = f.Busybox, command = new[] { "false" } });
        Assert.Equal(HttpStatusCode.Conflict, third.StatusCode);
        await f.Api.WaitForFinalAsync(id1!);
    }

    [Fact]
    public async Task FailedAttempt_IsRetried_WhenItsExitCodeIsListed_AndEveryAttemptIsRecorded()
    {
        // Exits 3 every time: retried once (limit 1), and both attempts recorded. (Nothing carries over between
        // attempts to let a later one succeed: each attempt has a disk of its own, /outputs included.)
        var id = (await f.Api.SubmitAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "echo try; exit 3" },
            retry = new { limit = 1, onExitCodes = new[] { 3 }, backoffSeconds = 0 },
        })).GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("failed", State(done));
        Assert.Equal(2, done.GetProperty("attempt").GetInt32());
        var attempts = done.GetProperty("attempts").EnumerateArray().ToList();
        Assert.Equal(2, attempts.Count);
        Assert.All(attempts, a => Assert.Equal(("failed", "exit_code", 3),
            (a.GetProperty("state").GetString(), a.GetProperty("reason").GetString(), a.GetProperty("exitCode").GetInt32())));
    }

    [Fact]
    public async Task FailedAttempt_IsNotRetried_ByDefault_AndRetriesStopAtTheLimit()
    {
        var once = (await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "exit 4" } })).GetProperty("id").GetString()!;
        var limited = (await f.Api.SubmitAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "exit 4" },
            retry = new { limit = 2, onReasons = new[] { "exit_code" }, backoffSeconds = 0 },
        })).GetProperty("id").GetString()!;
        var a = await f.Api.WaitForFinalAsync(once);
        Assert.Equal(1, a.GetProperty("attempts").GetArrayLength());
        var b = await f.Api.WaitForFinalAsync(limited);
        Assert.Equal("failed", State(b));
        Assert.Equal(3, b.GetProperty("attempts").GetArrayLength());
    }

    [Fact]
    public async Task QueueLimit_RunsOneJobOfTheQueueAtATime()
    {
        var ids = new List<string>();
        for (int i = 0; i < 3; i++)
            ids.Add((await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "sleep", "0.5" }, queue = "limited", resources = new { cpus = 0.1 } }))
                .GetProperty("id").GetString()!);
        var runs = new List<(DateTimeOffset Start, DateTimeOffset End)>();
        foreach (var id in ids)
        {
            var done = await f.Api.WaitForFinalAsync(id);
            Assert.Equal("succeeded", State(done));
            var a = done.GetProperty("attempts")[0];
            runs.Add((a.GetProperty("startedAt").GetDateTimeOffset(), a.GetProperty("finishedAt").GetDateTimeOffset()));
        }
        runs.Sort();
        for (int i = 1; i < runs.Count; i++) Assert.True(runs[i].Start >= runs[i - 1].End, $"overlap: {runs[i - 1]} {runs[i]}");
    }

    [Fact]
    public async Task Nodes_ListsThisNode_WithCapacityAndRunningJobs()
    {
        var id = (await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "sleep", "2" }, resources = new { cpus = 0.5, memory = "64Mi" } }))
            .GetProperty("id").GetString()!;
        await f.Api.WaitForStateAsync(id, s => s == "running", TimeSpan.FromSeconds(30));
        var nodes = JsonDocument.Parse(await f.Client.GetStringAsync("/api/v1/nodes")).RootElement;
        var node = Assert.Single(nodes.EnumerateArray());
        Assert.Equal(2, node.GetProperty("capacity").GetProperty("cpus").GetDouble());
        Assert.Equal("a", node.GetProperty("labels").GetProperty("zone").GetString());
        Assert.True(node.GetProperty("alive").GetBoolean());
        Assert.Contains(id, node.GetProperty("runningJobs").EnumerateArray().Select(j => j.GetString()));
        Assert.True(node.GetProperty("allocated").GetProperty("cpus").GetDouble() >= 0.5);
        await f.Api.WaitForFinalAsync(id);
        Assert.Equal(HttpStatusCode.Unauthorized, (await f.Anonymous.GetAsync("/api/v1/nodes")).StatusCode);
    }
}
