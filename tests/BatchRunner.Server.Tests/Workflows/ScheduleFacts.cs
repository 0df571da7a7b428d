using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Hangfire;
using Hangfire.Storage;
using Microsoft.Extensions.DependencyInjection;
using static BatchRunner.Testing.BatchRunnerClient;

namespace BatchRunner.Server.Tests.Workflows;

/// <summary>Schedules through the HTTP API, firing every two seconds on the shared server (Hangfire's recurring scheduler,
/// real runc and PostgreSQL). Each test deletes the schedules it made.</summary>
[Collection(ServerCollection.Name)]
public sealed class ScheduleFacts(ServerFixture f)
{
    private const string EveryTwoSeconds = "*/2 * * * * *";
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(40);

    private async Task<JsonElement> CreateAsync(string script, string concurrency = "allow", string cron = EveryTwoSeconds)
    {
        var response = await f.Client.PostAsJsonAsync("/api/v1/schedules", new
        {
            name = "every-2s-" + Guid.NewGuid().ToString("N")[..6],
            cron,
            timeZone = "Europe/Paris",
            concurrency,
            job = new { image = f.Busybox, command = new[] { "/bin/sh", "-c", script }, resources = new { cpus = 0.1, memory = "16Mi" } },
        }, Json);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, body);
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    private async Task<JsonElement> GetAsync(string id) => JsonDocument.Parse(await f.Client.GetStringAsync($"/api/v1/schedules/{id}")).RootElement.Clone();

    private Task<IReadOnlyList<JsonElement>> RunsAsync(string id) => f.Api.ListAsync($"schedule={id}&limit=1000");

    private async Task DeleteAsync(string id)
    {
        Assert.Equal(HttpStatusCode.NoContent, (await f.Client.DeleteAsync($"/api/v1/schedules/{id}")).StatusCode);
        foreach (var run in await RunsAsync(id))
            if (State(run) is not ("succeeded" or "failed" or "cancelled")) await f.Api.CancelAsync(Id(run));
    }

    private List<RecurringJobDto> Recurring(string id)
    {
        using var connection = f.App.Services.GetRequiredService<JobStorage>().GetConnection();
        return connection.GetRecurringJobs().Where(r => r.Id == ScheduleQueue.RecurringId(Guid.Parse(id))).ToList();
    }

