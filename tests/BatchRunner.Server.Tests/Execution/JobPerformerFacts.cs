using System.Diagnostics;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Execution;

/// <summary>
/// What a running job holds in the node's process: no thread-pool thread. Hangfire invokes the job method
/// (<see cref="BatchRunner.Server.Execution.JobPerformer.RunAsync"/>) on a pool thread, through its task scheduler; a method
/// that slept there until the job ended (<c>f779b38</c>, reverted by <c>296291b</c>) held one thread per running job, and
/// with many jobs running the pool starved: requests, heartbeats and the database's answers waited for it to grow, one
/// thread a second (a node's heartbeat came back 7 to 11 s late, and submissions were refused with "no live worker node").
/// </summary>
/// <remarks>
/// Deterministic because the pool cannot grow here: a real BatchRunner process whose pool is capped at
/// <see cref="PoolThreads"/> threads (<c>DOTNET_ThreadPool_ForceMaxWorkerThreads</c>) runs more jobs than that at once.
/// A job that holds a pool thread then leaves none, and the GETs below are never answered.
/// </remarks>
[Collection(ServerCollection.Name)]
public sealed class JobPerformerFacts(ServerFixture f)
{
    private const int PoolThreads = 4;
    private const int Jobs = PoolThreads + 2;

    [Fact]
    public async Task RunningJobs_HoldNoPoolThread_SoANodeWithAFewStillAnswersAndBeats()
    {
        await using var server = await ServerProcess.StartAsync("pool",
            ["--BatchRunner:Workers=16", "--BatchRunner:HeartbeatSeconds=1", .. TestRegistry.ServerArgs],
            new Dictionary<string, string> { ["DOTNET_ThreadPool_ForceMaxWorkerThreads"] = PoolThreads.ToString() });
        server.Api.Http.Timeout = TimeSpan.FromSeconds(10);

        var ids = new List<string>();
        for (var i = 0; i < Jobs; i++)
            ids.Add(await server.Api.SubmitIdAsync(new
            {
                image = f.Busybox,
                command = new[] { "sleep", "120" },
                resources = new { cpus = 0.1, memory = "32Mi", disk = "64Mi" },
            }));
        foreach (var id in ids)
            await server.Api.WaitForStateAsync(id, s => s == "running", TimeSpan.FromSeconds(60));

        // All of them running: the node still answers at once, and it stays in the node list, whose lease (three heartbeats
        // of 1 s) a late heartbeat would miss.
        var slowest = TimeSpan.Zero;
        for (var i = 0; i < 6; i++)
        {
            var watch = Stopwatch.StartNew();
            var job = await server.Api.GetJobAsync(ids[i % Jobs]);
            var nodes = await server.Api.NodesAsync();
            watch.Stop();
            if (watch.Elapsed > slowest) slowest = watch.Elapsed;
            Assert.Equal("running", BatchRunnerClient.State(job));
            Assert.Single(nodes.EnumerateArray());
            await Task.Delay(700);
        }
        Assert.True(slowest < TimeSpan.FromSeconds(2), $"a GET and the node list took {slowest.TotalMilliseconds:F0} ms with {Jobs} jobs running");

        // A new job is still admitted (the node is live for submissions) and runs beside them.
        Assert.Equal("hi\n", await server.Api.RunAsync(new { image = f.Busybox, command = new[] { "echo", "hi" }, resources = new { cpus = 0.1, memory = "32Mi", disk = "64Mi" } }));

        foreach (var id in ids)
            (await server.Api.CancelAsync(id)).EnsureSuccessStatusCode();
        foreach (var id in ids)
            Assert.Equal("cancelled", BatchRunnerClient.State(await server.Api.WaitForFinalAsync(id, TimeSpan.FromSeconds(60))));
    }
}
