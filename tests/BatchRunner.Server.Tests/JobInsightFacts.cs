using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Server.Tests;

/// <summary>
/// Seeing what a job is doing and what it was (issue 19, item 5): usage while it runs, the inputs it was given, and a
/// rerun pinned to the image digest it ran with.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class JobInsightFacts(ServerFixture f)
{
    [Fact]
    public async Task Usage_IsFilledWhileTheJobRuns_InTheJobAndInTheList()
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "while true; do :; done" },
            labels = new { run = tag },
            stopGraceSeconds = 0,
            resources = new { cpus = 0.3, memory = "32Mi" },
        });
        var running = await f.Api.WaitAsync(id, j => BatchRunnerClient.State(j) == "running" && j.GetProperty("usage").ValueKind == JsonValueKind.Object
            && j.GetProperty("usage").GetProperty("cpuSeconds").GetDouble() > 0.05, TimeSpan.FromSeconds(30), "usage while running");
        var usage = running.GetProperty("usage");
        Assert.True(usage.GetProperty("memoryBytes").GetInt64() > 0);
        Assert.True(usage.GetProperty("maxMemoryBytes").GetInt64() >= usage.GetProperty("memoryBytes").GetInt64());
        Assert.True(usage.GetProperty("sampledAt").GetDateTimeOffset() > DateTimeOffset.UtcNow.AddMinutes(-1));

        // The figures move on while it runs, and lists show them too.
        var first = usage.GetProperty("cpuSeconds").GetDouble();
        await f.Api.WaitAsync(id, j => j.GetProperty("usage").GetProperty("cpuSeconds").GetDouble() > first, TimeSpan.FromSeconds(15), "usage to grow");
        var listed = JsonDocument.Parse(await f.Client.GetStringAsync($"/api/v1/jobs?label=run%3D{tag}&view=summary")).RootElement.GetProperty("items")[0];
        Assert.True(listed.GetProperty("usage").GetProperty("cpuSeconds").GetDouble() > 0);

        await f.Api.CancelAsync(id);
        var done = await f.Api.WaitForFinalAsync(id);
        var final = done.GetProperty("usage");
        Assert.True(final.GetProperty("cpuSeconds").GetDouble() >= first);
        Assert.Equal(JsonValueKind.Null, final.GetProperty("sampledAt").ValueKind); // the final figures, not a sample
    }

    [Fact]
    public async Task Rerun_PinsTheImageDigest_GivesTheInputsAgain_AndLinksBack()
    {
        var csv = Encoding.UTF8.GetBytes(string.Join('\n', Enumerable.Range(0, 1000).Select(i => $"{i},{i * i}")) + "\n");
        var sha = Convert.ToHexStringLower(SHA256.HashData(csv));
        var response = await f.Client.PostAsync("/api/v1/jobs", BatchRunnerClient.Multipart(
            new { name = "rerun-me", image = f.Busybox, command = new[] { "/bin/sh", "-c", "sha256sum /inputs/data.csv | cut -d' ' -f1 > /outputs/sum.txt" },
                  labels = new { kind = "rerun" } },
            ("file", "data.csv", csv)));
        var submitted = await BatchRunnerClient.CreatedAsync(response);
        var input = submitted.GetProperty("inputs").EnumerateArray().Single();
        Assert.Equal(("data.csv", (long)csv.Length, sha), (input.GetProperty("path").GetString(), input.GetProperty("size").GetInt64(), input.GetProperty("sha256").GetString()));
        var original = BatchRunnerClient.Id(submitted);
        await f.Api.SucceededStdoutAsync(original);
        Assert.Equal(sha + "\n", await f.Api.OutputAsync(original, "sum.txt"));
        var ran = await f.Api.GetJobAsync(original);
        Assert.Equal(sha, ran.GetProperty("inputs")[0].GetProperty("sha256").GetString());
        var digest = ran.GetProperty("imageDigest").GetString()!;

        var rerunResponse = await f.Api.RerunAsync(original);
        var rerun = await BatchRunnerClient.CreatedAsync(rerunResponse);
        var rerunId = BatchRunnerClient.Id(rerun);
        Assert.Equal($"/api/v1/jobs/{rerunId}", rerunResponse.Headers.Location?.ToString());
        Assert.Equal(original, rerun.GetProperty("rerunOf").GetString());
        Assert.Equal(f.Busybox + "@" + digest, rerun.GetProperty("image").GetString());
        Assert.Equal("rerun-me", rerun.GetProperty("name").GetString());
        Assert.Equal("rerun", rerun.GetProperty("labels").GetProperty("kind").GetString());
        Assert.Equal(sha, rerun.GetProperty("inputs")[0].GetProperty("sha256").GetString());
        await f.Api.SucceededStdoutAsync(rerunId);
        Assert.Equal(sha + "\n", await f.Api.OutputAsync(rerunId, "sum.txt"));
        Assert.Equal(digest, (await f.Api.GetJobAsync(rerunId)).GetProperty("imageDigest").GetString());

        // The rerun's record names the original's inputs tar: the same digest, kept by the same node.
        var store = f.App.Services.GetRequiredService<JobStore>();
        var tar = (await store.GetAsync(Guid.Parse(original), CancellationToken.None))!.InputsTar!;
        Assert.Equal(tar, (await store.GetAsync(Guid.Parse(rerunId), CancellationToken.None))!.InputsTar);

        // The tar gone from its holder (this node), the original's unpacked files still here: packed again from them.
        var inputs = f.App.Services.GetRequiredService<InputsStore>();
        var paths = f.App.Services.GetRequiredService<DataPaths>();
        File.Delete(inputs.PathOf(tar.Digest)!);
        var repacked = await BatchRunnerClient.CreatedAsync(await f.Api.RerunAsync(original));
        var repackedId = BatchRunnerClient.Id(repacked);
        var repackedTar = (await store.GetAsync(Guid.Parse(repackedId), CancellationToken.None))!.InputsTar!;
        Assert.NotNull(inputs.PathOf(repackedTar.Digest));
        await f.Api.SucceededStdoutAsync(repackedId);
        Assert.Equal(sha + "\n", await f.Api.OutputAsync(repackedId, "sum.txt"));

        // Tar and files both gone (retention, by hand): the rerun says so and creates nothing; it never runs without them.
        File.Delete(inputs.PathOf(repackedTar.Digest)!);
        if (inputs.PathOf(tar.Digest) is { } again) File.Delete(again);
        Directory.Delete(paths.Inputs(Guid.Parse(original)), recursive: true);
        var gone = await f.Api.RerunAsync(original);
        Assert.Equal(HttpStatusCode.Conflict, gone.StatusCode);
        Assert.StartsWith($"the inputs of job {original} are no longer stored", await DetailAsync(gone));
        // The rerun ran here, so its own unpacked inputs can still be packed: it can be rerun still.
        Assert.Equal(HttpStatusCode.Created, (await f.Api.RerunAsync(rerunId)).StatusCode);
    }

    [Fact]
    public async Task Rerun_BelongsToTheCallersTenantAndKey_KeepsTheSecrets_AndIs404ForAnotherTenant()
    {
        var tenant = "t-" + Guid.NewGuid().ToString("N")[..10];
        var secret = "rerun-secret-" + Guid.NewGuid().ToString("N");
        var sha = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret)));
        using var owner = await f.Api.ClientForNewKeyAsync(tenant, "user");
        var (colleagueKey, colleagueSecret) = await f.Api.CreateKeyAsync(tenant, "user");
        using var colleague = f.Api.WithKey(colleagueSecret);
        using var stranger = await f.Api.ClientForNewKeyAsync("t-" + Guid.NewGuid().ToString("N")[..10], "user");
        var original = await owner.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "sh", "-c", "printf %s \"$TOKEN\" | sha256sum | cut -c1-64 > /outputs/token.sha256" },
            secretEnv = new Dictionary<string, string> { ["TOKEN"] = secret },
        });
        await owner.SucceededStdoutAsync(original);

        // Another tenant's job does not exist for it, and nothing is created.
        var refused = await stranger.RerunAsync(original);
        Assert.Equal(HttpStatusCode.NotFound, refused.StatusCode);
        Assert.DoesNotContain(original, await stranger.Http.GetStringAsync("/api/v1/jobs?limit=1000"));

        var rerun = await BatchRunnerClient.CreatedAsync(await colleague.RerunAsync(original));
        var rerunId = BatchRunnerClient.Id(rerun);
        Assert.Equal(tenant, rerun.GetProperty("tenant").GetString());
        Assert.Equal(colleagueKey, rerun.GetProperty("submittedBy").GetString());
        Assert.Equal(["TOKEN"], rerun.GetProperty("secretEnvNames").EnumerateArray().Select(e => e.GetString()));
        Assert.DoesNotContain(secret, rerun.GetRawText());
        await colleague.SucceededStdoutAsync(rerunId);
        Assert.Equal(sha + "\n", await colleague.OutputAsync(rerunId, "token.sha256"));
    }

    [Fact]
    public async Task Rerun_IsRefused_ForAJobThatHasNotEnded_OrNeverResolvedItsImage()
    {
        var running = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "60" }, stopGraceSeconds = 0 });
        var notEnded = await f.Api.RerunAsync(running);
        Assert.Equal(HttpStatusCode.Conflict, notEnded.StatusCode);
        Assert.Contains("only a job that has ended can be rerun", await DetailAsync(notEnded));
        await f.Api.CancelAsync(running);

        var image = f.Busybox[..f.Busybox.LastIndexOf(':')] + ":no-such-tag";
        var failed = await f.Api.SubmitIdAsync(new { image, command = new[] { "true" } });
        await f.Api.WaitForFinalAsync(failed);
        var noDigest = await f.Api.RerunAsync(failed);
        Assert.Equal(HttpStatusCode.Conflict, noDigest.StatusCode);
        Assert.Contains("there is nothing to pin", await DetailAsync(noDigest));

        Assert.Equal(HttpStatusCode.NotFound, (await f.Api.RerunAsync(Guid.NewGuid().ToString())).StatusCode);
        await f.Api.WaitForFinalAsync(running);
    }

    private static async Task<string> DetailAsync(HttpResponseMessage response) =>
        JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("detail").GetString()!;
}
