using System.Net;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Cluster;

/// <summary>
/// Several worker processes on one PostgreSQL: resource-aware admission, crash recovery without losing
/// or doubling a job, database restarts and graceful shutdown. Real processes, runc and PostgreSQL.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class ClusterFacts
{
    private static string State(JsonElement j) => j.GetProperty("state").GetString()!;

    private static List<JsonElement> Attempts(JsonElement j) => j.GetProperty("attempts").EnumerateArray().ToList();

    [Fact]
    public async Task LogsAndOutputs_OfAWorkersJob_AreServedThroughTheApiNode()
    {
        await using var c = await TestCluster.StartAsync();
        await c.StartNodeAsync("api", role: "api");
        var w1 = await c.StartNodeAsync("w1");

        // Follow a job while it runs on w1: the API node streams what w1 serves until the job ends.
        var ticking = await c.Api.SubmitIdAsync(new { image = c.Busybox, command = new[] { "sh", "-c", "for i in 1 2 3; do echo tick$i; sleep 0.5; done" } });
        await c.WaitAsync(ticking, j => State(j) is "running" or "succeeded", TimeSpan.FromSeconds(60), "ticking job running");
        Assert.Equal("tick1\ntick2\ntick3\n", await c.Api.Http.GetStringAsync($"/api/v1/jobs/{ticking}/logs?follow=true"));

        // Followed through the API node from its submission on (the API waits until a node takes it), while w1 drops
        // most of it over its cap: head, marker, tail, and how it ended.
        var chatty = await c.Api.SubmitIdAsync(new
        {
            image = c.Busybox,
            command = new[] { "sh", "-c", "echo BEGIN; sleep 0.5; yes 'dropped mostly' | head -c 30000000; echo END; sleep 0.2; echo bye >&2" },
            logs = new { maxBytes = "1Mi" },
        });
        var combined = await c.Api.Http.GetStringAsync($"/api/v1/jobs/{chatty}/logs?stream=combined&follow=true&status=true");
        Assert.StartsWith("BEGIN\n", combined);
        Assert.Matches(@"\[batchrunner: \d+ bytes of stdout dropped here", combined);
        Assert.EndsWith("END\nbye\n[batchrunner: job succeeded, exit code 0: exited with code 0]\n", combined);
        Assert.True((await c.Api.GetJobAsync(chatty)).GetProperty("logsTruncated").GetBoolean());

        var id = await c.Api.SubmitIdAsync(new
        {
            image = c.Busybox,
            command = new[] { "sh", "-c", "echo out-line; echo err-line >&2; echo 42 > /outputs/answer.txt; mkdir /outputs/sub; echo nested > '/outputs/sub/a b.txt'" },
        });
        var done = await c.WaitFinalAsync(id);
        Assert.Equal("succeeded", State(done));
        Assert.Equal("w1", done.GetProperty("node").GetString());

        Assert.Equal("out-line\nerr-line\n", await c.Api.Http.GetStringAsync($"/api/v1/jobs/{id}/logs"));
        Assert.Equal("err-line\n", await c.Api.Http.GetStringAsync($"/api/v1/jobs/{id}/logs?stream=stderr"));
        Assert.Equal("42\n", await c.Api.Http.GetStringAsync($"/api/v1/jobs/{id}/outputs/answer.txt"));
        Assert.Equal("nested\n", await c.Api.Http.GetStringAsync($"/api/v1/jobs/{id}/outputs/sub/a%20b.txt"));
        using (var ranged = new HttpRequestMessage(HttpMethod.Get, $"/api/v1/jobs/{id}/outputs/answer.txt"))
        {
            ranged.Headers.Range = new System.Net.Http.Headers.RangeHeaderValue(1, 1);
            var r = await c.Api.Http.SendAsync(ranged);
            Assert.Equal(HttpStatusCode.PartialContent, r.StatusCode);
            Assert.Equal("2", await r.Content.ReadAsStringAsync());
        }
        // The whole /outputs in one archive, made on w1 and streamed through the API node.
        var listed = BatchRunner.Testing.OutputArchives.Listed(await c.Api.OutputsAsync(id));
        Assert.Equal(2, listed.Count);
        Assert.Equal(listed, BatchRunner.Testing.OutputArchives.ZipEntries(await c.Api.Http.GetByteArrayAsync($"/api/v1/jobs/{id}/outputs.zip")));
        Assert.Equal(listed, BatchRunner.Testing.OutputArchives.TarGzEntries(await c.Api.Http.GetByteArrayAsync($"/api/v1/jobs/{id}/outputs.tar.gz")));
        var missing = await c.Api.Http.GetAsync($"/api/v1/jobs/{id}/outputs/nope.txt");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Contains("nope.txt", await missing.Content.ReadAsStringAsync());

        // The node-to-node endpoint wants the cluster's token, not a user's API key.
        using (var direct = new HttpClient())
        {
            direct.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", TestCluster.ApiKey);
            Assert.Equal(HttpStatusCode.Forbidden, (await direct.GetAsync($"{w1.Url}/internal/v1/jobs/{id}/logs")).StatusCode);
        }
        await AssertNodeSignaturesAreSingleUseAndShortLivedAsync(c, w1, id);

        // With w1 gone its files are out of reach: a clear error naming the node, not an empty log.
        w1.Kill();
        await w1.WaitForExitAsync(TimeSpan.FromSeconds(10));
        var gone = await c.Api.Http.GetAsync($"/api/v1/jobs/{id}/logs");
        Assert.True(gone.StatusCode is HttpStatusCode.BadGateway or HttpStatusCode.ServiceUnavailable, $"{(int)gone.StatusCode}");
        var detail = JsonDocument.Parse(await gone.Content.ReadAsStringAsync()).RootElement.GetProperty("detail").GetString();
        Assert.Contains("node \"w1\"", detail);
    }

    [Fact]
    public async Task InputsFrom_FetchesTheOutputs_FromTheNodeThatRanTheProducer()
    {
        await using var c = await TestCluster.StartAsync();
        await c.StartNodeAsync("a", role: "all", extra: "--BatchRunner:Labels:disk=a");
        await c.StartNodeAsync("b", extra: "--BatchRunner:Labels:disk=b");

        // The producer runs on a, the consumer on b: b fetches the files through a's node endpoint (SHA-256 checked).
        var producer = await c.Api.SubmitIdAsync(new
        {
            image = c.Busybox,
            nodeSelector = new { disk = "a" },
            command = new[] { "sh", "-c", "mkdir /outputs/set; seq 1 1000 > /outputs/set/numbers.txt; echo made-on-a > /outputs/set/origin.txt" },
        });
        var consumer = await c.Api.SubmitIdAsync(new
        {
            image = c.Busybox,
            nodeSelector = new { disk = "b" },
            inputsFrom = new[] { new { job = producer } },
            command = new[] { "sh", "-c", $"cat /inputs/{producer}/set/origin.txt; wc -l < /inputs/{producer}/set/numbers.txt" },
        });

        var done = await c.WaitFinalAsync(consumer);
        Assert.True(State(done) == "succeeded", done.ToString());
        Assert.Equal("a", (await c.Api.GetJobAsync(producer)).GetProperty("node").GetString());
        Assert.Equal("b", done.GetProperty("node").GetString());
        Assert.Equal("made-on-a\n1000\n", await c.Api.Http.GetStringAsync($"/api/v1/jobs/{consumer}/logs?stream=stdout"));
    }

    /// <summary>What someone who captured a node-to-node header can do with it: nothing, once it was used, for
    /// another file, or after its seconds. (Signed here with the cluster's secret, read from its database.)</summary>
    private static async Task AssertNodeSignaturesAreSingleUseAndShortLivedAsync(TestCluster c, NodeProcess worker, string id)
    {
        string secret;
        await using (var db = Npgsql.NpgsqlDataSource.Create(c.Postgres!.ConnectionString))
        await using (var cmd = db.CreateCommand("select value from batchrunner.cluster_settings where name = 'node-token'"))
            secret = (string)(await cmd.ExecuteScalarAsync())!;
        var path = $"/internal/v1/jobs/{id}/logs";
        using var direct = new HttpClient { BaseAddress = new Uri(worker.Url) };
        async Task<HttpResponseMessage> GetAsync(string target, string header)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, target);
            request.Headers.TryAddWithoutValidation(BatchRunner.Server.Nodes.ClusterToken.Header, header);
            return await direct.SendAsync(request);
        }

        var header = new BatchRunner.Server.Nodes.RequestSignature(secret).Sign("GET", path);
        var first = await GetAsync(path, header);
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal("out-line\nerr-line\n", await first.Content.ReadAsStringAsync());
        var again = await GetAsync(path, header);
        Assert.Equal(HttpStatusCode.Forbidden, again.StatusCode);
        Assert.Contains("used before", await again.Content.ReadAsStringAsync());

        var forLogs = new BatchRunner.Server.Nodes.RequestSignature(secret).Sign("GET", path);
        Assert.Equal(HttpStatusCode.Forbidden, (await GetAsync($"/internal/v1/jobs/{id}/outputs/answer.txt", forLogs)).StatusCode);

        var old = new BatchRunner.Server.Nodes.RequestSignature(secret, new PastTime(TimeSpan.FromMinutes(2))).Sign("GET", path);
        var expired = await GetAsync(path, old);
        Assert.Equal(HttpStatusCode.Forbidden, expired.StatusCode);
        Assert.Contains("older", await expired.Content.ReadAsStringAsync());
        // The secret itself, as the header used to carry it, opens nothing either.
        Assert.Equal(HttpStatusCode.Forbidden, (await GetAsync(path, secret)).StatusCode);
    }

    private sealed class PastTime(TimeSpan ago) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => DateTimeOffset.UtcNow - ago;
    }

    [Fact]
    public async Task TwoOneCpuWorkers_RunFourOneCpuJobs_NeverTwoAtOnceOnANode()
    {
        await using var c = await TestCluster.StartAsync();
        await c.StartNodeAsync("api", role: "api");
        await c.StartNodeAsync("w1", cpus: 1, workers: 2);
        await c.StartNodeAsync("w2", cpus: 1, workers: 2);

        var ids = new List<string>();
        for (int i = 0; i < 4; i++)
            ids.Add(await c.Api.SubmitIdAsync(new { image = c.Busybox, command = new[] { "sleep", "1" }, resources = new { cpus = 1, memory = "32Mi" } }));

        var runs = new List<(string Node, DateTimeOffset Start, DateTimeOffset End)>();
        foreach (var id in ids)
        {
            var done = await c.WaitFinalAsync(id);
            Assert.Equal("succeeded", State(done));
            var a = Assert.Single(Attempts(done));
            runs.Add((a.GetProperty("node").GetString()!, a.GetProperty("startedAt").GetDateTimeOffset(), a.GetProperty("finishedAt").GetDateTimeOffset()));
        }
        // Within one node, attempts never overlap: 1 CPU of capacity admits one 1-CPU job at a time.
        foreach (var node in runs.GroupBy(r => r.Node))
        {
            var ordered = node.OrderBy(r => r.Start).ToList();
            for (int i = 1; i < ordered.Count; i++)
                Assert.True(ordered[i].Start >= ordered[i - 1].End, $"{node.Key} ran two jobs at once: {ordered[i - 1]} and {ordered[i]}");
        }
        Assert.Equal(2, runs.Select(r => r.Node).Distinct().Count());

        var nodes = JsonDocument.Parse(await c.Api.Http.GetStringAsync("/api/v1/nodes")).RootElement;
        Assert.Equal(["w1", "w2"], nodes.EnumerateArray().Select(n => n.GetProperty("name").GetString()).Order());
        Assert.All(nodes.EnumerateArray(), n => Assert.Equal(1, n.GetProperty("capacity").GetProperty("cpus").GetDouble()));
    }

    [Fact]
    public async Task KilledWorker_JobIsRetriedOnAnother_AndNothingOfItRemainsAfterRestart()
    {
        await using var c = await TestCluster.StartAsync();
        await c.StartNodeAsync("api", role: "api");
        var w1 = await c.StartNodeAsync("w1");
        var id = await c.Api.SubmitIdAsync(new { image = c.Busybox, command = new[] { "/bin/sh", "-c", "sleep 8; echo done" } });
        await c.WaitAsync(id, j => State(j) == "running", TimeSpan.FromSeconds(30), "running on w1");
        var containerDir = Path.Combine(w1.DataDir, "run");
        // The attempt's run directory (beside it may wait disks the worker made ahead: they carry no job id).
        var firstContainer = Directory.GetDirectories(containerDir).Select(Path.GetFileName).Single(n => n!.Contains(id.Replace("-", ""), StringComparison.Ordinal))!;
        // The attempt's disk: an image in its run directory, on a loop device, mounted.
        var image = Path.Combine(containerDir, firstContainer, "disk.img");
        Assert.True(File.Exists(image));
        Assert.Contains(image, LoopBackingFiles());
        await c.StartNodeAsync("w2");
        Assert.Equal("running", State(await c.Api.GetJobAsync(id)));

        w1.Kill();
        await w1.WaitForExitAsync(TimeSpan.FromSeconds(10));

        var done = await c.WaitFinalAsync(id, TimeSpan.FromSeconds(60));
        Assert.Equal("succeeded", State(done));
        var attempts = Attempts(done);
        Assert.Equal(2, attempts.Count);
        Assert.Equal("w1", attempts[0].GetProperty("node").GetString());
        Assert.Equal("node_lost", attempts[0].GetProperty("reason").GetString());
        Assert.Equal("w2", attempts[1].GetProperty("node").GetString());
        Assert.Equal("succeeded", attempts[1].GetProperty("state").GetString());
        // The first attempt's container was stopped by the watchdog when w1 died: it never ran beside the retry.
        Assert.True(attempts[0].GetProperty("finishedAt").GetDateTimeOffset() <= attempts[1].GetProperty("startedAt").GetDateTimeOffset());
        var state = Path.Combine(w1.DataDir, "state", "runc");
        var running = await ExternalCommand.RunAsync("runc", ["--root", state, "list", "--format", "json"]);
        Assert.DoesNotContain("\"running\"", running);

        // Restart w1: its janitor removes the first attempt's container, mount and cgroup.
        await w1.StartAsync();
        Assert.DoesNotContain(firstContainer, await ExternalCommand.RunAsync("runc", ["--root", state, "list", "-q"]));
        Assert.DoesNotContain(File.ReadAllLines("/proc/self/mountinfo"), l => l.Contains(firstContainer));
        foreach (var controller in new[] { "memory", "cpu", "pids", "cpuacct", "devices", "freezer" })
            Assert.False(Directory.Exists($"/sys/fs/cgroup/{controller}/batchrunner/{firstContainer}"), $"{controller} cgroup remains");
        Assert.False(Directory.Exists(Path.Combine(containerDir, firstContainer)));
        // ... and its disk: unmounted (above), its loop device unbound, its image deleted with the run directory.
        await Poll.UntilAsync(() => Task.FromResult(LoopBackingFiles()), files => !files.Any(f => f.StartsWith(containerDir + "/", StringComparison.Ordinal)),
            TimeSpan.FromSeconds(10), "the killed attempt's loop device to be unbound", 100);
    }

    [Fact]
    public async Task WorkerKilledBetweenFetchAndBegin_TheJobRunsAfterALease_NotAfterHangfiresInvisibilityTimeout()
    {
        // What a worker killed just after its fetch leaves: the message marked fetched, no attempt begun. (Found killing a
        // worker three times under a stream of jobs: one job stayed queued for Hangfire's five minutes; a kill lands in that
        // window rarely, so the test makes the window's state itself.)
        await using var c = await TestCluster.StartAsync();
        await c.StartNodeAsync("api", role: "api");
        var w1 = await c.StartNodeAsync("w1", extra: "--BatchRunner:ReconcileSeconds=1");
        w1.Kill();
        await w1.WaitForExitAsync(TimeSpan.FromSeconds(10));
        // Within its lease the killed worker still counts as live, so the API accepts the job; nothing fetches it.
        var id = await c.Api.SubmitIdAsync(new { image = c.Busybox, command = new[] { "echo", "ran" } });
        await using (var db = Npgsql.NpgsqlDataSource.Create(c.Postgres!.ConnectionString))
        await using (var fetch = db.CreateCommand(
            "update hangfire.jobqueue q set fetchedat = now() from batchrunner.jobs j where j.id = $1 and q.jobid = j.hangfire_job_id::bigint"))
        {
            fetch.Parameters.Add(new Npgsql.NpgsqlParameter { Value = Guid.Parse(id) });
            Assert.Equal(1, await fetch.ExecuteNonQueryAsync());
        }

        await w1.StartAsync();
        var done = await c.WaitFinalAsync(id, TimeSpan.FromSeconds(60));
        Assert.Equal("succeeded", State(done));
        Assert.Single(Attempts(done));
        Assert.Contains("was fetched by a worker that never began it", w1.LogAbout(id));
    }

    /// <summary>The files loop devices are bound to now (a deleted one without its " (deleted)" suffix).</summary>
    private static List<string> LoopBackingFiles() =>
        Directory.EnumerateDirectories("/sys/block", "loop*")
            .Select(b => Path.Combine(b, "loop", "backing_file"))
            .Select(f => { try { return File.ReadAllText(f).TrimEnd('\n').Replace(" (deleted)", ""); } catch (IOException) { return null; } })
            .OfType<string>().ToList();

    [Fact]
    public async Task PostgresRestart_UnderLoad_LosesNoJob_AndTheApiAnswers503Meanwhile()
    {
        await using var c = await TestCluster.StartAsync();
        var n1 = await c.StartNodeAsync("n1", role: "all", cpus: 2, workers: 4);
        var ids = new List<string>();
        for (int i = 0; i < 20; i++)
            ids.Add(await c.Api.SubmitIdAsync(new
            {
                image = c.Busybox,
                command = new[] { "/bin/sh", "-c", $"sleep 0.5; echo {i} > /outputs/n.txt" },
                resources = new { cpus = 0.25, memory = "16Mi" },
            }));
        await c.WaitAsync(ids[0], j => State(j) is "running" or "succeeded", TimeSpan.FromSeconds(30), "first job started");

        await c.Postgres!.StopAsync();
        var during = await c.Api.Http.GetAsync("/api/v1/jobs");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, during.StatusCode);
        Assert.True(during.Headers.RetryAfter is not null, "503 carries Retry-After");
        await c.Postgres!.RestartAsync();

        for (int i = 0; i < ids.Count; i++)
        {
            var done = await c.WaitFinalAsync(ids[i], TimeSpan.FromSeconds(120));
            // Once failed in a full clean-clone run (2026-12-02, not again in 6 runs alone): say why, should it again.
            Assert.True(State(done) == "succeeded", $"job {i} ended {State(done)}: {done}\nthe node's log about it:\n{n1.LogAbout(ids[i])}");
            Assert.Equal($"{i}\n", await c.Api.Http.GetStringAsync($"/api/v1/jobs/{ids[i]}/outputs/n.txt"));
        }
    }

    [Fact]
    public async Task FencedNode_WhileTheDatabaseAnswers_BeginsNoAttempt_AndRunsTheJobsOnceAHeartbeatSucceeds()
    {
        // Found by restarting PostgreSQL under load: a heartbeat failed after the restart (a pooled connection the restart
        // had ended), the node fenced itself while its workers could fetch again, and it began an attempt for every job it
        // fetched, stopped it at once as fenced and fetched the job again: jobs ended "node_lost: the job's node was lost
        // 4 times" in a tenth of a second, never started. Here only the heartbeat fails (a trigger refuses it), for as long
        // as the test likes.
        await using var c = await TestCluster.StartAsync();
        var n1 = await c.StartNodeAsync("n1", role: "all", cpus: 2, workers: 4);
        await using var db = Npgsql.NpgsqlDataSource.Create(c.Postgres!.ConnectionString);
        await using (var refuse = db.CreateCommand("""
            create function test_refuses_heartbeat() returns trigger language plpgsql as
              $$ begin raise exception 'heartbeat refused by the test'; end $$;
            create trigger refuse_heartbeat before update of heartbeat_at on batchrunner.nodes
              for each row execute function test_refuses_heartbeat();
            """))
            await refuse.ExecuteNonQueryAsync();
        await Poll.UntilAsync(() => Task.FromResult(n1.LogAbout("fencing")), l => l.Length > 0, TimeSpan.FromSeconds(30), "the node to fence itself", 100);

        var ids = new List<string>();
        for (int i = 0; i < 4; i++)
            ids.Add(await c.Api.SubmitIdAsync(new { image = c.Busybox, command = new[] { "/bin/sh", "-c", $"echo {i} > /outputs/n.txt" } }));
        // Several deliveries' time (each waits a heartbeat, a second here): the jobs wait, no attempt begun.
        await Task.Delay(TimeSpan.FromSeconds(3));
        foreach (var id in ids)
        {
            var job = await c.Api.GetJobAsync(id);
            Assert.True(State(job) == "queued" && Attempts(job).Count == 0, $"while the node is fenced: {job}");
        }
        Assert.Contains("which is fenced", n1.LogAbout(ids[0]));

        await using (var allow = db.CreateCommand("drop trigger refuse_heartbeat on batchrunner.nodes; drop function test_refuses_heartbeat()"))
            await allow.ExecuteNonQueryAsync();
        for (int i = 0; i < ids.Count; i++)
        {
            var done = await c.WaitFinalAsync(ids[i], TimeSpan.FromSeconds(60));
            Assert.True(State(done) == "succeeded", $"job {i} ended {State(done)}: {done}\nthe node's log about it:\n{n1.LogAbout(ids[i])}");
            Assert.Single(Attempts(done));
            Assert.Equal($"{i}\n", await c.Api.Http.GetStringAsync($"/api/v1/jobs/{ids[i]}/outputs/n.txt"));
        }
        Assert.NotEmpty(n1.LogAbout("no longer fenced"));
    }

    [Fact]
    public async Task Sigterm_LetsARunningJobFinishWithinTheGracePeriod()
    {
        await using var c = await TestCluster.StartAsync();
        await c.StartNodeAsync("api", role: "api");
        var w1 = await c.StartNodeAsync("w1", graceSeconds: 20);
        var id = await c.Api.SubmitIdAsync(new { image = c.Busybox, command = new[] { "/bin/sh", "-c", "sleep 3; echo finished" } });
        await c.WaitAsync(id, j => State(j) == "running", TimeSpan.FromSeconds(30), "running");

        w1.Terminate();
        await w1.WaitForExitAsync(TimeSpan.FromSeconds(30));

        var done = await c.Api.GetJobAsync(id);
        Assert.Equal("succeeded", State(done));
        Assert.Single(Attempts(done));
    }

    [Fact]
    public async Task Sigterm_RequeuesAJobThatOutlivesTheGracePeriod_AndItCompletesLater()
    {
        await using var c = await TestCluster.StartAsync();
        await c.StartNodeAsync("api", role: "api");
        var w1 = await c.StartNodeAsync("w1", graceSeconds: 1);
        var id = await c.Api.SubmitIdAsync(new { image = c.Busybox, command = new[] { "sleep", "4" } });
        await c.WaitAsync(id, j => State(j) == "running", TimeSpan.FromSeconds(30), "running");

        w1.Terminate();
        await w1.WaitForExitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal("queued", State(await c.Api.GetJobAsync(id)));
        Assert.Empty(await ExternalCommand.RunAsync("runc", ["--root", Path.Combine(w1.DataDir, "state", "runc"), "list", "-q"]));

        await c.StartNodeAsync("w2");
        var done = await c.WaitFinalAsync(id);
        Assert.Equal("succeeded", State(done));
        var attempts = Attempts(done);
        Assert.Equal(2, attempts.Count);
        Assert.Equal("requeued", attempts[0].GetProperty("reason").GetString());
        Assert.Equal("w2", attempts[1].GetProperty("node").GetString());
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ClusterCollection
{
    public const string Name = "cluster";
}
