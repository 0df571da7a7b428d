using BatchRunner.Core;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.DependencyInjection;
using static BatchRunner.Testing.BatchRunnerClient;

namespace BatchRunner.Server.Tests.Workflows;

/// <summary>
/// The stranded-job rescue (a job whose API died before creating its Hangfire message gets one from the nodes) must not
/// enqueue an array's undispatched children: they wait for a slot of their array on purpose. Against the shared server's
/// PostgreSQL.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class StrandedJobsFacts(ServerFixture f)
{
    [Fact]
    public async Task StrandedJobs_LeavesUndispatchedChildren_ButFindsAJobWhoseMessageWasNeverCreated()
    {
        var array = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "30" }, resources = new { cpus = 0.1 }, array = new { size = 6, parallelism = 1 } });
        await f.Api.WaitAsync(array, j => j.GetProperty("array").GetProperty("counts").GetProperty("running").GetInt32() == 1, what: "one child running");
        // What an API that died between storing a job and enqueuing it leaves: a queued row without a message.
        var store = f.App.Services.GetRequiredService<JobStore>();
        var spec = JobSpecValidator.Validate(new JobSubmission { Image = f.Busybox, Command = ["true"] }).Spec!;
        var stranded = JobRecord.New(spec);
        await store.InsertAsync(stranded, null, "stranded", CancellationToken.None);
        try
        {
            var found = await f.App.Services.GetRequiredService<NodeStore>().StrandedJobsAsync(TimeSpan.Zero, CancellationToken.None);

            Assert.Contains(found, s => s.Id == stranded.Id);
            var children = (await f.Api.ChildrenAsync(array)).Select(c => Guid.Parse(Id(c))).ToHashSet();
            Assert.Equal(6, children.Count);
            Assert.DoesNotContain(found, s => children.Contains(s.Id) || s.Id == Guid.Parse(array));
        }
        finally
        {
            await f.Api.CancelAsync(stranded.Id.ToString());
            await f.Api.CancelAsync(array);
            await f.Api.WaitForFinalAsync(array);
        }
    }
}
