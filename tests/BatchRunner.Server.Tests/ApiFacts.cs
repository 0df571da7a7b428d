using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace BatchRunner.Server.Tests;

/// <summary>The HTTP contract: auth, validation, problem details, listing.</summary>
[Collection(ServerCollection.Name)]
public sealed class ApiFacts(ServerFixture f)
{
    [Fact]
    public async Task Requests_Get401_WithoutTheKey()
    {
        var response = await f.Anonymous.GetAsync("/api/v1/jobs");
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var wrong = new HttpRequestMessage(HttpMethod.Post, "/api/v1/jobs") { Content = JsonContent.Create(new { image = "x" }) };
        wrong.Headers.Authorization = new("Bearer", "not-the-key");
        Assert.Equal(HttpStatusCode.Unauthorized, (await f.Anonymous.SendAsync(wrong)).StatusCode);
    }

    [Fact]
    public async Task Healthz_NeedsNoKey()
    {
        var response = await f.Anonymous.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal("ok", body.GetProperty("status").GetString());
        Assert.Equal("runc", body.GetProperty("runtime").GetProperty("name").GetString());
    }

    [Fact]
    public async Task InvalidSpec_Gets400NamingEveryField_AndQueuesNothing()
    {
        var before = await CountJobsAsync();
        var response = await f.Client.PostAsJsonAsync("/api/v1/jobs", new { resources = new { memory = "lots", cpus = -1 } });
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var errors = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("errors");
        Assert.True(errors.TryGetProperty("image", out _));
        Assert.True(errors.TryGetProperty("resources.memory", out _));
        Assert.True(errors.TryGetProperty("resources.cpus", out _));
        Assert.Equal(before, await CountJobsAsync());
    }

    [Theory]
    [InlineData("{\"image\":\"Busy Box\"}", "image")]
    [InlineData("{\"image\":\"busybox\",\"timeoutSeconds\":0}", "timeoutSeconds")]
    [InlineData("{\"image\":\"busybox\",\"queue\":\"nope\"}", "queue")]
    [InlineData("{\"image\":\"busybox\",\"memroy\":\"1Gi\"}", "memroy")]
    [InlineData("{\"image\":\"busybox\",\"resources\":{\"memory\":true}}", "resources.memory")]
    [InlineData("{\"image\":\"busybox\",\"env\":{\"1BAD\":\"x\"}}", "env.1BAD")]
    [InlineData("not json", "body")]
    public async Task InvalidSpec_Gets400_NamingTheField(string json, string field)
    {
        var response = await f.Client.PostAsync("/api/v1/jobs", new StringContent(json, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, text);
        var errors = JsonDocument.Parse(text).RootElement.GetProperty("errors");
        Assert.True(errors.EnumerateObject().Any(p => p.Name.Contains(field)), text);
    }

    [Fact]
    public async Task MemoryAsBytes_IsAccepted()
    {
        var job = await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "true" }, resources = new { memory = 67108864, cpus = 0.25, pids = 64 } });
        Assert.Equal(67108864, job.GetProperty("resources").GetProperty("memoryBytes").GetInt64());
        Assert.Equal(64, job.GetProperty("resources").GetProperty("pids").GetInt32());
        await f.Api.WaitForFinalAsync(job.GetProperty("id").GetString()!);
    }

    [Fact]
    public async Task UnknownJob_Gets404()
    {
        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.GetAsync($"/api/v1/jobs/{Guid.NewGuid()}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.GetAsync("/api/v1/jobs/not-a-guid")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.PostAsync($"/api/v1/jobs/{Guid.NewGuid()}/cancel", null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.GetAsync($"/api/v1/jobs/{Guid.NewGuid()}/logs")).StatusCode);
    }

    [Fact]
    public async Task SubmitReturns201_WithLocation()
    {
        var response = await f.Client.PostAsJsonAsync("/api/v1/jobs", new { image = f.Busybox, command = new[] { "true" } });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal($"/api/v1/jobs/{body.GetProperty("id").GetString()}", response.Headers.Location?.ToString());
        await f.Api.WaitForFinalAsync(body.GetProperty("id").GetString()!);
    }

    [Fact]
    public async Task List_IsNewestFirst_AndPaginates()
    {
        var ids = new List<string>();
        for (int i = 0; i < 3; i++)
            ids.Add((await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "true" }, labels = new { batch = "list" } })).GetProperty("id").GetString()!);
        var page1 = JsonDocument.Parse(await f.Client.GetStringAsync("/api/v1/jobs?limit=2")).RootElement;
        var items1 = page1.GetProperty("items").EnumerateArray().Select(j => j.GetProperty("id").GetString()).ToList();
        Assert.Equal(2, items1.Count);
        Assert.Equal(ids[2], items1[0]);
        Assert.Equal(ids[1], items1[1]);
        var cursor = page1.GetProperty("nextCursor").GetString();
        var page2 = JsonDocument.Parse(await f.Client.GetStringAsync($"/api/v1/jobs?limit=2&cursor={cursor}")).RootElement;
        Assert.Equal(ids[0], page2.GetProperty("items")[0].GetProperty("id").GetString());

        foreach (var id in ids) await f.Api.WaitForFinalAsync(id);
        var succeeded = JsonDocument.Parse(await f.Client.GetStringAsync("/api/v1/jobs?state=succeeded&limit=1000")).RootElement;
        Assert.All(succeeded.GetProperty("items").EnumerateArray(), j => Assert.Equal("succeeded", j.GetProperty("state").GetString()));
        Assert.Equal(HttpStatusCode.BadRequest, (await f.Client.GetAsync("/api/v1/jobs?state=bogus")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await f.Client.GetAsync("/api/v1/jobs?cursor=%%%")).StatusCode);
    }

    [Fact]
    public async Task OpenApiDocument_IsServed()
    {
        var doc = JsonDocument.Parse(await f.Anonymous.GetStringAsync("/openapi/v1.json")).RootElement;
        Assert.True(doc.GetProperty("paths").TryGetProperty("/api/v1/jobs", out _));
    }

    [Fact]
    public async Task Dashboard_RefusesRequestsWithoutTheKey()
    {
        var response = await f.Anonymous.GetAsync("/hangfire");
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        using var ok = new HttpRequestMessage(HttpMethod.Get, "/hangfire");
        ok.Headers.Authorization = new("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("admin:" + ServerFixture.ApiKey)));
        Assert.Equal(HttpStatusCode.OK, (await f.Anonymous.SendAsync(ok)).StatusCode);
    }

    private async Task<int> CountJobsAsync() =>
        JsonDocument.Parse(await f.Client.GetStringAsync("/api/v1/jobs?limit=1000")).RootElement.GetProperty("items").GetArrayLength();
}
