using System.Diagnostics;
using System.Net;
using BatchRunner.Server.Execution.Phases;
using BatchRunner.Server.Hosting;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Cluster;

/// <summary>
/// A cancel reaches a running job within about a second (README's promise) through the cancel notification alone: the
/// polls behind it (Hangfire's cancellation check, the container's flag poll) are 30 s, so a test that passes within
/// 3 s proves the notification path, from another node and after the shared database restarted.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class CancelAcrossNodesFacts
{
    // Exits within 0.1 s of SIGTERM (a busybox sh as PID 1 runs its trap when the current sleep ends).
    private const string StopsOnTerm = "trap 'exit 0' TERM; echo started; while true; do sleep 0.1; done";
    private static readonly TimeSpan Promise = TimeSpan.FromSeconds(3);

    [Fact]
    public async Task Cancel_OnTheApiNode_StopsAJobOnAWorker_WithinASecond_AlsoAfterTheDatabaseRestarted()
    {
        // The polls are long: only the notification can be this quick.
        Assert.True(BatchRunnerApp.CancellationCheckInterval >= TimeSpan.FromSeconds(10) && ContainerPhase.CancelPollInterval >= TimeSpan.FromSeconds(10));
        await using var c = await TestCluster.StartAsync();
        await c.StartNodeAsync("api", role: "api");
        await c.StartNodeAsync("w1");

        var first = await StartedJobAsync(c);
        var latency = await CancelAsync(c, first);
        Assert.True(latency < Promise, $"cancel took {latency.TotalMilliseconds:F0} ms from another node");

        // The listener's connection dies with the database; it listens again (and reads its jobs' flags once) when the
        // database is back.
        var second = await StartedJobAsync(c);
        await c.Postgres!.StopAsync();
        await c.Postgres!.RestartAsync();
        await Poll.UntilAsync(async () => (await c.Api.Http.GetAsync("/api/v1/jobs?limit=1")).StatusCode, s => s == HttpStatusCode.OK,
            TimeSpan.FromSeconds(60), "the API to answer again", 100);
        latency = await CancelAsync(c, second);
        Assert.True(latency < Promise, $"cancel took {latency.TotalMilliseconds:F0} ms after a database restart");
    }

    private static async Task<string> StartedJobAsync(TestCluster c)
    {
        var id = await c.Api.SubmitIdAsync(new { image = c.Busybox, command = new[] { "/bin/sh", "-c", StopsOnTerm }, resources = new { cpus = 0.2, memory = "16Mi" } });
        await Poll.UntilAsync(() => c.Api.LogsAsync(id, "stdout"), s => s.Contains("started"), TimeSpan.FromSeconds(60), $"job {id} to start", 100);
        return id;
    }

    /// <summary>From the cancel's answer to the job's record saying cancelled.</summary>
    private static async Task<TimeSpan> CancelAsync(TestCluster c, string id)
    {
        var response = await c.Api.CancelAsync(id);
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var clock = Stopwatch.StartNew();
        var done = await Poll.UntilAsync(() => c.Api.GetJobAsync(id), j => BatchRunnerClient.State(j) is "succeeded" or "failed" or "cancelled",
            TimeSpan.FromSeconds(60), $"job {id} to end", 20);
        var elapsed = clock.Elapsed;
        Assert.Equal("cancelled", BatchRunnerClient.State(done));
        Assert.StartsWith("cancelled by request; exited", done.GetProperty("message").GetString());
        return elapsed;
    }
}
