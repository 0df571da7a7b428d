using System.Diagnostics;
using BatchRunner.Core;
using BatchRunner.Server.Storage;
using Hangfire;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Server.Tests;

/// <summary>
/// Database round trips of the API's hottest requests (issue 14's latency figures): each is counted as the Npgsql
/// commands and batches started within one call, so that background work of the fixture's server is not counted.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class RequestRoundTripsFacts(ServerFixture f)
{
    /// <summary>Runs <paramref name="call"/> on a store of its own data source and counts the Npgsql commands and batches
    /// that data source ran (Npgsql's activities, named by the data source): no other work of the server is counted.</summary>
    private async Task<(T Result, int RoundTrips)> CountAsync<T>(Func<JobStore, Task<T>> call, WorkflowSignal? signal = null)
    {
        var name = "round-trips-" + Guid.NewGuid().ToString("N")[..8];
        var shared = f.App.Services.GetRequiredService<Npgsql.NpgsqlDataSource>();
        var builder = new Npgsql.NpgsqlDataSourceBuilder(shared.ConnectionString) { Name = name };
        await using var db = builder.Build();
        // Its first connection reads the database's types: not the call's.
        await using (await db.OpenConnectionAsync()) { }
        var count = 0;
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == "Npgsql",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllData,
            ActivityStopped = a =>
            {
                if (a.GetTagItem("db.npgsql.data_source") as string == name) Interlocked.Increment(ref count);
            },
        };
        ActivitySource.AddActivityListener(listener);
        var result = await call(new JobStore(db, signal));
        return (result, Volatile.Read(ref count));
    }

    [Fact]
    public async Task GetDocument_ReadsTheJobAndAllItsDocumentShows_InOneRoundTrip()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "echo out > /outputs/a.txt" } });
        await f.Api.WaitForFinalAsync(id);
        var store = f.App.Services.GetRequiredService<JobStore>();
        var jobId = Guid.Parse(id);

        var (document, trips) = await CountAsync(s => s.GetDocumentAsync(jobId, tenant: null, CancellationToken.None));

        Assert.Equal(1, trips);
        Assert.NotNull(document);
        // The same as the separate reads it replaces.
        var job = (await store.GetAsync(jobId, CancellationToken.None))!;
        Assert.Equal(job.State, document.Job.State);
        Assert.Equal(["a.txt"], document.Job.Outputs.Select(o => o.Path));
        Assert.Equal((await store.GetAttemptsAsync(jobId, CancellationToken.None)).Select(a => (a.Attempt, a.State)), document.Attempts.Select(a => (a.Attempt, a.State)));
        Assert.Single(document.Attempts);
        Assert.True(document.NodeAlive[jobId]);
        Assert.Empty(document.ChildCounts);
        // Another tenant's job is not found, whatever else the batch read.
        Assert.Null(await store.GetDocumentAsync(jobId, tenant: "someone-else", CancellationToken.None));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task InsertRows_ChecksTheTenantsQueuedLimitInTheInsert_WhenAskedTo(bool limited)
    {
        // A submission's row goes in with one statement that also checks its tenant has no maxQueuedJobs; a tenant with
        // one gets nothing inserted by it (and takes the serialised check, QuotaFacts).
        var tenant = "insert-guard-" + Guid.NewGuid().ToString("N")[..6];
        await f.Api.PutTenantAsync(tenant, limited ? new { maxQueuedJobs = 100 } : new { });
        var spec = JobSpecValidator.Validate(new JobSubmission { Image = f.Busybox, Command = ["true"] }).Spec!;
        var job = new JobRecord { Id = Guid.CreateVersion7(), Image = spec.Image, Queue = spec.Queue, Spec = spec, State = JobState.Queued, CreatedAt = DateTimeOffset.UtcNow, Tenant = tenant };
        var db = f.App.Services.GetRequiredService<Npgsql.NpgsqlDataSource>();
        var store = f.App.Services.GetRequiredService<JobStore>();
        await using (var conn = await db.OpenConnectionAsync())
        await using (var tx = await conn.BeginTransactionAsync())
        {
            Assert.Equal(!limited, await JobStore.InsertRowsAsync(conn, tx, job, CancellationToken.None, onlyIfTenantUnlimited: true));
            await tx.CommitAsync();
        }
        Assert.Equal(limited ? null : JobState.Queued, await store.GetStateAsync(job.Id, CancellationToken.None));
        if (!limited) await store.RequestCancelAsync(job.Id, tenant: null, CancellationToken.None);
    }

    /// <summary>A job's rows alone (no Hangfire message: no worker takes it), to be begun and finished by hand as a worker would.</summary>
    private async Task<JobRecord> InsertQueuedAsync(Guid? dependsOn = null, byte[]? protectedSecrets = null)
    {
        var spec = JobSpecValidator.Validate(new JobSubmission { Image = f.Busybox, Command = ["true"] }).Spec!;
        if (dependsOn is { } d) spec = spec with { DependsOn = [new JobDependency(d, DependencyCondition.Finished)] };
        var job = new JobRecord { Id = Guid.CreateVersion7(), Image = spec.Image, Queue = spec.Queue, Spec = spec, State = dependsOn is null ? JobState.Queued : JobState.Waiting,
            CreatedAt = DateTimeOffset.UtcNow, ProtectedSecrets = protectedSecrets };
        var db = f.App.Services.GetRequiredService<Npgsql.NpgsqlDataSource>();
        await using var conn = await db.OpenConnectionAsync();
        await using var tx = await conn.BeginTransactionAsync();
        Assert.True(await JobStore.InsertRowsAsync(conn, tx, job, CancellationToken.None));
        await tx.CommitAsync();
        return job;
    }

    [Fact]
    public async Task GetForAttempt_SaysWhetherTheJobHasSecrets_SoThatAJobWithoutSkipsTheirRead()
    {
        var plain = await InsertQueuedAsync();
        var withSecrets = await InsertQueuedAsync(protectedSecrets: [1, 2, 3]);
        var store = f.App.Services.GetRequiredService<JobStore>();

        Assert.False((await store.GetForAttemptAsync(plain.Id, CancellationToken.None))!.HasSecrets);
        Assert.True((await store.GetForAttemptAsync(withSecrets.Id, CancellationToken.None))!.HasSecrets);
        // Read any other way, a job is never taken for one without secrets.
        Assert.True((await store.GetAsync(plain.Id, CancellationToken.None))!.HasSecrets);
    }

    [Fact]
    public async Task BeginAndFinish_TakeOneRoundTripEach_AndWakeNoSweeper_ForAJobThatNothingWaitsFor()
    {
        var store = f.App.Services.GetRequiredService<JobStore>();
        var job = await InsertQueuedAsync();
        var signal = new WorkflowSignal();
        var woken = signal.Subscribe();

        var (start, beginTrips) = await CountAsync(s => s.BeginAttemptAsync(job.Id, "round-trips-node", Guid.NewGuid(), job.Queue, null, CancellationToken.None));
        var begun = Assert.IsType<AttemptStart.Started>(start);
        Assert.Equal((1, 0, 1), (begun.Attempt, begun.LostAttempts, beginTrips));
        Assert.Equal(JobState.Starting, await store.GetStateAsync(job.Id, CancellationToken.None));
        var outcome = new JobOutcome(JobState.Succeeded, null, "exited with code 0", 0, null, []);

        var (finished, trips) = await CountAsync(s => s.FinishAsync(job.Id, begun.Attempt, outcome, CancellationToken.None), signal);

        // The record alone: whether anything depends on the job comes back with it (its row's has_dependents).
        Assert.True(finished);
        Assert.Equal(1, trips);
        Assert.False(await woken.WaitAsync(TimeSpan.Zero, CancellationToken.None));
        Assert.Equal(JobState.Succeeded, await store.GetStateAsync(job.Id, CancellationToken.None));
        Assert.Equal((JobState.Succeeded, 0), (await store.GetAttemptsAsync(job.Id, CancellationToken.None)).Select(a => (a.State, a.ExitCode ?? -1)).Single());
        // Fenced as before: the ended job takes no other end, and its attempt keeps the one it has.
        Assert.False(await store.FinishAsync(job.Id, begun.Attempt, outcome with { State = JobState.Failed, Reason = "exit_code", ExitCode = 3 }, CancellationToken.None));
        Assert.Equal((JobState.Succeeded, 0), (await store.GetAttemptsAsync(job.Id, CancellationToken.None)).Select(a => (a.State, a.ExitCode ?? -1)).Single());
        await store.DeleteFinishedAsync(job.Id, tenant: null, CancellationToken.None);
    }

    [Fact]
    public async Task Finish_WakesTheSweeper_WhenAJobDependsOnTheOneThatEnded()
    {
        var store = f.App.Services.GetRequiredService<JobStore>();
        var job = await InsertQueuedAsync();
        var dependent = await InsertQueuedAsync(dependsOn: job.Id);
        var signal = new WorkflowSignal();
        var woken = signal.Subscribe();
        var begun = Assert.IsType<AttemptStart.Started>(await store.BeginAttemptAsync(job.Id, "round-trips-node", Guid.NewGuid(), job.Queue, null, CancellationToken.None));

        var (finished, _) = await CountAsync(s => s.FinishAsync(job.Id, begun.Attempt, new JobOutcome(JobState.Succeeded, null, null, 0, null, []), CancellationToken.None), signal);

        Assert.True(finished);
        Assert.True(await woken.WaitAsync(TimeSpan.Zero, CancellationToken.None));
        // The fixture's own sweeper moves the dependent on (its server's signal was not pulsed: within its tick).
        await store.RequestCancelAsync(dependent.Id, tenant: null, CancellationToken.None);
        await store.DeleteFinishedAsync(job.Id, tenant: null, CancellationToken.None);
    }

    [Fact]
    public async Task Finish_WakesTheSweeper_WhenADependentsSubmissionCommitsWhileTheEndWaitsForTheRow()
    {
        var store = f.App.Services.GetRequiredService<JobStore>();
        var job = await InsertQueuedAsync();
        var begun = Assert.IsType<AttemptStart.Started>(await store.BeginAttemptAsync(job.Id, "round-trips-node", Guid.NewGuid(), job.Queue, null, CancellationToken.None));
        var signal = new WorkflowSignal();
        var woken = signal.Subscribe();
        var db = f.App.Services.GetRequiredService<Npgsql.NpgsqlDataSource>();

        // A dependent's submission in flight: its transaction has inserted the dependency and set the flag (what
        // InsertDependenciesAsync does), not yet committed. The end waits for the row, then returns the committed flag.
        Guid dependent;
        await using (var conn = await db.OpenConnectionAsync())
        await using (var tx = await conn.BeginTransactionAsync())
        {
            dependent = (await InsertQueuedAsync()).Id;
            await using (var cmd = new Npgsql.NpgsqlCommand("""
                insert into batchrunner.job_dependencies (job_id, depends_on, condition) values (@d, @j, 'succeeded');
                update batchrunner.jobs set has_dependents = true where id = @j;
                """, conn, tx))
            {
                cmd.Parameters.AddWithValue("d", dependent);
                cmd.Parameters.AddWithValue("j", job.Id);
                await cmd.ExecuteNonQueryAsync();
            }
            var finishing = new JobStore(db, signal).FinishAsync(job.Id, begun.Attempt, new JobOutcome(JobState.Succeeded, null, null, 0, null, []), CancellationToken.None);
            await Task.Delay(300);
            Assert.False(finishing.IsCompleted);
            await tx.CommitAsync();
            Assert.True(await finishing.WaitAsync(TimeSpan.FromSeconds(10)));
        }

        Assert.True(await woken.WaitAsync(TimeSpan.Zero, CancellationToken.None));
        await store.RequestCancelAsync(dependent, tenant: null, CancellationToken.None);
        await store.DeleteFinishedAsync(job.Id, tenant: null, CancellationToken.None);
    }

    [Fact]
    public async Task Submit_StoresNoCultureWithTheMessage()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" } });
        var hangfireId = (await f.App.Services.GetRequiredService<JobStore>().GetAsync(Guid.Parse(id), CancellationToken.None))!.HangfireJobId!;
        using var connection = f.App.Services.GetRequiredService<JobStorage>().GetConnection();
        Assert.Null(connection.GetJobParameter(hangfireId, "CurrentCulture"));
        Assert.Equal("succeeded", (await f.Api.WaitForFinalAsync(id)).GetProperty("state").GetString());
    }
}
