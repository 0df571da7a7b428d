using BatchRunner.Core;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Server.Tests;

/// <summary>
/// Who may start the next attempt of a job whose attempt is still recorded as started: nobody while that
/// attempt's node instance is alive, except that instance itself, whose executor runs one delivery per
/// job at a time, so a redelivery there means the attempt was abandoned (stopped while fenced). Before
/// this rule such a job stayed "starting" for good once its fenced node came back.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class AttemptTakeoverFacts(ServerFixture f)
{
    [Fact]
    public async Task LostAttemptsReaper_LeavesARunningJobWithoutANode_AsAnArraysParentIs()
    {
        var db = f.App.Services.GetRequiredService<Npgsql.NpgsqlDataSource>();
        var nodes = f.App.Services.GetRequiredService<NodeStore>();
        var id = Guid.CreateVersion7();
        async Task<string> ExecAsync(string sql)
        {
            await using var cmd = db.CreateCommand(sql);
            cmd.Parameters.AddWithValue("id", id);
            return (await cmd.ExecuteScalarAsync())?.ToString() ?? "";
        }
        // An array's parent runs no container: running while its children run, with no node and no attempt of its own.
        await ExecAsync("""
            insert into batchrunner.jobs (id, image, queue, spec, state, created_at, array_size)
            values (@id, 'example.invalid/none:1', 'default', '{}', 'running', now(), 2)
            """);
        try
        {
            // It used to be taken as lost (no live node of its name) and put back to queued, then the reaper failed reading its
            // node (null), every heartbeat.
            var lost = await nodes.ReapLostAttemptsAsync(CancellationToken.None);
            Assert.DoesNotContain(lost, l => l.JobId == id);
            Assert.Equal("running", await ExecAsync("select state from batchrunner.jobs where id = @id"));
        }
        finally { await ExecAsync("delete from batchrunner.jobs where id = @id"); }
    }

    [Fact]
    public async Task StartedAttempt_IsTakenOverByItsOwnLiveInstance_ButNotByAnotherWhileItLives()
    {
        var store = f.App.Services.GetRequiredService<JobStore>();
        var nodes = f.App.Services.GetRequiredService<NodeStore>();
        var ct = CancellationToken.None;
        // Two node records of this test's own, alive, too small for any real job (so admission elsewhere ignores them).
        var (a, b) = ("takeover-a-" + Guid.NewGuid().ToString("N")[..6], "takeover-b-" + Guid.NewGuid().ToString("N")[..6]);
        var (ia, ib) = (Guid.NewGuid(), Guid.NewGuid());
        var tiny = new NodeCapacity(0.01, 1 << 20, 0);
        await nodes.RegisterAsync(a, ia, new Dictionary<string, string>(), tiny, ["default"], TimeSpan.FromMinutes(1), ct);
        await nodes.RegisterAsync(b, ib, new Dictionary<string, string>(), tiny, ["default"], TimeSpan.FromMinutes(1), ct);
        // A job record with no Hangfire message: no worker of the fixture touches it.
        var spec = JobSpecValidator.Validate(new JobSubmission { Image = "example.invalid/none:1", Command = ["true"] }).Spec!;
        var id = Guid.CreateVersion7();
        await store.InsertAsync(new JobRecord { Id = id, Image = spec.Image, Queue = spec.Queue, Spec = spec, State = JobState.Queued, CreatedAt = DateTimeOffset.UtcNow }, null, "h", ct);
        try
        {
            Assert.Equal(1, Assert.IsType<AttemptStart.Started>(await store.BeginAttemptAsync(id, a, ia, "default", null, ct)).Attempt);
            // b may not start one while a's instance, which holds attempt 1, is alive.
            Assert.IsType<AttemptStart.NothingToRun>(await store.BeginAttemptAsync(id, b, ib, "default", null, ct));
            // a itself may: it was delivered the job again, so attempt 1 no longer runs there.
            var second = Assert.IsType<AttemptStart.Started>(await store.BeginAttemptAsync(id, a, ia, "default", null, ct));
            Assert.Equal(2, second.Attempt);
            var attempts = await store.GetAttemptsAsync(id, ct);
            Assert.Equal(FailureReason.NodeLost, attempts[0].Reason);
            Assert.Contains("fenced", attempts[0].Message);
            Assert.Null(attempts[1].FinishedAt);
            // Once a is dead (stopped), b takes over, and says the node stopped reporting.
            await nodes.MarkStoppedAsync(a, ia, ct);
            Assert.Equal(3, Assert.IsType<AttemptStart.Started>(await store.BeginAttemptAsync(id, b, ib, "default", null, ct)).Attempt);
            Assert.Contains("stopped reporting", (await store.GetAttemptsAsync(id, ct))[1].Message);
        }
        finally
        {
            await store.FinishAsync(id, (await store.GetAsync(id, ct))!.Attempt, new JobOutcome(JobState.Failed, FailureReason.NodeLost, "test over", null, null, []), ct);
            await nodes.MarkStoppedAsync(a, ia, ct);
            await nodes.MarkStoppedAsync(b, ib, ct);
        }
    }
}
