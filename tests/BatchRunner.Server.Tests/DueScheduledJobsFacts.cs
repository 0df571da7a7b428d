using System.Diagnostics;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Hangfire;
using Hangfire.States;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Server.Tests;

/// <summary>
/// A job this process schedules (a retry's back-off, a bounce) is enqueued when due, not when Hangfire's delayed-job
/// scheduler next polls (every <see cref="BatchRunnerApp.SchedulePollingInterval"/>, only a fallback).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class DueScheduledJobsFacts(ServerFixture f)
{
    [Fact]
    public async Task ScheduledJob_IsEnqueuedWhenDue_NotAtTheSchedulersNextPoll()
    {
        Assert.True(BatchRunnerApp.SchedulePollingInterval >= TimeSpan.FromSeconds(5));
        var client = f.App.Services.GetRequiredService<IBackgroundJobClient>();
        var storage = f.App.Services.GetRequiredService<JobStorage>();
        // A queue no worker fetches: the message stays Enqueued once it leaves the schedule.
        var clock = Stopwatch.StartNew();
        var id = client.Create<IJobPerformer>("unwatched", p => p.RunAsync(Guid.NewGuid(), "due-test", CancellationToken.None),
            new ScheduledState(TimeSpan.FromSeconds(1)));
        try
        {
            var state = await Poll.UntilAsync(() =>
            {
                using var connection = storage.GetConnection();
                return Task.FromResult(connection.GetStateData(id));
            }, s => s?.Name == EnqueuedState.StateName, TimeSpan.FromSeconds(15), "the scheduled message to be enqueued", 50);

            Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(3));
            Assert.StartsWith("Due (BatchRunner", state!.Reason);
            using var c = storage.GetConnection();
            Assert.Equal("unwatched", c.GetJobData(id)!.Job.Queue);
        }
        finally
        {
            client.Delete(id);
        }
    }
}
