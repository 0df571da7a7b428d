using System.Net;
using System.Text.Json;
using BatchRunner.Testing;
using static BatchRunner.Testing.BatchRunnerClient;

namespace BatchRunner.Server.Tests.Workflows;

/// <summary>Job arrays through the HTTP API, on the shared server (real runc, PostgreSQL, registry).</summary>
[Collection(ServerCollection.Name)]
public sealed class ArrayFacts(ServerFixture f)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(90);

    private object Array(string script, int size, int parallelism, object? retry = null) => new
    {
        name = "array-" + Guid.NewGuid().ToString("N")[..6],
        image = f.Busybox,
        command = new[] { "/bin/sh", "-c", script },
        resources = new { cpus = 0.1, memory = "16Mi" },
        array = new { size, parallelism },
        retry,
    };

    private static IReadOnlyDictionary<string, int> Counts(JsonElement parent) =>
        parent.GetProperty("array").GetProperty("counts").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32());

    [Fact]
    public async Task Array_RunsAtMostParallelismChildrenAtOnce_AndGivesEachItsIndex()
    {
        var submitted = await f.Api.SubmitAsync(Array(
            "echo $BATCHRUNNER_ARRAY_INDEX > /outputs/index.txt; echo $BATCHRUNNER_ARRAY_SIZE > /outputs/size.txt; sleep 0.6", size: 10, parallelism: 3));
        var id = Id(submitted);
        Assert.Equal(10, submitted.GetProperty("array").GetProperty("size").GetInt32());
        Assert.Equal(10, Counts(submitted)["queued"]);

        // Sampled from the API while it runs: the parent's own counts, and the children listed as running or starting.
        var most = 0;
        var sawParentRunning = false;
        var done = await Poll.UntilAsync(async () =>
        {
            var parent = await f.Api.GetJobAsync(id);
            var counts = Counts(parent);
            var active = counts["starting"] + counts["running"];
            Assert.True(active <= 3, $"{active} children starting or running at once: {parent}");
            var listed = (await f.Api.ChildrenAsync(id, "running")).Count + (await f.Api.ChildrenAsync(id, "starting")).Count;
            Assert.True(listed <= 3, $"{listed} children listed as starting or running");
            most = Math.Max(most, active);
            sawParentRunning |= counts["running"] > 0 && State(parent) == "running";
            return parent;
        }, p => State(p) is "succeeded" or "failed" or "cancelled", Deadline, "array ends", 50);

        Assert.Equal("succeeded", State(done));
        Assert.Equal("10 children succeeded", done.GetProperty("message").GetString());
        Assert.Equal(10, Counts(done)["succeeded"]);
        Assert.True(most >= 2, $"at most {most} children ran at once: parallelism 3 was not used");
        Assert.True(sawParentRunning, "the parent was never running while a child ran");

        var children = await f.Api.ChildrenAsync(id);
        Assert.Equal(Enumerable.Range(0, 10), children.Select(c => c.GetProperty("arrayIndex").GetInt32()));
        Assert.All(children, c => Assert.Equal(id, c.GetProperty("parentId").GetString()));
        var indexes = new HashSet<string>();
        foreach (var i in Enumerable.Range(0, 10))
        {
            // A child by PARENT:INDEX, and its outputs through the same path.
            var child = await f.Api.GetJobAsync($"{id}:{i}");
            Assert.Equal(i, child.GetProperty("arrayIndex").GetInt32());
            Assert.Equal($"{i}\n", await f.Api.OutputAsync($"{id}:{i}", "index.txt"));
            Assert.Equal("10\n", await f.Api.OutputAsync(Id(child), "size.txt"));
            indexes.Add(await f.Api.OutputAsync(Id(child), "index.txt"));
        }
        Assert.Equal(10, indexes.Count);
        // Children are listed under their parent, not among the jobs.
        Assert.DoesNotContain(await f.Api.ListAsync("limit=200"), j => j.TryGetProperty("parentId", out var p) && p.GetString() == id);
    }

    [Fact]
    public async Task Children_ArePagedByIndex_AndFilteredByState()
    {
        var id = Id(await f.Api.SubmitAsync(Array("exit $((BATCHRUNNER_ARRAY_INDEX % 2))", size: 5, parallelism: 5)));
        var done = await f.Api.WaitForFinalAsync(id, Deadline);

        Assert.Equal("failed", State(done));
        Assert.Equal("children_failed", done.GetProperty("reason").GetString());
        Assert.Equal("2 of 5 children did not succeed (2 failed, 0 cancelled)", done.GetProperty("message").GetString());
        Assert.Equal([1, 3], (await f.Api.ChildrenAsync(id, "failed")).Select(c => c.GetProperty("arrayIndex").GetInt32()));
        var page = JsonDocument.Parse(await f.Client.GetStringAsync($"/api/v1/jobs/{id}/children?limit=2")).RootElement;
        Assert.Equal([0, 1], page.GetProperty("items").EnumerateArray().Select(c => c.GetProperty("arrayIndex").GetInt32()));
        var next = JsonDocument.Parse(await f.Client.GetStringAsync($"/api/v1/jobs/{id}/children?limit=2&cursor={page.GetProperty("nextCursor").GetString()}")).RootElement;
        Assert.Equal([2, 3], next.GetProperty("items").EnumerateArray().Select(c => c.GetProperty("arrayIndex").GetInt32()));

        Assert.Equal(HttpStatusCode.BadRequest, (await f.Client.GetAsync($"/api/v1/jobs/{id}/children?cursor=nope")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.GetAsync($"/api/v1/jobs/{id}:5")).StatusCode);
        var plain = Id(await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "true" } }));
        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.GetAsync($"/api/v1/jobs/{plain}/children")).StatusCode);
    }

    [Fact]
    public async Task Parent_Succeeds_WhenEveryChildSucceededOnItsRetry()
    {
        // Each child fails its first attempt (exit 3) and retries by its own policy.
        var id = Id(await f.Api.SubmitAsync(Array("[ \"$BATCHRUNNER_ATTEMPT\" = 1 ] && exit 3; exit 0", size: 2, parallelism: 2,
            retry: new { limit = 1, onExitCodes = new[] { 3 }, backoffSeconds = 1 })));

        var done = await f.Api.WaitForFinalAsync(id, Deadline);

        Assert.Equal("succeeded", State(done));
        Assert.Equal(2, Counts(done)["succeeded"]);
        foreach (var child in await f.Api.ChildrenAsync(id))
        {
            var full = await f.Api.GetJobAsync(Id(child));
            Assert.Equal(2, full.GetProperty("attempt").GetInt32());
            Assert.Equal(["failed", "succeeded"], full.GetProperty("attempts").EnumerateArray().Select(a => a.GetProperty("state").GetString()));
        }
    }

    [Fact]
    public async Task DeletingTheParent_DeletesEveryChild_AndIsRefusedWhileOneRuns()
    {
        var id = Id(await f.Api.SubmitAsync(Array("echo $BATCHRUNNER_ARRAY_INDEX > /outputs/i.txt; sleep 1", size: 3, parallelism: 3)));
        var running = await f.Api.WaitAsync(id, p => Counts(p)["running"] >= 1, Deadline, "a child running");
        var children = await f.Api.ChildrenAsync(id);
        var childIds = children.Select(Id).ToList();

        // Not while a child runs; never a child alone (it is part of the array).
        var early = await f.Client.DeleteAsync($"/api/v1/jobs/{id}");
        Assert.Equal(HttpStatusCode.Conflict, early.StatusCode);
        Assert.Equal("succeeded", State(await f.Api.WaitForFinalAsync(id, Deadline)));
        var child = await f.Client.DeleteAsync($"/api/v1/jobs/{id}:1");
        Assert.Equal(HttpStatusCode.Conflict, child.StatusCode);
        Assert.Contains("delete the array", await child.Content.ReadAsStringAsync());

        Assert.Equal(HttpStatusCode.NoContent, (await f.Client.DeleteAsync($"/api/v1/jobs/{id}")).StatusCode);
        foreach (var path in new[] { $"/api/v1/jobs/{id}", $"/api/v1/jobs/{id}/children", $"/api/v1/jobs/{id}:0" }.Concat(childIds.Select(c => $"/api/v1/jobs/{c}")))
            Assert.Equal(HttpStatusCode.NotFound, (await f.Client.GetAsync(path)).StatusCode);
        // Each child's files went with it (its outputs were on this node).
        foreach (var c in childIds)
            await Poll.UntilAsync(() => !Directory.Exists(Path.Combine(f.DataDir, "jobs", Guid.Parse(c).ToString("N"))), Deadline, $"child {c}'s files removed");
    }

    [Fact]
    public async Task CancellingTheParent_CancelsEveryChildNotEnded_AndEndsItCancelled()
    {
        var id = Id(await f.Api.SubmitAsync(Array("sleep 60", size: 5, parallelism: 2)));
        await f.Api.WaitAsync(id, p => Counts(p)["running"] == 2, Deadline, "two children running");

        var cancel = await f.Api.CancelAsync(id);
        Assert.Equal(HttpStatusCode.Accepted, cancel.StatusCode);
        var done = await f.Api.WaitForFinalAsync(id, TimeSpan.FromSeconds(30));

        Assert.Equal("cancelled", State(done));
        Assert.Equal("cancelled", done.GetProperty("reason").GetString());
        Assert.Equal(5, Counts(done)["cancelled"]);
        var children = await f.Api.ChildrenAsync(id);
        Assert.All(children, c => Assert.Equal("cancelled", State(c)));
        // The three that never started were cancelled with their array; the two that ran were killed.
        Assert.Equal(3, children.Count(c => c.GetProperty("message").GetString() == $"cancelled with its array {id}"));
        Assert.Equal(HttpStatusCode.Conflict, (await f.Api.CancelAsync(id)).StatusCode);
    }

    [Theory]
    [InlineData("{\"size\":0}", "array.size")]
    [InlineData("{\"size\":10001}", "array.size")]
    [InlineData("{\"size\":3,\"parallelism\":0}", "array.parallelism")]
    [InlineData("{\"parallelism\":2}", "array.size")]
    public async Task Submit_RefusesABadArray_NamingTheField(string array, string field)
    {
        var body = $"{{\"image\":\"{f.Busybox}\",\"array\":{array}}}";
        var response = await f.Client.PostAsync("/api/v1/jobs", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), problem.ToString());
    }
}
