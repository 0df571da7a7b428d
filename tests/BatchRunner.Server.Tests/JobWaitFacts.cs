using System.Diagnostics;
using System.Net;
using System.Text.Json;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace BatchRunner.Server.Tests;

/// <summary>
/// The long poll <c>GET /api/v1/jobs/{id}?waitSeconds=N[&amp;whileState=S]</c> on the fixture's real server: it answers
/// within a moment of the job's change, which only the database's notification can bring this fast (a waiting request
/// reads its job on its own only every <see cref="JobStateSignal.SafetyPollInterval"/>), also after the listener's
/// connection was killed; it answers at the end of the wait with the job as it is; strangers get 404 at once.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class JobWaitFacts(ServerFixture f)
{
    /// <summary>Well under the safety poll: only a notification wakes a wait this soon after the change.</summary>
    private static readonly TimeSpan Prompt = TimeSpan.FromSeconds(1.5);

    private async Task<(JsonElement Job, TimeSpan Took)> GetWaitingAsync(BatchRunnerClient client, string id, string query)
    {
        var clock = Stopwatch.StartNew();
        var response = await client.Http.GetAsync($"/api/v1/jobs/{id}?{query}");
        var took = clock.Elapsed;
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{response.StatusCode}: {body}");
        return (JsonDocument.Parse(body).RootElement, took);
    }

    private static TimeSpan SinceFinished(JsonElement job) => DateTimeOffset.UtcNow - job.GetProperty("finishedAt").GetDateTimeOffset();

    [Fact]
    public async Task Get_WithWaitSeconds_AnswersWhenTheJobEnds_WithinAMomentOfItsEnd()
    {
        Assert.True(JobStateSignal.SafetyPollInterval >= TimeSpan.FromSeconds(4), "the safety poll must be slower than the promise tested here");
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "sleep 2; echo done" } });
        var (job, took) = await GetWaitingAsync(f.Api, id, "waitSeconds=30");
        Assert.Equal("succeeded", BatchRunnerClient.State(job));
        Assert.True(took >= TimeSpan.FromSeconds(1.5), $"answered after {took.TotalMilliseconds:F0} ms: it did not wait for the job");
        Assert.True(SinceFinished(job) < Prompt, $"answered {SinceFinished(job).TotalMilliseconds:F0} ms after the job's end");

        // A job that has ended answers at once.
        (job, took) = await GetWaitingAsync(f.Api, id, "waitSeconds=30");
        Assert.Equal("succeeded", BatchRunnerClient.State(job));
        Assert.True(took < TimeSpan.FromSeconds(1), $"an ended job's wait took {took.TotalMilliseconds:F0} ms");
    }

    [Fact]
    public async Task Get_WithWhileState_AnswersOnceTheStateChanges_OrAtTheEndOfTheWait()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "600" }, stopGraceSeconds = 1 });
        try
        {
            var (job, _) = await GetWaitingAsync(f.Api, id, "waitSeconds=30&whileState=queued");
            Assert.NotEqual("queued", BatchRunnerClient.State(job));
            job = await f.Api.WaitForStateAsync(id, s => s == "running");

            // Nothing changes: the answer comes when the seconds are up, with the job as it is.
            var (still, took) = await GetWaitingAsync(f.Api, id, "waitSeconds=1.2&whileState=running");
            Assert.Equal("running", BatchRunnerClient.State(still));
            Assert.True(took >= TimeSpan.FromSeconds(1.1) && took < TimeSpan.FromSeconds(5), $"a 1.2 s wait took {took.TotalMilliseconds:F0} ms");

            // A cancel from another request ends the wait at once.
            var waiting = GetWaitingAsync(f.Api, id, "waitSeconds=30&whileState=running");
            await Task.Delay(300);
            Assert.False(waiting.IsCompleted);
            Assert.Equal(HttpStatusCode.Accepted, (await f.Api.CancelAsync(id)).StatusCode);
            var (ended, _) = await waiting;
            Assert.NotEqual("running", BatchRunnerClient.State(ended));
        }
        finally { await f.Api.CancelAsync(id); }
        Assert.Equal("cancelled", BatchRunnerClient.State(await f.Api.WaitForFinalAsync(id, TimeSpan.FromSeconds(30))));
    }

    [Theory]
    [InlineData("waitSeconds=-1", "waitSeconds")]
    [InlineData("waitSeconds=61", "waitSeconds")]
    [InlineData("waitSeconds=NaN", "waitSeconds")]
    [InlineData("waitSeconds=ten", "waitSeconds")]
    [InlineData("waitSeconds=5&whileState=sleeping", "whileState")]
    [InlineData("whileState=running", "whileState")]
    public async Task Get_RefusesABadWait_NamingTheField(string query, string field)
    {
        var response = await f.Client.GetAsync($"/api/v1/jobs/{Guid.NewGuid()}?{query}");
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{response.StatusCode}: {body}");
        Assert.True(JsonDocument.Parse(body).RootElement.GetProperty("errors").TryGetProperty(field, out _), $"{field} not in {body}");
    }

    [Fact]
    public async Task Get_WithWaitSeconds_Answers404AtOnce_ForAJobOfAnotherTenant()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "600" }, stopGraceSeconds = 1 });
        try
        {
            using var stranger = await f.Api.ClientForNewKeyAsync("t-" + Guid.NewGuid().ToString("N")[..10], "user");
            var clock = Stopwatch.StartNew();
            var response = await stranger.Http.GetAsync($"/api/v1/jobs/{id}?waitSeconds=20");
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"a stranger's wait took {clock.Elapsed.TotalMilliseconds:F0} ms");
        }
        finally { await f.Api.CancelAsync(id); }
    }

    [Fact]
    public async Task Get_WithWaitSeconds_IsWokenByTheNotification_AfterTheListenersConnectionWasKilled()
    {
        var db = f.App.Services.GetRequiredService<NpgsqlDataSource>();
        var signal = f.App.Services.GetRequiredService<JobStateSignal>();
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "sleep 3" } });
        var waiting = GetWaitingAsync(f.Api, id, "waitSeconds=30");
        await Poll.UntilAsync(() => signal.IsListening, TimeSpan.FromSeconds(10), "the signal to listen");
        var listens = signal.Listens;
        // As a database restart does: the listener's session ends; it listens again and the waits read their jobs once.
        await using (var kill = db.CreateCommand($"select pg_terminate_backend(pid) from pg_stat_activity where application_name = '{JobStateSignal.ApplicationName}'"))
            await kill.ExecuteNonQueryAsync();
        await Poll.UntilAsync(() => signal.Listens > listens, TimeSpan.FromSeconds(10), "the signal to listen again");
        var (job, _) = await waiting;
        Assert.Equal("succeeded", BatchRunnerClient.State(job));
        Assert.True(SinceFinished(job) < Prompt, $"answered {SinceFinished(job).TotalMilliseconds:F0} ms after the job's end");
    }

    [Fact]
    public async Task Wait_EndsWithTheJobAsItIs_WhenTheServerStops()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "600" }, stopGraceSeconds = 1 });
        try
        {
            await f.Api.WaitForStateAsync(id, s => s == "running");
            using var stopping = new CancellationTokenSource(TimeSpan.FromMilliseconds(500));
            var clock = Stopwatch.StartNew();
            var documents = f.App.Services.GetRequiredService<Api.JobDocuments>();
            var (job, tooMany) = await Api.JobWait.WaitAsync(c => documents.GetAsync(Guid.Parse(id), null, c), Guid.Parse(id), TimeSpan.FromSeconds(30), whileState: null,
                f.App.Services.GetRequiredService<JobStateSignal>(), TimeProvider.System, stopping.Token, CancellationToken.None);
            Assert.False(tooMany);
            Assert.Equal("running", job!.State);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(3), $"the wait went on {clock.Elapsed.TotalMilliseconds:F0} ms after the stop");
        }
        finally { await f.Api.CancelAsync(id); }
    }

    /// <summary>While the signal listens already, a wait reads its job once before it waits (watching first), not twice,
    /// and once more per change it is woken by: the long poll's cost per job, which every client that waits pays.</summary>
    [Fact]
    public async Task Wait_WhileTheSignalListens_ReadsTheJobOnceBeforeItWaits_AndOncePerWakeUp()
    {
        var signal = f.App.Services.GetRequiredService<JobStateSignal>();
        var documents = f.App.Services.GetRequiredService<Api.JobDocuments>();
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "600" }, stopGraceSeconds = 1 });
        var jobId = Guid.Parse(id);
        try
        {
            await f.Api.WaitForStateAsync(id, s => s == "running");
            // Another wait keeps the listener up (as waiting clients do), and has had its catch-up wake-up.
            using var other = signal.Watch(Guid.NewGuid());
            Assert.True(await signal.ListeningAsync(TimeSpan.FromSeconds(10), CancellationToken.None));
            await Task.Delay(300);

            var reads = 0;
            var waiting = Api.JobWait.WaitAsync(c => { Interlocked.Increment(ref reads); return documents.GetAsync(jobId, null, c); }, jobId,
                TimeSpan.FromSeconds(30), whileState: null, signal, TimeProvider.System, CancellationToken.None, CancellationToken.None);
            await Poll.UntilAsync(() => Volatile.Read(ref reads) >= 1, TimeSpan.FromSeconds(10), "the wait's first read");
            await Task.Delay(300);
            Assert.Equal(1, Volatile.Read(ref reads));

            await f.Api.CancelAsync(id);
            var (job, tooMany) = await waiting;
            Assert.False(tooMany);
            Assert.Equal("cancelled", job!.State);
            // cancel requested, then cancelled: one read per notification that woke it, at most two.
            Assert.InRange(Volatile.Read(ref reads), 2, 3);
        }
        finally { await f.Api.CancelAsync(id); }
    }

    [Fact]
    public async Task Signal_ListensOnlyWhileSomeoneWaits()
    {
        var db = f.App.Services.GetRequiredService<NpgsqlDataSource>();
        await using var sessions = new SessionConnections(db.ConnectionString!);
        using var signal = new JobStateSignal(sessions, TimeProvider.System, NullLogger<JobStateSignal>.Instance, idleClose: TimeSpan.FromMilliseconds(300));
        await signal.StartAsync(CancellationToken.None);
        try
        {
            Assert.False(await signal.ListeningAsync(TimeSpan.FromMilliseconds(500), CancellationToken.None));
            Assert.Equal(0, signal.Listens);

            var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "2" } });
            using (var waiter = signal.Watch(Guid.Parse(id)))
            {
                Assert.True(await signal.ListeningAsync(TimeSpan.FromSeconds(10), CancellationToken.None));
                // The wake-up every waiter gets when a listen begins (its catch-up read), taken away.
                await Task.Delay(300);
                await waiter.WaitAsync(TimeSpan.Zero, CancellationToken.None);
                // running → succeeded (or an earlier change still to come) is notified.
                Assert.True(await waiter.WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None), "no notification of the job's state");
                await f.Api.WaitForFinalAsync(id);
            }
            await Poll.UntilAsync(() => !signal.IsListening, TimeSpan.FromSeconds(10), "the signal to stop listening once nobody waits");
            Assert.Equal(1, signal.Listens);
        }
        finally { await signal.StopAsync(CancellationToken.None); }
    }
}
