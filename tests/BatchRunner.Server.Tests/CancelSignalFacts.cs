using System.Net;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Hangfire;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace BatchRunner.Server.Tests;

/// <summary>
/// <see cref="CancelSignal"/> on the fixture's real database: a watch fires for a cancel committed while its listener was
/// away (the catch-up read after it listens), after its connection was killed (it listens again), and for a cancel
/// notified just before the watch began.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class CancelSignalFacts(ServerFixture f)
{
    private const string StopsOnTerm = "trap 'exit 0' TERM; echo started; while true; do sleep 0.1; done";

    [Fact]
    public async Task WatchJob_Fires_ForACancelMadeWhileNotListening_AndAfterItsConnectionWasKilled()
    {
        var db = f.App.Services.GetRequiredService<NpgsqlDataSource>();
        var first = await StartedJobAsync();
        var second = await StartedJobAsync();
        // A listener of its own that is not listening yet: the cancel's notification passes it by.
        await using var sessions = new SessionConnections(db.ConnectionString!);
        using var signal = new CancelSignal(sessions, TimeProvider.System, NullLogger<CancelSignal>.Instance);
        using var missed = signal.WatchJob(Guid.Parse(first));
        Assert.Equal(HttpStatusCode.Accepted, (await f.Api.CancelAsync(first)).StatusCode);
        Assert.False(missed.Token.IsCancellationRequested);

        // It reads the flags of the jobs it watches once it listens.
        await signal.StartAsync(CancellationToken.None);
        await signal.Listening.WaitAsync(TimeSpan.FromSeconds(10));
        await Poll.UntilAsync(() => missed.Token.IsCancellationRequested, TimeSpan.FromSeconds(5), "the catch-up read to fire the watch");

        // Its connection killed (as a database restart does; the fixture's server's too), it listens again, and a cancel reaches it.
        using var watch = signal.WatchJob(Guid.Parse(second));
        await using (var kill = db.CreateCommand($"select pg_terminate_backend(pid) from pg_stat_activity where application_name = '{CancelSignal.ApplicationName}'"))
            await kill.ExecuteNonQueryAsync();
        await Poll.UntilAsync(() => signal.Listens >= 2, TimeSpan.FromSeconds(10), "the listener to listen again");
        Assert.False(watch.Token.IsCancellationRequested);
        Assert.Equal(HttpStatusCode.Accepted, (await f.Api.CancelAsync(second)).StatusCode);
        await Poll.UntilAsync(() => watch.Token.IsCancellationRequested, TimeSpan.FromSeconds(2), "the notification to fire the watch");
        await signal.StopAsync(CancellationToken.None);
        foreach (var id in new[] { first, second }) Assert.Equal("cancelled", BatchRunnerClient.State(await f.Api.WaitForFinalAsync(id, TimeSpan.FromSeconds(30))));
    }

    [Fact]
    public async Task HangfireDelete_OfARunningJob_CancelsIt_WithinASecond()
    {
        var id = await StartedJobAsync();
        var hangfireId = (await f.App.Services.GetRequiredService<JobStore>().GetAsync(Guid.Parse(id), CancellationToken.None))!.HangfireJobId!;
        // What the dashboard's Delete button does: Processing → Deleted in Hangfire.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        IBackgroundJobClient hangfire = new BackgroundJobClient(f.App.Services.GetRequiredService<JobStorage>());
        Assert.True(hangfire.Delete(hangfireId));
        var done = await Poll.UntilAsync(() => f.Api.GetJobAsync(id), j => BatchRunnerClient.State(j) is "succeeded" or "failed" or "cancelled",
            TimeSpan.FromSeconds(60), $"job {id} to end", 20);
        Assert.Equal("cancelled", BatchRunnerClient.State(done));
        Assert.StartsWith("cancelled by request; exited", done.GetProperty("message").GetString());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(3), $"took {clock.Elapsed.TotalMilliseconds:F0} ms");
    }

    [Fact]
    public void WatchJob_Fires_ForACancelNotifiedJustBeforeItBegan_AndNotForAnotherJob()
    {
        using var signal = new CancelSignal(new SessionConnections("Host=/nowhere"), TimeProvider.System, NullLogger<CancelSignal>.Instance);
        var cancelled = Guid.NewGuid();
        signal.Signal(cancelled);
        using var late = signal.WatchJob(cancelled);
        using var other = signal.WatchJob(Guid.NewGuid());
        Assert.True(late.Token.IsCancellationRequested);
        Assert.False(other.Token.IsCancellationRequested);
    }

    private async Task<string> StartedJobAsync()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", StopsOnTerm }, resources = new { cpus = 0.1, memory = "16Mi" } });
        await Poll.UntilAsync(() => f.Api.LogsAsync(id, "stdout"), s => s.Contains("started"), TimeSpan.FromSeconds(30), $"job {id} to start", 100);
        return id;
    }
}
