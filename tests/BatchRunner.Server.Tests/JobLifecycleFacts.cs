using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Server.Tests;

/// <summary>Jobs end to end through the HTTP API, on real PostgreSQL, a real registry and real runc.</summary>
[Collection(ServerCollection.Name)]
public sealed class JobLifecycleFacts(ServerFixture f)
{
    [Fact]
    public async Task HelloJob_Succeeds_WithLogsOutputsAndUsage()
    {
        var job = await f.Api.SubmitAsync(new
        {
            name = "hello",
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "echo hi; echo oops >&2; echo 42 > /outputs/answer.txt; mkdir -p /outputs/sub; printf abc > /outputs/sub/x.bin" },
            resources = new { cpus = 0.5, memory = "64Mi" },
            timeoutSeconds = 60,
        });
        var id = job.GetProperty("id").GetString()!;
        Assert.Equal("queued", job.GetProperty("state").GetString());

        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("succeeded", done.GetProperty("state").GetString());
        Assert.Equal(0, done.GetProperty("exitCode").GetInt32());
        Assert.StartsWith("sha256:", done.GetProperty("imageDigest").GetString());
        Assert.Equal(1, done.GetProperty("attempt").GetInt32());
        Assert.Equal("64Mi", done.GetProperty("resources").GetProperty("memory").GetString());
        Assert.Equal(JsonValueKind.String, done.GetProperty("startedAt").ValueKind);
        Assert.Equal(JsonValueKind.String, done.GetProperty("finishedAt").ValueKind);
        var usage = done.GetProperty("usage");
        Assert.True(usage.GetProperty("cpuSeconds").GetDouble() >= 0);
        Assert.True(usage.GetProperty("maxMemoryBytes").GetInt64() > 0);

        var stdout = await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs?stream=stdout");
        Assert.Equal("hi\n", stdout);
        var stderr = await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs?stream=stderr");
        Assert.Equal("oops\n", stderr);
        var both = await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs");
        Assert.Contains("hi\n", both);
        Assert.Contains("oops\n", both);

