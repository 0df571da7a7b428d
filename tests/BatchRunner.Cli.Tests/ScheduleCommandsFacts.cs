using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Cli.Tests;

/// <summary><c>batchrunner schedules …</c> against the server's /api/v1/schedules, as a user types them.</summary>
[Collection(CliCollection.Name)]
public sealed class ScheduleCommandsFacts(CliFixture f) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("br-cli-schedules-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private async Task<CliResult> OkAsync(params string[] args)
    {
        var r = await f.RunAsync(args);
        Assert.True(r.ExitCode == 0, r.ToString());
        return r;
    }

    private async Task<JsonElement> GetAsync(string id) => JsonDocument.Parse((await OkAsync("schedules", "get", id)).Stdout).RootElement;

    [Fact]
    public async Task Schedules_CreateListPauseResumeUpdateTriggerAndRemove_AgainstTheServer()
    {
        var job = Path.Combine(_dir, "nightly.yaml");
        await File.WriteAllTextAsync(job, $"image: {f.Busybox}\ncommand: [sh, -c, 'echo scheduled run']\nresources:\n  cpus: 0.1\n");
        var name = "nightly-" + Guid.NewGuid().ToString("N")[..6];

        // Once a year at 03:00 in Paris: nothing fires during the test, the trigger runs it.
        var created = JsonDocument.Parse((await OkAsync("schedules", "create", job, "--name", name, "--cron", "0 3 1 1 *",
            "--time-zone", "Europe/Paris", "--concurrency", "forbid", "-o", "json")).Stdout).RootElement;
        var id = created.GetProperty("id").GetString()!;
        Assert.Equal("forbid", created.GetProperty("concurrency").GetString());
        Assert.Equal(f.Busybox, created.GetProperty("job").GetProperty("image").GetString());

        var list = await OkAsync("schedules", "list");
        Assert.Contains(id, list.Stdout);
        Assert.Contains(name, list.Stdout);
        Assert.Contains("Europe/Paris", list.Stdout);

        await OkAsync("schedules", "pause", id);
        Assert.True((await GetAsync(id)).GetProperty("paused").GetBoolean());
        await OkAsync("schedules", "resume", id);
        Assert.False((await GetAsync(id)).GetProperty("paused").GetBoolean());

        await OkAsync("schedules", "update", id, "--cron", "30 4 1 1 *", "--time-zone", "UTC");
        var updated = await GetAsync(id);
        Assert.Equal(("30 4 1 1 *", "UTC"), (updated.GetProperty("cron").GetString(), updated.GetProperty("timeZone").GetString()));

        var run = (await OkAsync("schedules", "trigger", id)).Stdout.Trim();
        var done = await Poll.UntilAsync(() => f.GetJobAsync(run), j => j.GetProperty("state").GetString() is "succeeded" or "failed" or "cancelled",
            TimeSpan.FromSeconds(60), "the triggered run", 200);
        Assert.Equal("succeeded", done.GetProperty("state").GetString());
        Assert.Equal(id, done.GetProperty("scheduleId").GetString());

        await OkAsync("schedules", "rm", id);
        var gone = await f.RunAsync("schedules", "get", id);
        Assert.Equal(1, gone.ExitCode);
        Assert.Contains("not found", gone.Stderr, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task SchedulesCreate_ShowsTheServersFieldError_ForABadCron()
    {
        var job = Path.Combine(_dir, "job.yaml");
        await File.WriteAllTextAsync(job, $"image: {f.Busybox}\n");
        var r = await f.RunAsync("schedules", "create", job, "--name", "bad", "--cron", "every day");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("cron", r.Stderr);
        Assert.Contains("every day", r.Stderr);
    }
}
