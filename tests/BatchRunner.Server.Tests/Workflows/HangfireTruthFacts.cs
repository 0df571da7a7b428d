using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Hangfire;
using Hangfire.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using static BatchRunner.Testing.BatchRunnerClient;

namespace BatchRunner.Server.Tests.Workflows;

/// <summary>
/// A BatchRunner of its own (fresh database: Hangfire's counters start at zero), with a queue "limited" to one job at a
/// time: what the Hangfire dashboard counts must be exactly what the API says.
/// </summary>
public sealed class FreshServerFixture : IAsyncLifetime
{
    public const string ApiKey = "fresh-key-91c4";
    public WebApplication App { get; private set; } = null!;
    public BatchRunnerClient Api { get; private set; } = null!;
    public string Address { get; private set; } = null!;
    public string DataDir { get; } = Path.Combine("/tmp", "br-fresh-tests-" + Guid.NewGuid().ToString("N")[..8]);
    public TestRegistry Registry { get; private set; } = null!;
    public string Busybox { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Registry = await TestRegistry.StartAsync();
        Busybox = await TestImages.PushBusyboxAsync(Registry);
        App = await BatchRunnerApp.BuildAsync([
            "--urls", "http://127.0.0.1:0",
            $"--BatchRunner:DataDir={DataDir}",
            $"--BatchRunner:ApiKey={ApiKey}",
            .. TestRegistry.ServerArgs,
            "--BatchRunner:Workers=4",
            "--BatchRunner:Queues:0=default",
            "--BatchRunner:Queues:1=limited",
            "--BatchRunner:QueueLimits:limited=1",
            "--BatchRunner:Capacity:Cpus=2",
            "--BatchRunner:Capacity:Memory=4Gi",
            "--Logging:LogLevel:Default=Warning",
            "--Logging:LogLevel:BatchRunner=Information",
        ]);
        (Api, var address) = await InProcessHost.StartAsync(App, ApiKey);
        Address = address;
    }

