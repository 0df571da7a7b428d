using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Runtime;
using BatchRunner.Server.Storage;
using BatchRunner.Server.Storage.Embedded;
using BatchRunner.Server.Tests.Cluster;
using BatchRunner.Testing;
using Npgsql;
using Xunit.Abstractions;

namespace BatchRunner.Server.Tests.Embedded;

/// <summary>
/// Issue 16: the embedded PostgreSQL heals itself. A real BatchRunner process on its own embedded cluster;
/// the postmaster is killed with SIGKILL, as the OOM killer would. Figures go to the test output.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class EmbeddedPostgresRecoveryFacts(EmbeddedNodeFixture fx, ITestOutputHelper output) : IClassFixture<EmbeddedNodeFixture>
{
    private static readonly TimeSpan ApiBackWithin = TimeSpan.FromSeconds(15);

    private static string State(JsonElement j) => j.GetProperty("state").GetString()!;

    private static List<JsonElement> Attempts(JsonElement j) => j.GetProperty("attempts").EnumerateArray().ToList();

    /// <summary>
    /// On a running database, starts a job that runs until the test creates /outputs/go, then writes
    /// /outputs/ended and exits 0; returns its id once it runs, and the restarts so far.
    /// </summary>
    private async Task<(string Id, int RestartsBefore)> StartWaitingJobAsync(string name)
    {
        var before = Restarts(await fx.WaitHealthyAsync());
        var id = await fx.Cluster.Api.SubmitIdAsync(new
        {
            name,
            image = fx.Cluster.Busybox,
            command = new[] { "/bin/sh", "-c", "cat /proc/self/oom_score_adj > /outputs/oom; while [ ! -e /outputs/go ]; do sleep 0.05; done; echo done; touch /outputs/ended" },
            resources = new { cpus = 0.25, memory = "32Mi" },
        });
        await fx.Cluster.WaitAsync(id, j => State(j) == "running", TimeSpan.FromSeconds(60), "running");
        return (id, before);
    }

    private static int Restarts(JsonElement embedded) => embedded.GetProperty("restarts").GetInt32();

    [Fact]
    public async Task KilledPostmaster_MidJob_ApiIsBackWithin15s_AndTheJobSucceedsWithOneAttempt()
    {
        var c = fx.Cluster;
        var (id, before) = await StartWaitingJobAsync("mid-job");
        var outputs = fx.OutputsOf(id);

        var killed = fx.KillPostmaster();
        var since = Stopwatch.StartNew();
        // The container ends right away, while the database is still down: its result must wait for it.
        await File.WriteAllTextAsync(Path.Combine(outputs, "go"), "");
        var ended = Task.Run(async () =>
        {
            await Poll.UntilAsync(() => EmbeddedNodeFixture.WroteOutput(outputs, fx.JobDirOf(id), "ended"), TimeSpan.FromSeconds(10), "the job's container to end", 5);
            return since.Elapsed;
        });
        var back = await fx.WaitApiBackAsync(killed, since, ApiBackWithin);
        output.WriteLine($"kill -9 of the postmaster (pid {killed}): API answers 200 again after {back.TotalMilliseconds:0} ms; " +
                         $"the job's container ended {(await ended).TotalMilliseconds:0} ms after the kill");
        Assert.True(await ended < back, $"the container ended ({(await ended).TotalMilliseconds:0} ms) before the database was back ({back.TotalMilliseconds:0} ms)");
        Assert.True(back <= ApiBackWithin, $"API back after {back.TotalSeconds:0.0}s");

        // Recorded by the process that watched the container, once the database was back: one attempt, succeeded.
        var done = await c.WaitFinalAsync(id, TimeSpan.FromSeconds(60));
        Assert.Equal("succeeded", State(done));
        var attempt = Assert.Single(Attempts(done));
        Assert.Equal("succeeded", attempt.GetProperty("state").GetString());
        Assert.Equal("solo", attempt.GetProperty("node").GetString());
        Assert.Equal("done\n", await c.Api.Http.GetStringAsync($"/api/v1/jobs/{id}/logs"));

        // The restart is visible: its cause in /healthz, the counter in /metrics.
        var health = await fx.EmbeddedHealthAsync();
        Assert.Equal("running", health.GetProperty("state").GetString());
        Assert.Equal(before + 1, Restarts(health));
        Assert.Equal($"postmaster (pid {killed}) killed by signal 9 (SIGKILL)", health.GetProperty("lastRestartCause").GetString());
        Assert.Equal(fx.PostmasterPid(), health.GetProperty("pid").GetInt32());
        var metrics = await c.Api.Http.GetStringAsync("/metrics");
        Assert.Contains($"batchrunner_embedded_postgres_restarts_total {before + 1}\n", metrics);
        Assert.Contains("batchrunner_embedded_postgres_up 1\n", metrics);

        // The OOM killer's order: the job first, then BatchRunner, the database last.
        var jobOom = int.Parse((await File.ReadAllTextAsync(Path.Combine(fx.JobDirOf(id), "outputs", "oom"))).Trim());
        var serverOom = OomScore.Read(fx.Node.Pid)!.Value;
        var postgresOom = OomScore.Read(fx.PostmasterPid())!.Value;
        output.WriteLine($"oom_score_adj: job {jobOom}, BatchRunner {serverOom}, postmaster {postgresOom} (CAP_SYS_RESOURCE: {OomScore.CanLower()})");
        Assert.Equal(ContainerSpec.DefaultOomScoreAdj, jobOom);
        Assert.True(serverOom < jobOom && postgresOom <= serverOom);
        if (OomScore.CanLower())
        {
            Assert.Equal(Hosting.OomScores.Server, serverOom);
            Assert.Equal(BatchRunner.Server.Storage.EmbeddedPostgres.OomScoreAdj, postgresOom);
        }
    }

    [Fact]
    public async Task CrashesInARow_AreSurvived_AndARunningJobIsNeitherFencedNorRunTwice()
    {
        var c = fx.Cluster;
        var (id, before) = await StartWaitingJobAsync("crashes-in-a-row");

        // Every replacement is killed too, as soon as it appears (during its own WAL replay), for three seconds and
        // at least one replacement: an outage of more than two heartbeats, which would have fenced the node. (The
        // supervisor's back-off may be some steps up after this class's earlier kills: the first replacement can take
        // longer than three seconds to appear.)
        var killed = new List<int> { fx.KillPostmaster() };
        var since = Stopwatch.StartNew();
        while ((since.Elapsed < TimeSpan.FromSeconds(3) || killed.Count < 2) && since.Elapsed < TimeSpan.FromSeconds(40))
        {
            var pid = fx.PostmasterPid();
            if (pid != 0 && !killed.Contains(pid) && PostgresProcesses.RunsIn(pid, fx.PgData) && HostProcesses.Signal(pid, HostProcesses.SIGKILL))
                killed.Add(pid);
            await Task.Delay(10);
        }
        var killing = since.Elapsed;
        var back = await fx.WaitApiBackAsync(killed[^1], since, TimeSpan.FromSeconds(60));
        output.WriteLine($"{killed.Count} postmasters killed in a row over {killing.TotalSeconds:0.0} s: API back {back.TotalMilliseconds:0} ms after the first kill");
        Assert.True(killed.Count >= 2, $"killed {killed.Count}");

        await File.WriteAllTextAsync(Path.Combine(fx.OutputsOf(id), "go"), "");
        var done = await c.WaitFinalAsync(id, TimeSpan.FromSeconds(60));
        Assert.Equal("succeeded", State(done));
        Assert.Single(Attempts(done));

        var health = await fx.EmbeddedHealthAsync();
        Assert.True(Restarts(health) - before >= killed.Count, $"restarts {Restarts(health) - before} for {killed.Count} postmasters killed");
        var after = await c.Api.SubmitIdAsync(new { image = c.Busybox, command = new[] { "true" }, resources = new { cpus = 0.25, memory = "16Mi" } });
        Assert.Equal("succeeded", State(await c.WaitFinalAsync(after, TimeSpan.FromSeconds(60))));
    }

    [Fact]
    public async Task KilledPostmaster_DuringABurstOf50Submissions_Every201Succeeds_AndEvery503LeftNothing()
    {
        var c = fx.Cluster;
        await fx.WaitHealthyAsync();
        // A burst whose kill landed between submissions (the database back before the next one) refused none: then the
        // property is not exercised, and another burst is sent, three at most.
        ConcurrentDictionary<string, HttpResponseMessage> answers = null!;
        Dictionary<HttpStatusCode, List<string>> byStatus = null!;
        for (var burst = 0; burst < 3; burst++)
        {
            var tag = Guid.NewGuid().ToString("N")[..8];
            answers = new ConcurrentDictionary<string, HttpResponseMessage>();
            var requests = new List<Task>();
            var killed = 0;
            for (int i = 0; i < 50; i++)
            {
                var name = $"burst-{tag}-{i}";
                requests.Add(Task.Run(async () => answers[name] = await c.Api.PostJobAsync(
                    new { name, image = c.Busybox, command = new[] { "true" }, resources = new { cpus = 0.1, memory = "16Mi" } })));
                if (i == 10) killed = fx.KillPostmaster();
                await Task.Delay(40);
            }
            await Task.WhenAll(requests);
            await fx.WaitApiBackAsync(killed, Stopwatch.StartNew(), ApiBackWithin);

            byStatus = answers.GroupBy(a => a.Value.StatusCode).ToDictionary(g => g.Key, g => g.Select(a => a.Key).ToList());
            output.WriteLine(string.Join(", ", byStatus.Select(s => $"{(int)s.Key}: {s.Value.Count}")));
            // Anything else is shown with its body: a 400 was seen in a full run, without it.
            var unexpected = new List<string>();
            foreach (var r in answers.Values.Where(r => r.StatusCode is not (HttpStatusCode.Created or HttpStatusCode.ServiceUnavailable)))
                unexpected.Add($"{(int)r.StatusCode}: {await r.Content.ReadAsStringAsync()}");
            Assert.True(unexpected.Count == 0, string.Join("\n", unexpected));
            if (byStatus.ContainsKey(HttpStatusCode.ServiceUnavailable)) break;
        }
        var accepted = byStatus.GetValueOrDefault(HttpStatusCode.Created) ?? [];
        var refused = byStatus.GetValueOrDefault(HttpStatusCode.ServiceUnavailable) ?? [];
        Assert.NotEmpty(refused); // the kill landed in the middle of a burst
        Assert.NotEmpty(accepted);
        foreach (var name in refused)
        {
            var r = answers[name];
            Assert.NotNull(r.Headers.RetryAfter);
            Assert.Equal("application/problem+json", r.Content.Headers.ContentType?.MediaType);
        }

        foreach (var name in accepted)
        {
            var id = JsonDocument.Parse(await answers[name].Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!;
            var done = await c.WaitFinalAsync(id, TimeSpan.FromSeconds(90));
            Assert.Equal("succeeded", State(done));
            Assert.Single(Attempts(done));
        }
        // Nothing of a refused submission exists: no job by its name, now or later (a job row without a
        // Hangfire message would be enqueued by a worker after 30 s, so there must be no row at all).
        var listed = JsonDocument.Parse(await c.Api.Http.GetStringAsync("/api/v1/jobs?limit=1000")).RootElement.GetProperty("items")
            .EnumerateArray().Select(j => j.TryGetProperty("name", out var n) ? n.GetString() : null).ToHashSet();
        Assert.All(refused, name => Assert.DoesNotContain(name, listed));
        Assert.All(accepted, name => Assert.Contains(name, listed));
    }

    [Fact]
    public async Task NodeLease_CountsFromWhenTheDatabaseAcceptsConnections_SoARestartGivesEveryNodeAFullLease()
    {
        // Crash recovery runs between the postmaster's start and the first connection it accepts. On a loaded machine it
        // outlasted a one-second heartbeat's lease, and every node looked dead to the first requests after the restart
        // (submissions were refused "no live worker node"). Here recovery is held for longer than a ghost node's lease.
        await fx.WaitHealthyAsync();
        await using var db = NpgsqlDataSource.Create($"Host={Path.Combine(fx.Node.DataDir, "postgres-run")};Port=5432;Username=postgres;Database=batchrunner;Pooling=false");
        var nodes = new NodeStore(db);
        var ghost = "ghost-" + Guid.NewGuid().ToString("N")[..6];
        var lease = TimeSpan.FromSeconds(4);
        await nodes.RegisterAsync(ghost, Guid.NewGuid(), new Dictionary<string, string>(), new NodeCapacity(1, 1L << 30, 0), ["default"], lease, default);
        try
        {
            // Its last heartbeat is an hour old: dead, once the database itself has run for a lease.
            await using (var old = db.CreateCommand($"update batchrunner.nodes set heartbeat_at = now() - interval '1 hour' where name = '{ghost}'"))
                await old.ExecuteNonQueryAsync();
            await Poll.UntilAsync(LiveNodeNamesAsync, names => !names.Contains(ghost), TimeSpan.FromSeconds(20), $"{ghost} dead");

            for (var round = 1; ; round++)
            {
                var killed = fx.KillPostmaster();
                var held = await HoldRecoveryAsync(killed, lease + TimeSpan.FromSeconds(2));
                await fx.WaitApiBackAsync(killed, Stopwatch.StartNew(), ApiBackWithin);
                var live = await LiveNodeNamesAsync();
                await using var times = db.CreateCommand($"select extract(epoch from {NodeStore.DatabaseUpSince} - pg_postmaster_start_time())::float8");
                var upAfterStart = TimeSpan.FromSeconds((double)(await times.ExecuteScalarAsync())!);
                output.WriteLine($"round {round}: recovery held {held}; accepting connections {upAfterStart.TotalSeconds:0.00} s after the postmaster's start; live: {string.Join(", ", live)}");
                // Unless recovery outlasted the lease (its startup process was caught), a lease from the postmaster's start would pass too: again.
                if (upAfterStart <= lease && round < 3) continue;
                Assert.True(upAfterStart > lease, $"recovery was never held past the lease in {round} rounds");
                // The database restarted after that heartbeat: a full lease from when it accepted connections...
                Assert.Contains(ghost, live);
                Assert.Contains("solo", live);
                break;
            }
            // ...so a job submitted now is accepted; and the ghost, which never beats, is dead again after its lease.
            var id = await fx.Cluster.Api.SubmitIdAsync(new { image = fx.Cluster.Busybox, command = new[] { "true" }, resources = new { cpus = 0.1, memory = "16Mi" } });
            Assert.Equal("succeeded", State(await fx.Cluster.WaitFinalAsync(id, TimeSpan.FromSeconds(60))));
            await Poll.UntilAsync(LiveNodeNamesAsync, names => !names.Contains(ghost), TimeSpan.FromSeconds(20), $"{ghost} dead again after its lease");
        }
        finally
        {
            await using var rm = db.CreateCommand($"delete from batchrunner.nodes where name = '{ghost}'");
            await rm.ExecuteNonQueryAsync();
        }
    }

    /// <summary>Stops the startup process of the postmaster that replaces <paramref name="killed"/> (WAL replay: no connection
    /// is accepted meanwhile) for <paramref name="hold"/>, then lets it go on; false when it was not caught before it ended.</summary>
    private async Task<bool> HoldRecoveryAsync(int killed, TimeSpan hold)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(30))
        {
            var pm = fx.PostmasterPid();
            if (pm != 0 && pm != killed && PostgresProcesses.RunsIn(pm, fx.PgData))
            {
                if (Startup(pm) is { } startup && HostProcesses.Signal(startup, SIGSTOP))
                {
                    try { await Task.Delay(hold); }
                    finally { HostProcesses.Signal(startup, SIGCONT); }
                    return true;
                }
                if (File.ReadAllText(Path.Combine(fx.PgData, PostmasterPidFile.DataDirLock)).Contains("ready")) return false;
            }
            await Task.Delay(1);
        }
        return false;

        static int? Startup(int postmaster)
        {
            try
            {
                foreach (var child in File.ReadAllText($"/proc/{postmaster}/task/{postmaster}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries))
                    if (File.ReadAllText($"/proc/{child}/cmdline").Contains("startup")) return int.Parse(child);
            }
            catch (IOException) { }
            return null;
        }
    }

    private const int SIGCONT = 18, SIGSTOP = 19;

    [Fact]
    public async Task KilledPostmaster_VoidsHangfireLocksTakenBeforeIt_SoNoJobWaitsTenMinutesForItsOwnLock()
    {
        await fx.WaitHealthyAsync();
        await using var db = NpgsqlDataSource.Create($"Host={Path.Combine(fx.Node.DataDir, "postgres-run")};Port=5432;Username=postgres;Database=batchrunner;Pooling=false");
        // What a worker leaves when the database dies between taking a job's state lock and releasing it.
        var resource = "job:stale-" + Guid.NewGuid().ToString("N")[..8] + ":state-lock";
        await using (var take = db.CreateCommand($"insert into hangfire.lock (resource, acquired) values ('{resource}', now() at time zone 'UTC')"))
            await take.ExecuteNonQueryAsync();

        var killed = fx.KillPostmaster();
        await fx.WaitApiBackAsync(killed, Stopwatch.StartNew(), ApiBackWithin);
        await Poll.UntilAsync(async () =>
        {
            await using var count = db.CreateCommand($"select count(*) from hangfire.lock where resource = '{resource}'");
            return (long)(await count.ExecuteScalarAsync())!;
        }, n => n == 0, TimeSpan.FromSeconds(20), "the lock taken before the restart to be removed");
    }

    private async Task<HashSet<string>> LiveNodeNamesAsync() =>
        JsonDocument.Parse(await fx.Cluster.Api.Http.GetStringAsync("/api/v1/nodes")).RootElement.EnumerateArray()
            .Select(n => n.GetProperty("name").GetString()!).ToHashSet();

    [Fact]
    public async Task BackupAndRestore_IntoAFreshDataDirectory_KeepTheJobItsLogsAndItsOutputs()
    {
        var c = fx.Cluster;
        await fx.WaitHealthyAsync();
        var id = await c.Api.SubmitIdAsync(new
        {
            name = "backed-up",
            image = c.Busybox,
            command = new[] { "/bin/sh", "-c", "echo out-line; echo err-line >&2; echo 42 > /outputs/answer.txt; mkdir /outputs/sub; echo nested > /outputs/sub/b.txt" },
        });
        var original = await c.WaitFinalAsync(id);
        Assert.Equal("succeeded", State(original));

        // Online: the node keeps running while backup.sh dumps its database.
        var dump = Path.Combine(c.Root, "backup.dump");
        var scripts = Path.Combine(Observability.RepoPaths.Root, "scripts");
        output.WriteLine(await ExternalCommand.RunAsync("bash", [Path.Combine(scripts, "backup.sh"), "-d", fx.Node.DataDir, dump]));
        // The README's procedure: restore.sh into a fresh data directory, copy the job files, start BatchRunner there.
        var fresh = Path.Combine(c.Root, "nodes", "restored");
        output.WriteLine(await ExternalCommand.RunAsync("bash", [Path.Combine(scripts, "restore.sh"), "-d", fresh, dump]));
        await ExternalCommand.RunAsync("cp", ["-a", Path.Combine(fx.Node.DataDir, "jobs"), Path.Combine(fresh, "jobs")]);
        var restored = await c.StartNodeAsync("restored", role: "api", extra: ["--BatchRunner:NodeName=solo"]);
        try
        {
            using var api = new HttpClient { BaseAddress = new Uri(restored.Url) };
            api.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", TestCluster.ApiKey);
            var copy = JsonDocument.Parse(await api.GetStringAsync($"/api/v1/jobs/{id}")).RootElement;
            foreach (var field in new[] { "id", "name", "image", "imageDigest", "state", "reason", "message", "exitCode", "attempt",
                                          "createdAt", "startedAt", "finishedAt", "resources", "usage", "outputs", "node", "attempts" })
                Assert.Equal(original.GetProperty(field).GetRawText(), copy.GetProperty(field).GetRawText());
            Assert.Equal("out-line\nerr-line\n", await api.GetStringAsync($"/api/v1/jobs/{id}/logs"));
            Assert.Equal(await c.Api.Http.GetStringAsync($"/api/v1/jobs/{id}/outputs"), await api.GetStringAsync($"/api/v1/jobs/{id}/outputs"));
            Assert.Equal("nested\n", await api.GetStringAsync($"/api/v1/jobs/{id}/outputs/sub/b.txt"));
        }
        finally
        {
            await restored.DisposeAsync();
        }
    }
}
