using BatchRunner.Core;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Storage;
using Hangfire;
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
        Assert.Equal(typeof(IJobPerformer), connection.GetJobData(hangfireId)!.Job.Type);
    }

    [Fact]
    public async Task MessageNamingTheWorkersClass_AsOlderVersionsEnqueued_StillRunsTheJob()
    {
        var store = f.App.Services.GetRequiredService<JobStore>();
        var spec = JobSpecValidator.Validate(new JobSubmission { Image = f.Busybox, Command = ["/bin/sh", "-c", "echo old message"] }).Spec!;
        var id = Guid.CreateVersion7();
        await store.InsertAsync(new JobRecord { Id = id, Image = spec.Image, Queue = spec.Queue, Spec = spec, State = JobState.Queued, CreatedAt = DateTimeOffset.UtcNow },
            null, "old-message", CancellationToken.None);
        // Exactly what versions before IJobPerformer enqueued: serialized as "BatchRunner.Server.Execution.JobPerformer, batchrunner".
        var hangfireId = f.App.Services.GetRequiredService<IBackgroundJobClient>()
            .Create<JobPerformer>(p => p.RunAsync(id, "old message", CancellationToken.None), new EnqueuedState("default"));
        await store.SetHangfireJobIdAsync(id, hangfireId, CancellationToken.None);

        var done = await f.Api.WaitForFinalAsync(id.ToString());
        Assert.Equal("succeeded", done.GetProperty("state").GetString());
        Assert.Equal("old message\n", await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs?stream=stdout"));
        using var connection = f.App.Services.GetRequiredService<JobStorage>().GetConnection();
        Assert.Equal(typeof(JobPerformer), connection.GetJobData(hangfireId)!.Job.Type);
    }
}
