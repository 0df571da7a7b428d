using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Testing;
using static BatchRunner.Testing.BatchRunnerClient;

namespace BatchRunner.Server.Tests.Workflows;

/// <summary>
/// Workflows within tenants, through the HTTP API on the shared server: an array's children, dependencies, inputsFrom
/// and schedules all belong to the caller's tenant, and another tenant sees none of them (404, or a 400 that reads as for
/// a job that does not exist). Each test makes its own tenants and keys; the fixture's key is the bootstrap admin.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class WorkflowTenantsFacts(ServerFixture f)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private static string NewTenant() => "t-" + Guid.NewGuid().ToString("N")[..10];

    private object Job(string script, object? array = null, object[]? dependsOn = null, object[]? inputsFrom = null,
        Dictionary<string, string>? secretEnv = null) => new
    {
        image = f.Busybox,
        command = new[] { "/bin/sh", "-c", script },
        resources = new { cpus = 0.1, memory = "16Mi" },
        array,
        dependsOn,
        inputsFrom,
        secretEnv,
    };

    private static async Task<(HttpStatusCode Status, JsonElement Body)> SendAsync(BatchRunnerClient client, HttpMethod method, string path, object? body = null)
    {
        using var request = new HttpRequestMessage(method, path) { Content = body is null ? null : JsonContent.Create(body, options: Json) };
        using var response = await client.Http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone());
    }

    [Fact]
    public async Task ArrayChildren_BelongToTheParentsTenant_WithItsSecrets_AndAre404ToAnotherTenant()
    {
        var tenantA = NewTenant();
        var (keyA, secretA) = await f.Api.CreateKeyAsync(tenantA, "user");
        using var a = f.Api.WithKey(secretA);
        using var b = await f.Api.ClientForNewKeyAsync(NewTenant(), "user");
        var parent = await a.SubmitAsync(Job("echo \"$TOKEN-$BATCHRUNNER_ARRAY_INDEX\" > /outputs/t.txt",
            array: new { size = 2, parallelism = 2 }, secretEnv: new() { ["TOKEN"] = "array-secret-41" }));
        var id = Id(parent);
        Assert.Equal(tenantA, parent.GetProperty("tenant").GetString());
        Assert.Equal("succeeded", State(await a.WaitForFinalAsync(id, Deadline)));

        var children = await a.ChildrenAsync(id);
        Assert.Equal(2, children.Count);
        foreach (var child in children)
        {
            Assert.Equal(tenantA, child.GetProperty("tenant").GetString());
            Assert.Equal(keyA, child.GetProperty("submittedBy").GetString());
            Assert.Equal(["TOKEN"], child.GetProperty("secretEnvNames").EnumerateArray().Select(e => e.GetString()));
            var index = child.GetProperty("arrayIndex").GetInt32();
            // The parent's secretEnv reached each child's container (they were copied, still encrypted, to its row).
            Assert.Equal($"array-secret-41-{index}\n", await a.OutputAsync(Id(child), "t.txt"));
        }

        var childId = Id(children[0]);
        foreach (var (method, path) in new[]
        {
            (HttpMethod.Get, $"/api/v1/jobs/{id}"),
            (HttpMethod.Get, $"/api/v1/jobs/{id}/children"),
            (HttpMethod.Get, $"/api/v1/jobs/{id}:0"),
            (HttpMethod.Get, $"/api/v1/jobs/{id}:0/outputs/t.txt"),
            (HttpMethod.Get, $"/api/v1/jobs/{childId}"),
            (HttpMethod.Get, $"/api/v1/jobs/{childId}/logs"),
            (HttpMethod.Post, $"/api/v1/jobs/{id}:1/cancel"),
            (HttpMethod.Post, $"/api/v1/jobs/{id}/cancel"),
        })
        {
            var (status, body) = await SendAsync(b, method, path);
            Assert.True(status == HttpStatusCode.NotFound, $"{method} {path}: {(int)status} {body}");
            Assert.DoesNotContain("array-secret", body.ToString());
        }
        Assert.DoesNotContain(await b.ListAsync("limit=1000"), j => Id(j) == id);
        Assert.Contains(await a.ListAsync("limit=1000"), j => Id(j) == id);
    }

    [Fact]
    public async Task DependsOnAndInputsFrom_RefuseAnotherTenantsJob_AsOneThatDoesNotExist()
    {
        using var a = await f.Api.ClientForNewKeyAsync(NewTenant(), "user");
        using var b = await f.Api.ClientForNewKeyAsync(NewTenant(), "user");
        var theirs = await a.SubmitIdAsync(Job("echo 1 > /outputs/x.txt"));
        var unknown = Guid.NewGuid().ToString();

        foreach (var (field, other, missing) in new[]
        {
            ("dependsOn[0].job", Job("true", dependsOn: [new { job = theirs }]), Job("true", dependsOn: [new { job = unknown }])),
            ("inputsFrom[0].job", Job("true", inputsFrom: [new { job = theirs }]), Job("true", inputsFrom: [new { job = unknown }])),
        })
        {
            var (status, body) = await SendAsync(b, HttpMethod.Post, "/api/v1/jobs", other);
            Assert.True(status == HttpStatusCode.BadRequest, $"{field}: {(int)status} {body}");
            var message = body.GetProperty("errors").GetProperty(field)[0].GetString()!;
            Assert.Equal($"no job with id {theirs} was found", message);
            // Word for word what a job that does not exist gets.
            var (_, missingBody) = await SendAsync(b, HttpMethod.Post, "/api/v1/jobs", missing);
            Assert.Equal(message.Replace(theirs, unknown), missingBody.GetProperty("errors").GetProperty(field)[0].GetString());
        }

        // A schedule's job is checked the same way, within the schedule's tenant.
        var (scheduleStatus, scheduleBody) = await SendAsync(b, HttpMethod.Post, "/api/v1/schedules",
            new { name = "dep", cron = "0 0 1 1 *", job = Job("true", dependsOn: [new { job = theirs }]) });
        Assert.True(scheduleStatus == HttpStatusCode.BadRequest, scheduleBody.ToString());
        Assert.Equal($"no job with id {theirs} was found", scheduleBody.GetProperty("errors").GetProperty("job.dependsOn[0].job")[0].GetString());

        // Its own tenant may: the dependency and the inputs are A's.
        var consumer = await a.SubmitIdAsync(Job($"cat /inputs/{theirs}/x.txt", inputsFrom: [new { job = theirs }]));
        Assert.Equal("1\n", await a.SucceededStdoutAsync(consumer, Deadline));
    }

    [Fact]
    public async Task Schedules_BelongToTheirTenant_RunAsTheKeyThatMadeThem_AndViewersCannotCreateThem()
    {
        var tenantA = NewTenant();
        var (keyA, secretA) = await f.Api.CreateKeyAsync(tenantA, "user");
        using var a = f.Api.WithKey(secretA);
        using var viewerA = await f.Api.ClientForNewKeyAsync(tenantA, "viewer");
        using var b = await f.Api.ClientForNewKeyAsync(NewTenant(), "user");
        var spec = new
        {
            name = "tenant-schedule-" + Guid.NewGuid().ToString("N")[..6],
            cron = "0 0 1 1 *", // never fires during the test: runs are triggered
            job = Job("echo \"run with $TOKEN\"", secretEnv: new() { ["TOKEN"] = "schedule-secret-17" }),
        };

        var (refused, refusedBody) = await SendAsync(viewerA, HttpMethod.Post, "/api/v1/schedules", spec);
        Assert.True(refused == HttpStatusCode.Forbidden, $"{(int)refused} {refusedBody}");

        var (created, schedule) = await SendAsync(a, HttpMethod.Post, "/api/v1/schedules", spec);
        Assert.True(created == HttpStatusCode.Created, schedule.ToString());
        var id = Id(schedule);
        try
        {
            Assert.Equal(tenantA, schedule.GetProperty("tenant").GetString());
            Assert.Equal(keyA, schedule.GetProperty("createdBy").GetString());
            Assert.DoesNotContain("schedule-secret", schedule.ToString());

            // A run is the schedule's tenant's job, submitted as the key that made the schedule, with its secrets.
            var (triggered, run) = await SendAsync(a, HttpMethod.Post, $"/api/v1/schedules/{id}/trigger");
            Assert.True(triggered == HttpStatusCode.Created, run.ToString());
            Assert.Equal(tenantA, run.GetProperty("tenant").GetString());
            Assert.Equal(keyA, run.GetProperty("submittedBy").GetString());
            Assert.Equal("run with schedule-secret-17\n", await a.SucceededStdoutAsync(Id(run), Deadline));
            Assert.Equal([Id(run)], (await a.ListAsync($"schedule={id}")).Select(Id));

            // Another tenant: not found, whatever it tries; its own listings hold nothing of A's.
            foreach (var (method, path, body) in new (HttpMethod, string, object?)[]
            {
                (HttpMethod.Get, $"/api/v1/schedules/{id}", null),
                (HttpMethod.Patch, $"/api/v1/schedules/{id}", new { paused = true }),
                (HttpMethod.Post, $"/api/v1/schedules/{id}/trigger", null),
                (HttpMethod.Delete, $"/api/v1/schedules/{id}", null),
            })
            {
                var (status, answer) = await SendAsync(b, method, path, body);
                Assert.True(status == HttpStatusCode.NotFound, $"{method} {path}: {(int)status} {answer}");
            }
            Assert.Empty(await b.ListAsync($"schedule={id}"));
            Assert.DoesNotContain(id, await b.Http.GetStringAsync("/api/v1/schedules"));

            // Its own tenant's viewer reads it but may not change it; an admin lists every tenant's.
            Assert.Contains(id, await viewerA.Http.GetStringAsync("/api/v1/schedules"));
            Assert.Equal(HttpStatusCode.Forbidden, (await SendAsync(viewerA, HttpMethod.Post, $"/api/v1/schedules/{id}/trigger")).Status);
            Assert.Contains(id, await f.Client.GetStringAsync("/api/v1/schedules"));
            Assert.False((await SendAsync(a, HttpMethod.Get, $"/api/v1/schedules/{id}")).Body.GetProperty("paused").GetBoolean());
        }
        finally
        {
            Assert.Equal(HttpStatusCode.NoContent, (await SendAsync(a, HttpMethod.Delete, $"/api/v1/schedules/{id}")).Status);
        }
    }
}
