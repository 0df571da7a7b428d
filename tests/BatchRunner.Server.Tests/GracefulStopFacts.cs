using System.Net;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>
/// Cancel and timeout ask a job to stop before they kill it (issue 19, item 3): SIGTERM (or the image's StopSignal),
/// then SIGKILL after stopGraceSeconds. A training loop's <c>trap … TERM</c> runs and can checkpoint into /outputs.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class GracefulStopFacts(ServerFixture f)
{
    // A busybox sh as PID 1 runs its TERM trap once the current 0.1 s sleep ends: it writes its checkpoint and exits 0.
    private const string Checkpointing =
        "trap 'echo saved at step $i > /outputs/checkpoint.txt; exit 0' TERM; i=0; echo started; while true; do i=$((i+1)); sleep 0.1; done";

    [Fact]
    public async Task Cancel_SendsSigterm_AndTheTrapWritesItsOutput_BeforeTheJobEndsCancelled()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", Checkpointing }, resources = new { cpus = 0.2, memory = "16Mi" } });
        await StartedAsync(id);

        Assert.Equal(HttpStatusCode.Accepted, (await f.Api.CancelAsync(id)).StatusCode);
        var done = await f.Api.WaitForFinalAsync(id, TimeSpan.FromSeconds(30));

        Assert.Equal("cancelled", BatchRunnerClient.State(done));
        Assert.Equal("cancelled by request; exited within the 10 s stop grace period after SIGTERM (exit code 0)", done.GetProperty("message").GetString());
        Assert.Equal(10, done.GetProperty("stopGraceSeconds").GetInt32());
        Assert.Equal("checkpoint.txt", done.GetProperty("outputs")[0].GetProperty("path").GetString());
        Assert.StartsWith("saved at step ", await f.Api.OutputAsync(id, "checkpoint.txt"));
    }

    [Fact]
    public async Task Timeout_SendsSigterm_AndTheTrapWritesItsOutput_BeforeTheJobEndsTimedOut()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", Checkpointing }, timeoutSeconds = 2, stopGraceSeconds = 5,
            resources = new { cpus = 0.2, memory = "16Mi" } });
        var done = await f.Api.WaitForFinalAsync(id, TimeSpan.FromSeconds(30));

        Assert.Equal("failed", BatchRunnerClient.State(done));
        Assert.Equal("timed_out", done.GetProperty("reason").GetString());
        Assert.Equal("exceeded timeoutSeconds=2; exited within the 5 s stop grace period after SIGTERM (exit code 0)", done.GetProperty("message").GetString());
        Assert.StartsWith("saved at step ", await f.Api.OutputAsync(id, "checkpoint.txt"));
    }

    [Fact]
    public async Task Cancel_KillsAJobThatIgnoresSigterm_AfterItsGrace_AndSaysSo()
    {
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "trap '' TERM; echo started; while true; do sleep 0.1; done" },
            stopGraceSeconds = 1,
            resources = new { cpus = 0.2, memory = "16Mi" },
        });
        await StartedAsync(id);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        await f.Api.CancelAsync(id);
        var done = await f.Api.WaitForFinalAsync(id, TimeSpan.FromSeconds(30));

        Assert.Equal("cancelled", BatchRunnerClient.State(done));
        Assert.StartsWith("cancelled by request; killed (SIGKILL) after the 1 s stop grace period: it did not exit on SIGTERM", done.GetProperty("message").GetString());
        Assert.True(sw.Elapsed >= TimeSpan.FromSeconds(1), $"killed before its grace ended: {sw.Elapsed}");
    }

    [Fact]
    public async Task Submit_RefusesAStopGraceAboveTheNodesMaximum()
    {
        var response = await f.Api.PostJobAsync(new { image = f.Busybox, stopGraceSeconds = 301 });
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("stopGraceSeconds must be at most 300 on this cluster (MaxStopGraceSeconds)",
            JsonDocument.Parse(body).RootElement.GetProperty("errors").GetProperty("stopGraceSeconds")[0].GetString());
    }

    // Running, and its shell has set its trap (it printed "started" after the trap command).
    private Task StartedAsync(string id) =>
        Poll.UntilAsync(() => f.Api.LogsAsync(id, "stdout"), s => s.Contains("started"), TimeSpan.FromSeconds(30), $"job {id} to start", 100);
}
