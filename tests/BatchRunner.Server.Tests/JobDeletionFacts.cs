using System.Net;
using System.Text;
using System.Text.Json;
using BatchRunner.Oci.Snapshots;
using BatchRunner.Runtime;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Server.Tests;

/// <summary>
/// DELETE /api/v1/jobs/{id} and retention on a real server (API and worker in one process, real PostgreSQL, runc):
/// every file of the job (logs, outputs, unpacked inputs, the inputs tar), its record, its attempts, outputs rows,
/// idempotency key and Hangfire message go; an unfinished job is refused.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class JobDeletionFacts(ServerFixture f)
{
    private NpgsqlDataSource Db => f.App.Services.GetRequiredService<NpgsqlDataSource>();
    private string JobDir(string id) => Path.Combine(f.DataDir, "jobs", Guid.Parse(id).ToString("N"));
    private string InputsTar(string digest) => Path.Combine(f.DataDir, "inputs", "sha256", digest["sha256:".Length..]);

    [Fact]
    public async Task Delete_RemovesTheRecordAndEveryFile_WhenTheJobHasEnded()
    {
        var id = await PostWithInputAsync("delete-me", new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "cat /inputs/in.txt; echo err >&2; mkdir /outputs/d; echo out > /outputs/d/o.txt" },
        }, idempotencyKey: "delete-" + Guid.NewGuid().ToString("N"));
        Assert.Equal("delete-me\n", await f.Api.SucceededStdoutAsync(id));
        var digest = await ScalarAsync<string>("select inputs_digest from batchrunner.jobs where id = @id", id);
        var hangfireId = await ScalarAsync<string>("select hangfire_job_id from batchrunner.jobs where id = @id", id);
        Assert.True(File.Exists(Path.Combine(JobDir(id), "inputs", "in.txt")));
        Assert.True(File.Exists(Path.Combine(JobDir(id), "outputs", "d", "o.txt")));
        Assert.True(File.Exists(Path.Combine(JobDir(id), "stderr.log")));
        Assert.True(File.Exists(InputsTar(digest)));
        var disk = f.App.Services.GetRequiredService<DiskUsagePublisher>();
        disk.Publish();
        var before = Gauges();

        var response = await f.Client.DeleteAsync($"/api/v1/jobs/{id}");

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.GetAsync($"/api/v1/jobs/{id}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.GetAsync($"/api/v1/jobs/{id}/logs")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.GetAsync($"/api/v1/jobs/{id}/outputs/d/o.txt")).StatusCode);
        Assert.False(Directory.Exists(JobDir(id)));
        Assert.False(File.Exists(InputsTar(digest)));
        foreach (var table in new[] { "jobs where id", "attempts where job_id", "outputs where job_id", "idempotency_keys where job_id", "file_removals where job_id" })
            Assert.Equal(0L, await ScalarAsync<long>($"select count(*) from batchrunner.{table} = @id", id));
        Assert.Equal(0L, await ScalarAsync<long>("select count(*) from hangfire.job where id = @hf", id, ("hf", long.Parse(hangfireId))));
        Assert.Equal(0L, await ScalarAsync<long>("select count(*) from hangfire.state where jobid = @hf", id, ("hf", long.Parse(hangfireId))));
        disk.Publish();
        var after = Gauges();
        Assert.True(after.Logs < before.Logs && after.Outputs < before.Outputs && after.Inputs < before.Inputs, $"{before} → {after}");
        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.DeleteAsync($"/api/v1/jobs/{id}")).StatusCode);
    }

    [Fact]
    public async Task Delete_Refuses_WhileTheJobRuns_AndKeepsItsFiles()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "echo started; sleep 60" } });
        await f.Api.WaitAsync(id, j => BatchRunnerClient.State(j) == "running", what: "running");

        var response = await f.Client.DeleteAsync($"/api/v1/jobs/{id}");

        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Contains("is running", problem.GetProperty("detail").GetString());
        Assert.Equal("running", BatchRunnerClient.State(await f.Api.GetJobAsync(id)));
        Assert.True(Directory.Exists(JobDir(id)));
        await f.Api.CancelAsync(id);
        await f.Api.WaitForFinalAsync(id);
        Assert.Equal(HttpStatusCode.NoContent, (await f.Client.DeleteAsync($"/api/v1/jobs/{id}")).StatusCode);
        Assert.False(Directory.Exists(JobDir(id)));
    }

    [Fact]
    public async Task Delete_RemovesTheRunDirectoryAndDiskOfAnAttempt_WhenItsReleaseFailed()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" } });
        Assert.Equal("succeeded", BatchRunnerClient.State(await f.Api.WaitForFinalAsync(id)));
        // What a release that failed leaves behind: the attempt's run directory with its job disk still mounted.
        var container = f.App.Services.GetRequiredService<NodeIdentity>().ContainerId(Guid.Parse(id), 1);
        var runDir = Path.Combine(f.DataDir, "run", container);
        // The attempt's own release follows its final record (README, "When a job's end becomes visible"): let it finish.
        await Poll.UntilAsync(() => !Directory.Exists(runDir), TimeSpan.FromSeconds(10), "the attempt's own release");
        Directory.CreateDirectory(runDir);
        var volume = await f.App.Services.GetRequiredService<IDiskVolumes>().CreateAsync(runDir, 8L << 20, CancellationToken.None);
        try
        {
            File.WriteAllText(Path.Combine(volume.Path, "left.txt"), "left");
            Assert.True(MountCleanup.IsMountPoint(volume.Path));

            Assert.Equal(HttpStatusCode.NoContent, (await f.Client.DeleteAsync($"/api/v1/jobs/{id}")).StatusCode);

            Assert.False(MountCleanup.MountPoints().Any(p => p.StartsWith(runDir + "/", StringComparison.Ordinal)), "the job disk is unmounted");
            Assert.False(Directory.Exists(runDir));
            Assert.Equal(0L, await ScalarAsync<long>("select count(*) from batchrunner.file_removals where job_id = @id", id));
        }
        finally
        {
            try { await volume.DisposeAsync(); } catch (IOException) { } // gone already when the test passed
        }
    }

    [Fact]
    public async Task Delete_KeepsAnInputsTar_WhileAnotherJobUsesTheSameInputs()
    {
        var content = "shared " + Guid.NewGuid().ToString("N");
        var first = await PostWithInputAsync(content, new { image = f.Busybox, command = new[] { "cat", "/inputs/in.txt" } });
        var second = await PostWithInputAsync(content, new { image = f.Busybox, command = new[] { "cat", "/inputs/in.txt" } });
        await f.Api.WaitForFinalAsync(first);
        await f.Api.WaitForFinalAsync(second);
        var digest = await ScalarAsync<string>("select inputs_digest from batchrunner.jobs where id = @id", first);
        Assert.Equal(digest, await ScalarAsync<string>("select inputs_digest from batchrunner.jobs where id = @id", second));

        Assert.Equal(HttpStatusCode.NoContent, (await f.Client.DeleteAsync($"/api/v1/jobs/{first}")).StatusCode);
        Assert.True(File.Exists(InputsTar(digest)));
        Assert.Equal(content + "\n", await f.Api.LogsAsync(second));

        Assert.Equal(HttpStatusCode.NoContent, (await f.Client.DeleteAsync($"/api/v1/jobs/{second}")).StatusCode);
        Assert.False(File.Exists(InputsTar(digest)));
    }

    [Fact]
    public async Task Delete_KeepsTheInputsTar_WhileARerunOfTheDeletedJobNamesIt()
    {
        var content = "rerun " + Guid.NewGuid().ToString("N");
        var original = await PostWithInputAsync(content, new { image = f.Busybox, command = new[] { "cat", "/inputs/in.txt" } });
        Assert.Equal(content + "\n", await f.Api.SucceededStdoutAsync(original));
        var digest = await ScalarAsync<string>("select inputs_digest from batchrunner.jobs where id = @id", original);
        var rerun = BatchRunnerClient.Id(await BatchRunnerClient.CreatedAsync(await f.Api.RerunAsync(original)));
        Assert.Equal(digest, await ScalarAsync<string>("select inputs_digest from batchrunner.jobs where id = @id", rerun));

        Assert.Equal(HttpStatusCode.NoContent, (await f.Client.DeleteAsync($"/api/v1/jobs/{original}")).StatusCode);
        Assert.True(File.Exists(InputsTar(digest)));
        Assert.Equal(content + "\n", await f.Api.SucceededStdoutAsync(rerun));
        // A rerun of a deleted job is not found, like the job.
        Assert.Equal(HttpStatusCode.NotFound, (await f.Api.RerunAsync(original)).StatusCode);

        Assert.Equal(HttpStatusCode.NoContent, (await f.Client.DeleteAsync($"/api/v1/jobs/{rerun}")).StatusCode);
        Assert.False(File.Exists(InputsTar(digest)));
    }

    [Fact]
    public async Task RetentionSweep_DeletesJobsFinishedLongerAgo_AndTheirFiles_KeepingNewerOnes()
    {
        var old = await PostWithInputAsync("old", new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "cat /inputs/in.txt; echo o > /outputs/o.txt" } });
        var recent = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "echo", "recent" } });
        await f.Api.WaitForFinalAsync(old);
        await f.Api.WaitForFinalAsync(recent);
        var digest = await ScalarAsync<string>("select inputs_digest from batchrunner.jobs where id = @id", old);
        // Eight days ago, by the database's clock; every other job of this server finished minutes ago at most.
        await ScalarAsync<int>("update batchrunner.jobs set finished_at = now() - interval '8 days' where id = @id returning 1", old);

        await f.App.Services.GetRequiredService<JobFilesSweeper>().SweepAsync(TimeSpan.FromDays(7), CancellationToken.None);

        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.GetAsync($"/api/v1/jobs/{old}")).StatusCode);
        Assert.False(Directory.Exists(JobDir(old)));
        Assert.False(File.Exists(InputsTar(digest)));
        Assert.Equal(0L, await ScalarAsync<long>("select count(*) from batchrunner.file_removals where job_id = @id", old));
        Assert.Equal("succeeded", BatchRunnerClient.State(await f.Api.GetJobAsync(recent)));
        Assert.True(Directory.Exists(JobDir(recent)));
    }

    private async Task<string> PostWithInputAsync(string input, object spec, string? idempotencyKey = null)
    {
        using var form = new MultipartFormDataContent
        {
            { new StringContent(JsonSerializer.Serialize(spec, BatchRunnerClient.Json), Encoding.UTF8, "application/json"), "spec" },
            { new ByteArrayContent(Encoding.UTF8.GetBytes(input + "\n")), "file", "in.txt" },
        };
        using var request = new HttpRequestMessage(HttpMethod.Post, "/api/v1/jobs") { Content = form };
        if (idempotencyKey is not null) request.Headers.Add("Idempotency-Key", idempotencyKey);
        return BatchRunnerClient.Id(await BatchRunnerClient.CreatedAsync(await f.Client.SendAsync(request)));
    }

    private async Task<T> ScalarAsync<T>(string sql, string id, params (string Name, object Value)[] more)
    {
        await using var cmd = Db.CreateCommand(sql);
        cmd.Parameters.AddWithValue("id", Guid.Parse(id));
        foreach (var (name, value) in more) cmd.Parameters.AddWithValue(name, value);
        return (T)(await cmd.ExecuteScalarAsync())!;
    }

    private (double Logs, double Outputs, double Inputs) Gauges()
    {
        var node = f.App.Services.GetRequiredService<BatchRunner.Server.Nodes.NodeIdentity>().Name;
        return (DiskUsagePublisher.DiskBytes.WithLabels(node, "logs").Value,
            DiskUsagePublisher.DiskBytes.WithLabels(node, "outputs").Value,
            DiskUsagePublisher.DiskBytes.WithLabels(node, "inputs").Value);
    }
}
