using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>
/// API keys, tenants and roles through the HTTP API: the keys contract, every job endpoint answering 404 for another
/// tenant's job, tenant-scoped listing, what each role may do. The fixture's key is the bootstrap admin.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class TenantsFacts(ServerFixture f)
{
    private static string NewTenant() => "t-" + Guid.NewGuid().ToString("N")[..10];

    [Fact]
    public async Task ApiKeys_AreCreatedListedAndRevoked_AsTheContractSays()
    {
        var tenant = NewTenant();
        var created = await f.Client.PostAsJsonAsync("/api/v1/apikeys", new { name = "ci pipeline", tenant, role = "user" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var key = await BatchRunnerClient.JsonOf(created);
        var id = key.GetProperty("id").GetString()!;
        var secret = key.GetProperty("key").GetString()!;
        Assert.Equal($"/api/v1/apikeys/{id}", created.Headers.Location?.OriginalString);
        Assert.Equal("ci pipeline", key.GetProperty("name").GetString());
        Assert.Equal(tenant, key.GetProperty("tenant").GetString());
        Assert.Equal("user", key.GetProperty("role").GetString());
        Assert.True(key.GetProperty("createdAt").GetDateTimeOffset() > DateTimeOffset.UtcNow.AddMinutes(-5));
        Assert.StartsWith("br_", secret);
        Assert.True(secret.Length >= 40, secret);

        // Listed without the secret; the tenant exists from its first key on.
        var listText = await f.Client.GetStringAsync("/api/v1/apikeys");
        Assert.DoesNotContain(secret, listText);
        var listed = JsonDocument.Parse(listText).RootElement.EnumerateArray().Single(k => k.GetProperty("id").GetString() == id);
        Assert.False(listed.TryGetProperty("key", out _));
        Assert.Equal(secret[..11], listed.GetProperty("prefix").GetString());
        Assert.Equal("bootstrap", listed.GetProperty("createdBy").GetString());
        Assert.Contains(tenant, await f.Client.GetStringAsync("/api/v1/tenants"));

        using var client = f.Api.WithKey(secret);
        Assert.Equal(HttpStatusCode.OK, (await client.Http.GetAsync("/api/v1/jobs")).StatusCode);

        // Revoked: refused at once on the node that revoked it (other nodes: ClusterFacts), and gone from the list.
        Assert.Equal(HttpStatusCode.NoContent, (await f.Api.RevokeKeyAsync(id)).StatusCode);
        var refused = await client.Http.GetAsync("/api/v1/jobs");
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
        Assert.DoesNotContain(id, await f.Client.GetStringAsync("/api/v1/apikeys"));
        Assert.Equal(HttpStatusCode.NotFound, (await f.Api.RevokeKeyAsync(id)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await f.Api.RevokeKeyAsync("not-a-key")).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await f.Api.RevokeKeyAsync("bootstrap")).StatusCode);
    }

    [Theory]
    [InlineData("{\"name\":\"k\",\"tenant\":\"t\",\"role\":\"root\"}", "role")]
    [InlineData("{\"name\":\"k\",\"tenant\":\"Bad Tenant\",\"role\":\"user\"}", "tenant")]
    [InlineData("{\"tenant\":\"t\",\"role\":\"user\"}", "name")]
    [InlineData("{\"name\":\"k\",\"tenant\":\"t\",\"rol\":\"user\"}", "rol")]
    public async Task CreateApiKey_Gets400_NamingTheField(string json, string field)
    {
        var response = await f.Client.PostAsync("/api/v1/apikeys", new StringContent(json, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, text);
        Assert.True(JsonDocument.Parse(text).RootElement.GetProperty("errors").TryGetProperty(field, out _), text);
    }

    [Fact]
    public async Task EveryJobEndpoint_Answers404_ForAnotherTenantsJob()
    {
        var (tenantA, tenantB) = (NewTenant(), NewTenant());
        var (keyA, secretA) = await f.Api.CreateKeyAsync(tenantA, "user");
        using var a = f.Api.WithKey(secretA);
        using var b = await f.Api.ClientForNewKeyAsync(tenantB, "user");
        var spec = new { image = f.Busybox, command = new[] { "sh", "-c", "echo from-a; echo 1 > /outputs/a.txt" } };
        var idempotencyKey = "same-key-" + Guid.NewGuid().ToString("N")[..6];

        using var first = new HttpRequestMessage(HttpMethod.Post, "/api/v1/jobs") { Content = JsonContent.Create(spec) };
        first.Headers.Add("Idempotency-Key", idempotencyKey);
        var job = await BatchRunnerClient.CreatedAsync(await a.Http.SendAsync(first));
        var id = BatchRunnerClient.Id(job);
        Assert.Equal(tenantA, job.GetProperty("tenant").GetString());
        Assert.Equal(keyA, job.GetProperty("submittedBy").GetString());
        Assert.Equal("from-a\n", await a.SucceededStdoutAsync(id));

        // B gets what it would get for a job that does not exist: nothing tells it that the job does.
        foreach (var (method, path) in new[]
        {
            (HttpMethod.Get, $"/api/v1/jobs/{id}"),
            (HttpMethod.Get, $"/api/v1/jobs/{id}/logs"),
            (HttpMethod.Get, $"/api/v1/jobs/{id}/logs?follow=true"),
            (HttpMethod.Get, $"/api/v1/jobs/{id}/outputs"),
            (HttpMethod.Get, $"/api/v1/jobs/{id}/outputs/a.txt"),
            (HttpMethod.Get, $"/api/v1/jobs/{id}/outputs.zip"),
            (HttpMethod.Get, $"/api/v1/jobs/{id}/outputs.tar.gz"),
            (HttpMethod.Post, $"/api/v1/jobs/{id}/cancel"),
            (HttpMethod.Post, $"/api/v1/jobs/{id}/rerun"),
            (HttpMethod.Delete, $"/api/v1/jobs/{id}"),
        })
        {
            var response = await b.Http.SendAsync(new HttpRequestMessage(method, path));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.NotFound, $"{method} {path}: {(int)response.StatusCode} {text}");
            Assert.DoesNotContain("from-a", text);
            var unknown = await b.Http.SendAsync(new HttpRequestMessage(method, path.Replace(id, Guid.NewGuid().ToString())));
            Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        }

        // The same Idempotency-Key in B's tenant is B's own: a new job, not A's.
        using var second = new HttpRequestMessage(HttpMethod.Post, "/api/v1/jobs") { Content = JsonContent.Create(spec) };
        second.Headers.Add("Idempotency-Key", idempotencyKey);
        var bJob = await BatchRunnerClient.CreatedAsync(await b.Http.SendAsync(second));
        Assert.NotEqual(id, BatchRunnerClient.Id(bJob));
        Assert.Equal(tenantB, bJob.GetProperty("tenant").GetString());
        // ... and A's repeat still finds A's job.
        using var again = new HttpRequestMessage(HttpMethod.Post, "/api/v1/jobs") { Content = JsonContent.Create(spec) };
        again.Headers.Add("Idempotency-Key", idempotencyKey);
        var repeat = await a.Http.SendAsync(again);
        Assert.Equal(HttpStatusCode.OK, repeat.StatusCode);
        Assert.Equal(id, BatchRunnerClient.Id(await BatchRunnerClient.JsonOf(repeat)));

        // Listing: each tenant its own; an admin every tenant's, or one with ?tenant=.
        static async Task<List<string>> Ids(HttpClient c, string query) =>
            JsonDocument.Parse(await c.GetStringAsync("/api/v1/jobs" + query)).RootElement.GetProperty("items").EnumerateArray().Select(BatchRunnerClient.Id).ToList();
        Assert.Equal([id], await Ids(a.Http, ""));
        Assert.Equal([BatchRunnerClient.Id(bJob)], await Ids(b.Http, ""));
        Assert.Equal([id], await Ids(f.Client, $"?tenant={tenantA}"));
        Assert.Contains(id, await Ids(f.Client, "?limit=1000"));
        Assert.Contains(BatchRunnerClient.Id(bJob), await Ids(f.Client, "?limit=1000"));
        Assert.Equal([id], await Ids(a.Http, $"?tenant={tenantA}"));
        var otherTenant = await b.Http.GetAsync($"/api/v1/jobs?tenant={tenantA}");
        Assert.Equal(HttpStatusCode.Forbidden, otherTenant.StatusCode);
        Assert.Equal(id, BatchRunnerClient.Id(await f.Api.GetJobAsync(id)));
        await b.WaitForFinalAsync(BatchRunnerClient.Id(bJob));
    }

    [Fact]
    public async Task Viewer_ReadsItsTenant_ButCannotSubmitOrCancel()
    {
        var tenant = NewTenant();
        using var user = await f.Api.ClientForNewKeyAsync(tenant, "user");
        using var viewer = await f.Api.ClientForNewKeyAsync(tenant, "viewer");
        var id = await user.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "30" } });

        // 403, not 404: the role lacks the permission in its own tenant, whichever job it names; the answer is
        // decided before any job is looked up, so it says nothing about whether one exists.
        var submit = await viewer.PostJobAsync(new { image = f.Busybox, command = new[] { "true" } });
        Assert.Equal(HttpStatusCode.Forbidden, submit.StatusCode);
        Assert.Equal("application/problem+json", submit.Content.Headers.ContentType?.MediaType);
        Assert.Contains("viewer keys only read", await submit.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.Forbidden, (await viewer.CancelAsync(id)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await viewer.CancelAsync(Guid.NewGuid().ToString())).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await viewer.Http.DeleteAsync($"/api/v1/jobs/{id}")).StatusCode);

        Assert.Equal(id, BatchRunnerClient.Id(await viewer.GetJobAsync(id)));
        Assert.Contains(id, await viewer.Http.GetStringAsync("/api/v1/jobs"));
        Assert.Equal(JsonValueKind.Array, (await viewer.NodesAsync()).ValueKind);
        // Keys and images are an admin's; tenants lists only the key's own (QuotaFacts).
        foreach (var path in new[] { "/api/v1/apikeys", "/api/v1/images" })
        {
            Assert.Equal(HttpStatusCode.Forbidden, (await viewer.Http.GetAsync(path)).StatusCode);
            Assert.Equal(HttpStatusCode.Forbidden, (await user.Http.GetAsync(path)).StatusCode);
        }
        Assert.Equal(HttpStatusCode.Forbidden, (await user.Http.PostAsJsonAsync("/api/v1/apikeys", new { name = "x", tenant, role = "admin" })).StatusCode);

        Assert.Equal(HttpStatusCode.Accepted, (await user.CancelAsync(id)).StatusCode);
        Assert.Equal("cancelled", BatchRunnerClient.State(await user.WaitForFinalAsync(id)));
    }

    [Fact]
    public async Task Nodes_ListOnlyTheCallersRunningJobs_ButTheWholeAllocation()
    {
        using var a = await f.Api.ClientForNewKeyAsync(NewTenant(), "user");
        using var b = await f.Api.ClientForNewKeyAsync(NewTenant(), "viewer");
        var id = await a.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "30" }, resources = new { cpus = 0.25 } });
        await a.WaitForStateAsync(id, s => s == "running");
        static bool Lists(JsonElement nodes, string job) =>
            nodes.EnumerateArray().Any(n => n.GetProperty("runningJobs").EnumerateArray().Any(j => j.GetString() == job));
        Assert.True(Lists(await a.NodesAsync(), id));
        Assert.True(Lists(await f.Api.NodesAsync(), id));
        var seenByB = await b.NodesAsync();
        Assert.False(Lists(seenByB, id));
        Assert.True(seenByB.EnumerateArray().Sum(n => n.GetProperty("allocated").GetProperty("cpus").GetDouble()) >= 0.25);
        await a.CancelAsync(id);
        await a.WaitForFinalAsync(id);
    }
}