    public async Task DisposeAsync()
    {
        Api?.Dispose();
        await InProcessHost.StopAsync(App);
        if (Registry is not null) await Registry.DisposeAsync();
        try { if (Directory.Exists(DataDir)) Directory.Delete(DataDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <remarks>Not in parallel with the other server collections: its jobs must run within their deadlines (see IsolationServerCollection).</remarks>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class FreshServerCollection : ICollectionFixture<FreshServerFixture>
{
    public const string Name = "fresh-server";
}

/// <summary>The Hangfire dashboard tells the truth: its states, lists and counts are the API's, over a mix of outcomes.</summary>
[Collection(FreshServerCollection.Name)]
public sealed class HangfireTruthFacts(FreshServerFixture f)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private object Job(string script, string queue = "default", object? retry = null, object[]? dependsOn = null, object? array = null, string? image = null) => new
    {
        image = image ?? f.Busybox,
        command = new[] { "/bin/sh", "-c", script },
        resources = new { cpus = 0.1, memory = "16Mi" },
        queue,
        retry,
        dependsOn,
        array,
    };

    [Fact]
    public async Task DashboardCounts_EqualTheApis_OverAMixOfOutcomes()
    {
        var api = f.Api;
        var ok = await api.SubmitIdAsync(Job("true"));
        var ok2 = await api.SubmitIdAsync(Job("echo two"));
        var exit3 = await api.SubmitIdAsync(Job("exit 3"));
        var pull = await api.SubmitIdAsync(Job("true", image: $"{f.Registry.Host}/nothing/here:1"));
        var blocker = await api.SubmitIdAsync(Job("sleep 120", queue: "limited"));
        await api.WaitForStateAsync(blocker, s => s == "running");
        var queuedThenCancelled = await api.SubmitIdAsync(Job("true", queue: "limited"));
        var runningThenCancelled = await api.SubmitIdAsync(Job("sleep 120"));
        var waiting = await api.SubmitIdAsync(Job("true", dependsOn: [new { job = blocker }]));
        var dependencyFailed = await api.SubmitIdAsync(Job("true", dependsOn: [new { job = exit3 }]));
        var backingOff = await api.SubmitIdAsync(Job("exit 3", retry: new { limit = 1, onExitCodes = new[] { 3 }, backoffSeconds = 600 }));
        var array = await api.SubmitIdAsync(Job("true", array: new { size = 2, parallelism = 2 }));
        var failedArray = await api.SubmitIdAsync(Job("exit $BATCHRUNNER_ARRAY_INDEX", array: new { size = 2, parallelism = 1 }));

        await api.CancelAsync(queuedThenCancelled);
        await api.WaitForStateAsync(runningThenCancelled, s => s == "running");
        await api.CancelAsync(runningThenCancelled);

        foreach (var (id, state) in new[]
                 {
                     (ok, "succeeded"), (ok2, "succeeded"), (exit3, "failed"), (pull, "failed"), (queuedThenCancelled, "cancelled"),
                     (runningThenCancelled, "cancelled"), (dependencyFailed, "cancelled"), (array, "succeeded"), (failedArray, "failed"),
                 })
            Assert.Equal(state, State(await api.WaitForFinalAsync(id, Deadline)));
        Assert.Equal("image_pull_failed", (await api.GetJobAsync(pull)).GetProperty("reason").GetString());
        await api.WaitAsync(backingOff, j => j.GetProperty("attempt").GetInt32() == 1 && State(j) == "queued", Deadline, "retry back-off");
        Assert.Equal("waiting", State(await api.GetJobAsync(waiting)));

        // "Requeue" pressed on a failed job (what the dashboard's button calls): refused, the job stays as it ended.
        var exit3HangfireId = await HangfireIdAsync(exit3);
        Assert.True(f.App.Services.GetRequiredService<IBackgroundJobClient>().Requeue(exit3HangfireId));
        await Poll.UntilAsync(() => Task.FromResult(History(exit3HangfireId)), h => h.Count(s => s.StateName == "Failed") == 2, Deadline, "failed again after the requeue", 100);
        var history = History(exit3HangfireId);
        Assert.True(history.Any(h => h.StateName == "Failed" && h.Data.TryGetValue("ExceptionMessage", out var why) && why.Contains("BatchRunner does not run an ended job again")),
            string.Join("\n", history.Select(h => h.StateName + " " + h.Reason + " " + string.Join(", ", h.Data.Select(kv => $"{kv.Key}={kv.Value}")))));
        var exit3Now = await api.GetJobAsync(exit3);
        Assert.Equal(("failed", 1), (State(exit3Now), exit3Now.GetProperty("attempt").GetInt32()));

        // The API's counts, children included (every job that has or will have a Hangfire job of its own).
        var jobs = (await api.ListAsync("limit=1000")).ToList();
        foreach (var parent in jobs.Where(j => j.TryGetProperty("array", out var a) && a.ValueKind == JsonValueKind.Object).ToList())
            jobs.AddRange(await api.ChildrenAsync(Id(parent)));
        int Count(string state) => jobs.Count(j => State(j) == state);
        var expected = new
        {
            Succeeded = (long)Count("succeeded"),
            Failed = (long)Count("failed"),
            Deleted = (long)Count("cancelled"),
            Awaiting = (long)Count("waiting"),
            Scheduled = (long)jobs.Count(j => State(j) == "queued" && j.GetProperty("message").GetString()!.Contains("retrying in")),
            Processing = (long)(Count("starting") + Count("running")),
        };
        Assert.Equal(new { Succeeded = 6L, Failed = 4L, Deleted = 3L, Awaiting = 1L, Scheduled = 1L, Processing = 1L }, expected);

        var storage = f.App.Services.GetRequiredService<JobStorage>();
        var actual = await Poll.UntilAsync(() => Task.FromResult(Counts(storage)), c => c.Equals(expected), Deadline, $"dashboard counts = {expected}", 100);
        Assert.Equal(expected, actual);

        // The lists an operator reads say why.
        var failedPage = await DashboardAsync("/hangfire/jobs/failed");
        Assert.Contains("exit_code: exited with code 3", failedPage);
        Assert.Contains("image_pull_failed", failedPage);
        Assert.Contains("children_failed: 1 of 2 children did not succeed", failedPage);
        Assert.Contains(await HangfireIdAsync(waiting), await DashboardAsync("/hangfire/jobs/awaiting"));

        await api.CancelAsync(blocker);
        Assert.Equal("dependency_failed", (await api.WaitForFinalAsync(waiting, Deadline)).GetProperty("reason").GetString());
        await api.CancelAsync(backingOff);
    }

    private static object Counts(JobStorage storage)
    {
        var stats = storage.GetMonitoringApi().GetStatistics();
        using var connection = (JobStorageConnection)storage.GetConnection();
        return new
        {
            stats.Succeeded,
            stats.Failed,
            stats.Deleted,
            Awaiting = connection.GetSetCount("awaiting"),
            stats.Scheduled,
            stats.Processing,
        };
    }

    private List<Hangfire.Storage.Monitoring.StateHistoryDto> History(string hangfireId) =>
        [.. f.App.Services.GetRequiredService<JobStorage>().GetMonitoringApi().JobDetails(hangfireId).History];

    private async Task<string> HangfireIdAsync(string id) =>
        (await f.App.Services.GetRequiredService<JobStore>().GetAsync(Guid.Parse(id), CancellationToken.None))!.HangfireJobId!;

    private async Task<string> DashboardAsync(string path)
    {
        using var http = new HttpClient { BaseAddress = new Uri(f.Address) };
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("operator:" + FreshServerFixture.ApiKey)));
        using var response = await http.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return WebUtility.HtmlDecode(await response.Content.ReadAsStringAsync());
    }
}
