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
    private static readonly ActivitySource Source = new("BatchRunner.Tests.RoundTrips");

    /// <summary>Runs <paramref name="call"/> and counts the Npgsql commands and batches it started.</summary>
    private static async Task<(T Result, int RoundTrips)> CountAsync<T>(Func<Task<T>> call)
    {
        var count = 0;
        Activity? root = null;
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name is "Npgsql" || s == Source,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllData,
            // Within the call's trace (its activity is the ambient one the commands start under); the server's background
            // work runs in traces of its own.
            ActivityStarted = a =>
            {
                if (a.Source.Name == "Npgsql" && root is not null && a.TraceId == root.TraceId) Interlocked.Increment(ref count);
            },
        };
        ActivitySource.AddActivityListener(listener);
        using (root = Source.StartActivity("call")!)
        {
            var result = await call();
            return (result, count);
        }
    }

    [Fact]
    public async Task GetDocument_ReadsTheJobAndAllItsDocumentShows_InOneRoundTrip()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "echo out > /outputs/a.txt" } });
        await f.Api.WaitForFinalAsync(id);
        var store = f.App.Services.GetRequiredService<JobStore>();
        var jobId = Guid.Parse(id);

        var (document, trips) = await CountAsync(() => store.GetDocumentAsync(jobId, tenant: null, CancellationToken.None));

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