    [Fact]
    public async Task Schedule_ProducesRuns_StopsWhilePaused_AndResumes()
    {
        var schedule = await CreateAsync("echo run");
        var id = Id(schedule);
        try
        {
            Assert.Equal(EveryTwoSeconds, schedule.GetProperty("cron").GetString());
            Assert.False(schedule.GetProperty("paused").GetBoolean());
            Assert.True(schedule.GetProperty("nextRunAt").GetDateTimeOffset() > DateTimeOffset.UtcNow.AddSeconds(-1));
            // It is a Hangfire recurring job (the dashboard's Recurring Jobs page lists it).
            Assert.Equal(EveryTwoSeconds, Assert.Single(Recurring(id)).Cron);

            var runs = await Poll.UntilAsync(() => RunsAsync(id), r => r.Count(j => State(j) == "succeeded") >= 2, Deadline, "two succeeded runs", 200);
            Assert.All(runs, r => Assert.Equal(id, r.GetProperty("scheduleId").GetString()));
            Assert.Equal("run\n", await f.Api.LogsAsync(Id(runs[0]), "stdout"));

            var paused = await f.Client.PatchAsJsonAsync($"/api/v1/schedules/{id}", new { paused = true });
            Assert.Equal(HttpStatusCode.OK, paused.StatusCode);
            Assert.Empty(Recurring(id));
            // A firing already under way when it was paused may still land; after that, nothing for three periods.
            var settled = (await Poll.UntilAsync(() => RunsAsync(id), r => r.All(j => State(j) == "succeeded"), Deadline, "runs settled", 200)).Count;
            await Task.Delay(TimeSpan.FromSeconds(6)); // the property under test is that nothing happens in this window
            Assert.Equal(settled, (await RunsAsync(id)).Count);
            Assert.True((await GetAsync(id)).GetProperty("paused").GetBoolean());

            await f.Client.PatchAsJsonAsync($"/api/v1/schedules/{id}", new { paused = false });
            await Poll.UntilAsync(() => RunsAsync(id), r => r.Count > settled, Deadline, "a run after resuming", 200);
            var shown = await GetAsync(id);
            Assert.True(shown.GetProperty("runs").GetInt32() > settled);
        }
        finally { await DeleteAsync(id); }
        Assert.Empty(Recurring(id));
        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.GetAsync($"/api/v1/schedules/{id}")).StatusCode);
    }

    [Fact]
    public async Task Forbid_SkipsWhileTheLastRunGoesOn_AndRecordsTheSkip()
    {
        var id = Id(await CreateAsync("sleep 7", concurrency: "forbid"));
        try
        {
            var skipped = await Poll.UntilAsync(() => GetAsync(id), s => s.GetProperty("skippedRuns").GetInt32() >= 1, Deadline, "a skipped run", 200);
            var running = Assert.Single(await RunsAsync(id));
            Assert.Equal(Id(running), skipped.GetProperty("lastJobId").GetString());
            Assert.Contains($"the previous run {Id(running)} is still", skipped.GetProperty("lastSkipMessage").GetString());
            Assert.NotEqual(JsonValueKind.Null, skipped.GetProperty("lastSkippedAt").ValueKind);

            // A manual trigger follows the same rule: refused while the run goes on, and recorded.
            var trigger = await f.Client.PostAsync($"/api/v1/schedules/{id}/trigger", null);
            Assert.Equal(HttpStatusCode.Conflict, trigger.StatusCode);
            Assert.Contains("still", await trigger.Content.ReadAsStringAsync());
            Assert.Single(await RunsAsync(id));
        }
        finally { await DeleteAsync(id); }
    }

    [Fact]
    public async Task Replace_CancelsThePreviousRun_WhenTheNextOneStarts()
    {
        var id = Id(await CreateAsync("sleep 60", concurrency: "replace"));
        try
        {
            // The first run ends once a later one replaced it. Not "any run cancelled": the first run's `sleep` (PID 1, deaf to
            // SIGTERM) takes its stop grace to end, while a third firing may meanwhile cancel the second run before it ran.
            static JsonElement First(IReadOnlyList<JsonElement> runs) => runs.OrderBy(r => r.GetProperty("createdAt").GetDateTimeOffset()).First();
            var runs = await Poll.UntilAsync(() => RunsAsync(id), r => r.Count >= 2 && State(First(r)) is "succeeded" or "failed" or "cancelled", Deadline,
                "the first run to be replaced", 200);
            Assert.Equal("cancelled", State(First(runs)));
        }
        finally { await DeleteAsync(id); }
    }

    [Fact]
    public async Task Trigger_StartsARunNow_AsAnOrdinaryJob()
    {
        // Once a year: only the trigger runs it here.
        var id = Id(await CreateAsync("echo triggered", cron: "0 0 1 1 *"));
        try
        {
            var response = await f.Client.PostAsync($"/api/v1/schedules/{id}/trigger", null);
            var job = await CreatedAsync(response);
            Assert.Equal(id, job.GetProperty("scheduleId").GetString());
            Assert.Equal("triggered\n", await f.Api.SucceededStdoutAsync(Id(job)));
            Assert.Equal(Id(job), Assert.Single(await RunsAsync(id)).GetProperty("id").GetString());
            Assert.Equal(1, (await GetAsync(id)).GetProperty("runs").GetInt32());
            var list = JsonDocument.Parse(await f.Client.GetStringAsync("/api/v1/schedules")).RootElement;
            Assert.Contains(list.GetProperty("items").EnumerateArray(), s => Id(s) == id);
        }
        finally { await DeleteAsync(id); }
    }

    [Theory]
    [InlineData("""{"name":"x","cron":"61 * * * *","job":{"image":"busybox"}}""", "cron")]
    [InlineData("""{"name":"x","cron":"* * *","job":{"image":"busybox"}}""", "cron")]
    [InlineData("""{"name":"x","cron":"0 3 * * *","timeZone":"Mars/Olympus","job":{"image":"busybox"}}""", "timeZone")]
    [InlineData("""{"name":"x","cron":"0 3 * * *","concurrency":"sometimes","job":{"image":"busybox"}}""", "concurrency")]
    [InlineData("""{"name":"x","cron":"0 3 * * *","job":{"image":"busybox","resources":{"memroy":"1Gi"}}}""", "job.resources.memroy")]
    [InlineData("""{"name":"x","cron":"0 3 * * *","job":{"image":"busybox","timeoutSeconds":-1}}""", "job.timeoutSeconds")]
    [InlineData("""{"cron":"0 3 * * *","job":{"image":"busybox"}}""", "name")]
    public async Task Create_RefusesABadSchedule_NamingTheField(string body, string field)
    {
        var response = await f.Client.PostAsync("/api/v1/schedules", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
        var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, problem.ToString());
        Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), $"{field} not in {problem}");
    }
}