        var outputs = done.GetProperty("outputs").EnumerateArray().ToList();
        Assert.Equal(["answer.txt", "sub/x.bin"], outputs.Select(o => o.GetProperty("path").GetString()));
        var answer = outputs[0];
        Assert.Equal(3, answer.GetProperty("size").GetInt64());
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData("42\n"u8.ToArray())), answer.GetProperty("sha256").GetString());

        Assert.Equal("42\n", await f.Client.GetStringAsync($"/api/v1/jobs/{id}/outputs/answer.txt"));
        Assert.Equal("abc", await f.Client.GetStringAsync($"/api/v1/jobs/{id}/outputs/sub/x.bin"));
        var list = JsonDocument.Parse(await f.Client.GetStringAsync($"/api/v1/jobs/{id}/outputs")).RootElement;
        Assert.Equal(2, list.GetArrayLength());
        var missing = await f.Client.GetAsync($"/api/v1/jobs/{id}/outputs/nope.txt");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
    }

    [Fact]
    public async Task Job_FailsWithExitCode_WhenCommandExitsNonZero()
    {
        var id = (await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "exit 3" } })).GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("failed", done.GetProperty("state").GetString());
        Assert.Equal("exit_code", done.GetProperty("reason").GetString());
        Assert.Equal(3, done.GetProperty("exitCode").GetInt32());
        Assert.Contains("code 3", done.GetProperty("message").GetString());
    }

    [Fact]
    public async Task Job_IsOomKilled_WhenAChildOfTheShellAllocatesPastTheLimit()
    {
        // The hog is a child of the shell, which exits 0 afterwards: OOM must come from the cgroup, not the exit code.
        var id = (await f.Api.SubmitAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "head -c 200m /dev/zero | tail -c 150m > /dev/null; exit 0" },
            resources = new { memory = "32Mi" },
        })).GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("failed", done.GetProperty("state").GetString());
        Assert.Equal("oom_killed", done.GetProperty("reason").GetString());
        Assert.Contains("32Mi", done.GetProperty("message").GetString());
    }

    [Fact]
    public async Task Job_TimesOut_WhenItRunsPastTimeoutSeconds()
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var id = (await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "sleep", "600" }, timeoutSeconds = 2, stopGraceSeconds = 1 })).GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id, TimeSpan.FromSeconds(30));
        Assert.Equal("failed", done.GetProperty("state").GetString());
        Assert.Equal("timed_out", done.GetProperty("reason").GetString());
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(15), $"took {sw.Elapsed}");
        await AssertNoLeftoversAsync(id, 1);
    }

    [Fact]
    public async Task RunningJob_IsCancelled_AndLeavesNoContainerMountOrCgroup()
    {
        // sleep as PID 1 ignores SIGTERM (no handler): a 1 s stop grace, then SIGKILL.
        var id = (await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "sleep", "600" }, stopGraceSeconds = 1 })).GetProperty("id").GetString()!;
        await f.Api.WaitForStateAsync(id, s => s == "running", TimeSpan.FromSeconds(30));
        var containerId = f.App.Services.GetRequiredService<NodeIdentity>().ContainerId(Guid.Parse(id), 1);
        Assert.True(Directory.Exists($"/sys/fs/cgroup/memory/batchrunner/{containerId}") || Directory.Exists($"/sys/fs/cgroup/batchrunner/{containerId}"),
            "a running job has a cgroup");

        var sw = System.Diagnostics.Stopwatch.StartNew();
        var cancel = await f.Client.PostAsync($"/api/v1/jobs/{id}/cancel", null);
        Assert.Equal(HttpStatusCode.Accepted, cancel.StatusCode);
        var done = await f.Api.WaitForFinalAsync(id, TimeSpan.FromSeconds(20));
        Assert.Equal("cancelled", done.GetProperty("state").GetString());
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"cancel took {sw.Elapsed}");
        await AssertNoLeftoversAsync(id, 1);

        var again = await f.Client.PostAsync($"/api/v1/jobs/{id}/cancel", null);
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
    }

    [Fact]
    public async Task RunningJob_HasItsBundleOnTheNodesStateTmpfs_AndItsNameFilesOnItsDisk()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "echo 10.9.9.9 extra >>/etc/hosts; sleep 600" }, stopGraceSeconds = 0 });
        await f.Api.WaitForStateAsync(id, s => s == "running", TimeSpan.FromSeconds(30));
        var containerId = f.App.Services.GetRequiredService<NodeIdentity>().ContainerId(Guid.Parse(id), 1);
        var paths = f.App.Services.GetRequiredService<DataPaths>();

        // config.json (the job's environment, secrets included) on a tmpfs, owner-only; nothing of the bundle on the data disk.
        var state = File.ReadLines("/proc/self/mountinfo").Last(l => l.Split(' ')[4] == paths.State);
        Assert.Contains(" - tmpfs ", state);
        Assert.Contains("noexec", state.Split(' ')[5].Split(','));
        var config = Path.Combine(paths.Bundle(containerId), "config.json");
        Assert.True(File.Exists(config));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(config));
        Assert.Contains(containerId, await ExternalCommand.RunAsync("runc", ["--root", paths.RuntimeState, "list", "-q"]));
        Assert.False(Directory.Exists(Path.Combine(paths.RunDir(containerId), "bundle")));
        // The /etc/hosts the job edits is on its disk (counted against its limit).
        var hosts = Path.Combine(paths.RunDir(containerId), "disk", "names", "hosts");
        await Poll.UntilAsync(() => File.Exists(hosts) && File.ReadAllText(hosts).Contains("10.9.9.9 extra"), TimeSpan.FromSeconds(10), "the job's line in its hosts file");

        Assert.Equal(HttpStatusCode.Accepted, (await f.Api.CancelAsync(id)).StatusCode);
        Assert.Equal("cancelled", (await f.Api.WaitForFinalAsync(id, TimeSpan.FromSeconds(20))).GetProperty("state").GetString());
        await AssertNoLeftoversAsync(id, 1);
    }

    [Fact]
    public async Task MissingTag_FailsWithImagePullFailed_AndTheRegistrysReason()
    {
        var image = f.Busybox[..f.Busybox.LastIndexOf(':')] + ":does-not-exist";
        var id = (await f.Api.SubmitAsync(new { image, command = new[] { "true" } })).GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("failed", done.GetProperty("state").GetString());
        Assert.Equal("image_pull_failed", done.GetProperty("reason").GetString());
        Assert.Contains("manifest unknown", done.GetProperty("message").GetString(), StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task MissingRepository_FailsWithImagePullFailed()
    {
        var id = (await f.Api.SubmitAsync(new { image = $"{f.Registry.Host}/nobody/here:1", command = new[] { "true" } })).GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("image_pull_failed", done.GetProperty("reason").GetString());
        Assert.Contains("nobody/here", done.GetProperty("message").GetString());
    }

    [Fact]
    public async Task BasicAuthRegistry_Pulls_WithConfiguredCredentials()
    {
        var id = (await f.Api.SubmitAsync(new { image = f.AuthBusybox, command = new[] { "/bin/sh", "-c", "echo authed" } })).GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("succeeded", done.GetProperty("state").GetString());
        Assert.Equal("authed\n", await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs"));
    }

    [Fact]
    public async Task BasicAuthRegistry_Pulls_WithCredentialsFromDockerConfigCredHelper()
    {
        var id = (await f.Api.SubmitAsync(new { image = f.HelperAuthBusybox, command = new[] { "/bin/sh", "-c", "echo helped" } })).GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("succeeded", done.GetProperty("state").GetString());
        Assert.Equal("helped\n", await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs"));
    }

    [Fact]
    public async Task BasicAuthRegistry_FailsClearly_WithoutCredentials()
    {
        var id = (await f.Api.SubmitAsync(new { image = f.UnconfiguredAuthBusybox, command = new[] { "true" } })).GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("failed", done.GetProperty("state").GetString());
        Assert.Equal("image_pull_failed", done.GetProperty("reason").GetString());
        var message = done.GetProperty("message").GetString()!;
        Assert.Contains("unauthorized", message, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain(ServerFixture.RegistryPassword, message);
    }

    [Fact]
    public async Task FollowLogs_StreamsUntilTheJobEnds()
    {
        var id = (await f.Api.SubmitAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.3; done" },
        })).GetProperty("id").GetString()!;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var text = await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs?follow=true", cts.Token);
        Assert.Equal("line1\nline2\nline3\n", text);
        Assert.Equal("succeeded", (await f.Api.GetJobAsync(id)).GetProperty("state").GetString());
    }

    [Fact]
    public async Task SecondJobOnSameImage_DownloadsNothing()
    {
        var first = (await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "true" } })).GetProperty("id").GetString()!;
        var a = await f.Api.WaitForFinalAsync(first);
        var blobs = Path.Combine(f.DataDir, "images");
        var before = Directory.EnumerateFiles(blobs, "*", SearchOption.AllDirectories).Count(p => p.Contains("/blobs/"));
        var second = (await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "true" } })).GetProperty("id").GetString()!;
        var b = await f.Api.WaitForFinalAsync(second);
        var after = Directory.EnumerateFiles(blobs, "*", SearchOption.AllDirectories).Count(p => p.Contains("/blobs/"));
        Assert.Equal("succeeded", b.GetProperty("state").GetString());
        Assert.Equal(a.GetProperty("imageDigest").GetString(), b.GetProperty("imageDigest").GetString());
        Assert.Equal(before, after);
    }

    private async Task AssertNoLeftoversAsync(string id, int attempt)
    {
        var containerId = f.App.Services.GetRequiredService<NodeIdentity>().ContainerId(Guid.Parse(id), attempt);
        var paths = f.App.Services.GetRequiredService<DataPaths>();
        await Poll.UntilAsync(() => !Directory.Exists(paths.RunDir(containerId)), TimeSpan.FromSeconds(10), "run dir removed");
        Assert.False(Directory.Exists(paths.Bundle(containerId)), "bundle removed");
        Assert.DoesNotContain(File.ReadAllLines("/proc/self/mountinfo"), l => l.Contains(containerId));
        foreach (var controller in new[] { "memory", "cpu", "pids", "cpuacct", "devices", "freezer" })
            Assert.False(Directory.Exists($"/sys/fs/cgroup/{controller}/batchrunner/{containerId}"), $"{controller} cgroup of {containerId} remains");
        Assert.False(Directory.Exists($"/sys/fs/cgroup/batchrunner/{containerId}"));
        var list = await ExternalCommand.RunAsync("runc", ["--root", paths.RuntimeState, "list", "-q"]);
        Assert.DoesNotContain(containerId, list);
    }
}
