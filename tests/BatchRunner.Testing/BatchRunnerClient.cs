using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Xunit;

namespace BatchRunner.Testing;

/// <summary>
/// The HTTP API v1 as tests use it: submit, read, wait for, cancel jobs, read their logs and outputs. One client
/// for every server a test starts (in-process fixtures, a cluster of processes); jobs come back as
/// <see cref="JsonElement"/> so that tests assert on the wire format, the contract. <see cref="Http"/> is there
/// for the requests a test builds itself (bad input, raw bodies, headers).
/// </summary>
public sealed class BatchRunnerClient : IDisposable
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    public static readonly TimeSpan DefaultWait = TimeSpan.FromSeconds(60);

    /// <param name="apiKey">Sent as "Authorization: Bearer KEY"; null: anonymous.</param>
    public BatchRunnerClient(string baseAddress, string? apiKey, TimeSpan? timeout = null)
    {
        Http = new HttpClient { BaseAddress = new Uri(baseAddress), Timeout = timeout ?? TimeSpan.FromSeconds(60) };
        if (apiKey is not null) Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
    }

    public HttpClient Http { get; }

    /// <summary>POST /api/v1/jobs with <paramref name="spec"/> as JSON, whatever the answer.</summary>
    public Task<HttpResponseMessage> PostJobAsync(object spec) => Http.PostAsJsonAsync("/api/v1/jobs", spec, Json);

    /// <summary>A multipart submission: <paramref name="spec"/> as the "spec" part, then each file as its part.</summary>
    public static MultipartFormDataContent Multipart(object spec, params (string Part, string FileName, byte[] Content)[] files)
    {
        var form = new MultipartFormDataContent
        {
            { new StringContent(JsonSerializer.Serialize(spec, Json), System.Text.Encoding.UTF8, "application/json"), "spec" },
        };
        foreach (var (part, name, content) in files) form.Add(new ByteArrayContent(content), part, name);
        return form;
    }

    /// <summary>Submits <paramref name="spec"/>, asserts 201 and returns the job as created.</summary>
    public async Task<JsonElement> SubmitAsync(object spec) => await CreatedAsync(await PostJobAsync(spec));

    /// <summary>Submits <paramref name="spec"/>, asserts 201 and returns the new job's id.</summary>
    public async Task<string> SubmitIdAsync(object spec) => Id(await SubmitAsync(spec));

    /// <summary>Asserts that <paramref name="response"/> (to a submission) is 201 and returns the job.</summary>
    public static async Task<JsonElement> CreatedAsync(HttpResponseMessage response)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"submit: {(int)response.StatusCode} {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    /// <summary>The response's body as JSON.</summary>
    public static async Task<JsonElement> JsonOf(HttpResponseMessage response) =>
        JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone();

    public static string Id(JsonElement job) => job.GetProperty("id").GetString()!;

    public static string State(JsonElement job) => job.GetProperty("state").GetString()!;

    public async Task<JsonElement> GetJobAsync(string id) =>
        JsonDocument.Parse(await Http.GetStringAsync($"/api/v1/jobs/{id}")).RootElement.Clone();

    /// <summary>Polls the job until <paramref name="done"/> holds (every 100 ms, until <paramref name="timeout"/>).</summary>
    public Task<JsonElement> WaitAsync(string id, Func<JsonElement, bool> done, TimeSpan? timeout = null, string? what = null) =>
        Poll.UntilAsync(() => GetJobAsync(id), done, timeout ?? DefaultWait, $"job {id}: {what ?? "condition"}", 100);

    public Task<JsonElement> WaitForStateAsync(string id, Func<string, bool> done, TimeSpan? timeout = null) =>
        WaitAsync(id, j => done(State(j)), timeout, "state");

    /// <summary>Waits until the job is succeeded, failed or cancelled.</summary>
    public Task<JsonElement> WaitForFinalAsync(string id, TimeSpan? timeout = null) =>
        WaitAsync(id, j => State(j) is "succeeded" or "failed" or "cancelled", timeout, "final state");

    /// <summary>stdout then stderr, or one of them (<paramref name="stream"/> "stdout" or "stderr").</summary>
    public Task<string> LogsAsync(string id, string? stream = null) =>
        Http.GetStringAsync($"/api/v1/jobs/{id}/logs" + (stream is null ? "" : $"?stream={stream}"));

    public async Task<JsonElement> OutputsAsync(string id) =>
        JsonDocument.Parse(await Http.GetStringAsync($"/api/v1/jobs/{id}/outputs")).RootElement.Clone();

    public Task<string> OutputAsync(string id, string path) => Http.GetStringAsync($"/api/v1/jobs/{id}/outputs/{path}");

    public Task<HttpResponseMessage> CancelAsync(string id) => Http.PostAsync($"/api/v1/jobs/{id}/cancel", null);

    /// <summary>An array's children (one page of up to <paramref name="limit"/>), optionally in one state.</summary>
    public async Task<IReadOnlyList<JsonElement>> ChildrenAsync(string parent, string? state = null, int limit = 1000) =>
        [.. JsonDocument.Parse(await Http.GetStringAsync($"/api/v1/jobs/{parent}/children?limit={limit}" + (state is null ? "" : $"&state={state}")))
            .RootElement.GetProperty("items").EnumerateArray().Select(e => e.Clone())];

    /// <summary>GET /api/v1/jobs with <paramref name="query"/> ("state=failed&amp;limit=1000", "schedule=ID"): the items of the first page.</summary>
    public async Task<IReadOnlyList<JsonElement>> ListAsync(string query) =>
        [.. JsonDocument.Parse(await Http.GetStringAsync("/api/v1/jobs?" + query)).RootElement.GetProperty("items").EnumerateArray().Select(e => e.Clone())];
    /// <summary>POST /api/v1/jobs/{id}/rerun, whatever the answer.</summary>
    public Task<HttpResponseMessage> RerunAsync(string id) => Http.PostAsync($"/api/v1/jobs/{id}/rerun", null);

    /// <summary>GET /api/v1/nodes (with <paramref name="all"/>: dead nodes too).</summary>
    public async Task<JsonElement> NodesAsync(bool all = false) =>
        JsonDocument.Parse(await Http.GetStringAsync("/api/v1/nodes" + (all ? "?all=true" : ""))).RootElement.Clone();

    /// <summary>Waits for the end of job <paramref name="id"/>, asserts it succeeded (showing its logs if not) and returns its stdout.</summary>
    public async Task<string> SucceededStdoutAsync(string id, TimeSpan? timeout = null)
    {
        var done = await WaitForFinalAsync(id, timeout);
        var stdout = await LogsAsync(id, "stdout");
        Assert.True(State(done) == "succeeded", $"{done}\nstdout: {stdout}\nstderr: {await LogsAsync(id, "stderr")}");
        return stdout;
    }

    /// <summary>Submits <paramref name="spec"/>, waits for the end, asserts success and returns stdout.</summary>
    public async Task<string> RunAsync(object spec) => await SucceededStdoutAsync(await SubmitIdAsync(spec));

    /// <summary>POST /api/v1/apikeys (this client's key must be an admin's); asserts 201 and returns the key's id and secret.</summary>
    public async Task<(string Id, string Key)> CreateKeyAsync(string tenant, string role, string name = "test key")
    {
        var response = await Http.PostAsJsonAsync("/api/v1/apikeys", new { name, tenant, role }, Json);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"create key: {(int)response.StatusCode} {body}");
        var key = JsonDocument.Parse(body).RootElement;
        return (key.GetProperty("id").GetString()!, key.GetProperty("key").GetString()!);
    }

    /// <summary>Creates a key (see <see cref="CreateKeyAsync"/>) and returns a client that sends it.</summary>
    public async Task<BatchRunnerClient> ClientForNewKeyAsync(string tenant, string role) => WithKey((await CreateKeyAsync(tenant, role)).Key);

    /// <summary>A client of the same server that sends <paramref name="apiKey"/> (null: none).</summary>
    public BatchRunnerClient WithKey(string? apiKey) => new(Http.BaseAddress!.ToString(), apiKey, Http.Timeout);

    /// <summary>PUT /api/v1/tenants/NAME (this client's key must be an admin's); asserts 200 and returns the tenant.</summary>
    public async Task<JsonElement> PutTenantAsync(string name, object quota)
    {
        var response = await Http.PutAsJsonAsync($"/api/v1/tenants/{name}", quota, Json);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"put tenant: {(int)response.StatusCode} {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    public Task<HttpResponseMessage> RevokeKeyAsync(string id) => Http.DeleteAsync($"/api/v1/apikeys/{id}");

    public void Dispose() => Http.Dispose();
}
