using BatchRunner.Core;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Storage;
using Hangfire;
using Hangfire.Common;
using Hangfire.States;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Server.Tests;

/// <summary>
/// The Hangfire messages that make workers run jobs. New ones name <see cref="IJobPerformer"/> (in Storage, so the
/// API enqueues without knowing the worker); those that databases already hold name the worker's
/// <see cref="JobPerformer"/> class, and must still run after an upgrade.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class JobQueueFacts(ServerFixture f)
{
    [Fact]
    public async Task Submit_EnqueuesAMessageNamingIJobPerformer()
    {
        var id = (await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "true" } })).GetProperty("id").GetString()!;
        await f.Api.WaitForFinalAsync(id);
        var hangfireId = (await f.App.Services.GetRequiredService<JobStore>().GetAsync(Guid.Parse(id), CancellationToken.None))!.HangfireJobId!;
        using var connection = f.App.Services.GetRequiredService<JobStorage>().GetConnection();
        var job = connection.GetJobData(hangfireId)!.Job;
        Assert.Equal(typeof(IJobPerformer), job.Type);
        // The synchronous method: Hangfire calls it on its worker thread, which waits for the job without spinning
        // (QuietWait), instead of starting a task-returning one on the thread pool and spinning in two waits for it.
        Assert.Equal(nameof(IJobPerformer.Run), job.Method.Name);
        Assert.Equal(typeof(void), job.Method.ReturnType);
    }

    [Fact]
    public async Task MessageNamingIJobPerformerRunAsync_AsVersionsBeforeRunEnqueued_StillRunsTheJob()
    {
        var hangfireId = await RunOldMessageAsync("async message",
            (client, id) => client.Create<IJobPerformer>(p => p.RunAsync(id, "async message", CancellationToken.None), new EnqueuedState("default")));
        using var connection = f.App.Services.GetRequiredService<JobStorage>().GetConnection();
        Assert.Equal(nameof(IJobPerformer.RunAsync), connection.GetJobData(hangfireId)!.Job.Method.Name);
    }

    [Fact]
    public async Task MessageNamingTheWorkersClass_AsOlderVersionsEnqueued_StillRunsTheJob()
    {
        // Exactly what versions before IJobPerformer enqueued: serialized as "BatchRunner.Server.Execution.JobPerformer, batchrunner".
        var hangfireId = await RunOldMessageAsync("old message",
            (client, id) => client.Create<JobPerformer>(p => p.RunAsync(id, "old message", CancellationToken.None), new EnqueuedState("default")));
        using var connection = f.App.Services.GetRequiredService<JobStorage>().GetConnection();
        Assert.Equal(typeof(JobPerformer), connection.GetJobData(hangfireId)!.Job.Type);
    }

    /// <summary>A stored job that echoes <paramref name="text"/>, whose message <paramref name="create"/> makes as an older
    /// version did: it runs to success with that output. Returns the message's id.</summary>
    private async Task<string> RunOldMessageAsync(string text, Func<IBackgroundJobClient, Guid, string> create)
    {
        var store = f.App.Services.GetRequiredService<JobStore>();
        var spec = JobSpecValidator.Validate(new JobSubmission { Image = f.Busybox, Command = ["/bin/sh", "-c", "echo " + text] }).Spec!;
        var id = Guid.CreateVersion7();
        await store.InsertAsync(new JobRecord { Id = id, Image = spec.Image, Queue = spec.Queue, Spec = spec, State = JobState.Queued, CreatedAt = DateTimeOffset.UtcNow },
            null, text.Replace(' ', '-'), CancellationToken.None);
        var hangfireId = create(f.App.Services.GetRequiredService<IBackgroundJobClient>(), id);
        await store.SetHangfireJobIdAsync(id, hangfireId, CancellationToken.None);

        var done = await f.Api.WaitForFinalAsync(id.ToString());
        Assert.Equal("succeeded", done.GetProperty("state").GetString());
        Assert.Equal(text + "\n", await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs?stream=stdout"));
        return hangfireId;
    }

    /// <summary>
    /// Hangfire's client blocks its thread for a round trip: the queue makes its calls on <see cref="HangfireCalls"/>'
    /// threads, so that a submit load cannot starve the thread pool (2026-11-30: 8 submitters on 2 cores held every
    /// connection of the pool in transactions waiting for the pool's threads, and the API answered 503).
    /// </summary>
    [Fact]
    public async Task HangfiresCalls_RunOffTheThreadPool()
    {
        var services = f.App.Services;
        var store = services.GetRequiredService<JobStore>();
        var client = new ThreadRecordingClient(services.GetRequiredService<IBackgroundJobClient>());
        var queue = new JobQueue(client, services.GetRequiredService<JobStorage>(), store, services.GetRequiredService<Npgsql.NpgsqlDataSource>(),
            services.GetRequiredService<HangfireCalls>());
        var spec = JobSpecValidator.Validate(new JobSubmission { Image = f.Busybox, Command = ["sleep", "60"] }).Spec!;
        var job = JobRecord.New(spec);
        await store.InsertAsync(job, null, "threads", CancellationToken.None);

        Assert.NotNull(await queue.CreateAcceptedAsync(job, TimeSpan.FromSeconds(20)));
        await queue.CancelAsync(job.Id, tenant: null, CancellationToken.None);

        Assert.Equal(["create", "change state"], client.Calls.Select(c => c.Call));
        Assert.All(client.Calls, c => Assert.False(c.OnPool, $"{c.Call} ran on a thread-pool thread"));
        Assert.All(client.Calls, c => Assert.StartsWith("Hangfire call ", c.Thread));
        Assert.Equal("cancelled", (await f.Api.WaitForFinalAsync(job.Id.ToString())).GetProperty("state").GetString());
    }

    [Fact]
    public async Task Enqueue_RecordsTheMessagesIdInTheTransactionThatCreatesIt_AndWakesTheSweeperForAJobThatMovedOn()
    {
        var services = f.App.Services;
        var db = services.GetRequiredService<Npgsql.NpgsqlDataSource>();
        var signal = new WorkflowSignal();
        var woken = signal.Subscribe();
        var store = new JobStore(db, signal);
        // A call thread of its own, so that the round trips counted are this enqueue's.
        using var calls = new HangfireCalls(1);
        var thread = await calls.RunAsync(() => Environment.CurrentManagedThreadId);
        var queue = new JobQueue(services.GetRequiredService<IBackgroundJobClient>(), services.GetRequiredService<JobStorage>(), store, db, calls);
        var spec = JobSpecValidator.Validate(new JobSubmission { Image = f.Busybox, Command = ["true"] }).Spec!;
        var job = JobRecord.New(spec);
        await store.InsertAsync(job, null, "recorded", CancellationToken.None);
        // The job moved on before its message existed (what a dependency's end does to a waiting job): its flag is set.
        await using (var cmd = db.CreateCommand($"update batchrunner.jobs set hangfire_sync = true where id = '{job.Id}'"))
            await cmd.ExecuteNonQueryAsync();

        var trips = new List<string>();
        var ownUpdates = 0;
        using (var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = s => s.Name == "Npgsql",
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllData,
            ActivityStopped = a =>
            {
                var text = a.GetTagItem("db.query.text") as string ?? a.DisplayName;
                if (Environment.CurrentManagedThreadId == thread) lock (trips) trips.Add(text);
                // The record of the id as a statement of its own, on whichever thread (the queue's caller made it before).
                if (text.TrimStart().StartsWith("update batchrunner.jobs set hangfire_job_id", StringComparison.Ordinal)) Interlocked.Increment(ref ownUpdates);
            },
        })
        {
            System.Diagnostics.ActivitySource.AddActivityListener(listener);
            var hangfireId = await queue.EnqueueAsync(job.Id, job.DisplayName, job.Queue, job.Tenant, CancellationToken.None);
            Assert.Equal(hangfireId, (await store.GetAsync(job.Id, CancellationToken.None))!.HangfireJobId);
        }

        // The message's creation (the job's insert, then its first state's batch, which records the id too): no update of
        // its own after them.
        Assert.Equal(2, trips.Count);
        Assert.Equal(0, Volatile.Read(ref ownUpdates));
        Assert.True(await woken.WaitAsync(TimeSpan.Zero, CancellationToken.None));
        Assert.Equal("succeeded", (await f.Api.WaitForFinalAsync(job.Id.ToString())).GetProperty("state").GetString());
    }

    /// <summary>The real client, noting which thread each call ran on.</summary>
    private sealed class ThreadRecordingClient(IBackgroundJobClient inner) : IBackgroundJobClient
    {
        public List<(string Call, bool OnPool, string? Thread)> Calls { get; } = [];

        public string Create(Job job, IState state)
        {
            Note("create");
            return inner.Create(job, state);
        }

        public bool ChangeState(string jobId, IState state, string expectedState)
        {
            Note("change state");
            return inner.ChangeState(jobId, state, expectedState);
        }

        private void Note(string call)
        {
            lock (Calls) Calls.Add((call, Thread.CurrentThread.IsThreadPoolThread, Thread.CurrentThread.Name));
        }
    }
}
