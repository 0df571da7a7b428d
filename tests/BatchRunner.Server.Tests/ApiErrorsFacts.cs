using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using BatchRunner.Server.Api;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Server.Tests;

/// <summary>
/// Errors in the user's words, all of them at once (issue 19, item 4), and unknown query parameters refused on every
/// endpoint (item 1).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed partial class ApiErrorsFacts(ServerFixture f)
{
    // A CLR type or namespace in an answer: what System.Text.Json and model binding say when left to themselves.
    [GeneratedRegex(@"System\.|BatchRunner\.|Microsoft\.|`1|Int32|Int64|Nullable|String\[\]|List<|Dictionary<|JsonElement|could not be (converted|mapped)|\.NET")]
    private static partial Regex DotNetWords();

    [Fact]
    public async Task Submit_ReportsEveryShapeAndMeaningError_InOneAnswer_WithoutDotNetWords()
    {
        var json = """
            {"image": "busybox", "command": "python3 run.py", "resources": {"memroy": "1Gi", "cpus": -1, "memory": "0"},
             "timeoutSeconds": "60", "env": {"1BAD": "x"}, "queue": "nope", "retyr": {}}
            """;
        var (status, body) = await PostAsync(json);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        var errors = JsonDocument.Parse(body).RootElement.GetProperty("errors");
        Assert.Equal(["command", "env.1BAD", "queue", "resources.cpus", "resources.memory", "resources.memroy", "retyr", "timeoutSeconds"],
            errors.EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal));
        Assert.Equal("expected an array of strings, not the string \"python3 run.py\"", errors.GetProperty("command")[0].GetString());
        Assert.Equal("unknown field (did you mean \"memory\"?)", errors.GetProperty("resources.memroy")[0].GetString());
        Assert.Equal("unknown field (did you mean \"retry\"?)", errors.GetProperty("retyr")[0].GetString());
        Assert.Equal("memory \"0\" must be positive", errors.GetProperty("resources.memory")[0].GetString());
        Assert.StartsWith("expected an integer", errors.GetProperty("timeoutSeconds")[0].GetString());
        Assert.DoesNotMatch(DotNetWords(), body);
    }

    [Fact]
    public async Task Submit_ReportsTheSpecPartsErrors_InAMultipartSubmission()
    {
        using var form = new MultipartFormDataContent();
        var spec = new StringContent("""{"image": "busybox", "args": [1, 2], "pids": 5}""", Encoding.UTF8);
        spec.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        form.Add(spec, "spec");
        form.Add(new ByteArrayContent("1,2\n"u8.ToArray()), "file", "data.csv");
        var response = await f.Client.PostAsync("/api/v1/jobs", form);
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var errors = JsonDocument.Parse(body).RootElement.GetProperty("errors");
        Assert.StartsWith("expected a string", errors.GetProperty("args[0]")[0].GetString());
        Assert.Equal("unknown field (did you mean \"resources.pids\"?)", errors.GetProperty("pids")[0].GetString());
        Assert.DoesNotMatch(DotNetWords(), body);
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("[]")]
    [InlineData("{\"image\": [\"a\"]}")]
    [InlineData("{\"image\": \"busybox\", \"resources\": [1]}")]
    [InlineData("{\"image\": \"busybox\", \"resources\": {\"pids\": 1e40}}")]
    [InlineData("{\"image\": \"busybox\", \"labels\": {\"k\": {\"nested\": 1}}}")]
    [InlineData("{\"image\": \"busybox\", \"retry\": {\"onExitCodes\": \"3\"}}")]
    public async Task Submit_Answers400WithoutDotNetWords_WhateverTheShape(string json)
    {
        var (status, body) = await PostAsync(json);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.DoesNotMatch(DotNetWords(), body);
        Assert.NotEmpty(JsonDocument.Parse(body).RootElement.GetProperty("errors").EnumerateObject());
    }

    [Fact]
    public async Task Submit_NamesTheLargestNodeInHumanUnits_WhenNoNodeCouldRunTheJob()
    {
        var (status, body) = await PostAsync($$$"""{"image": "{{{f.Busybox}}}", "resources": {"memory": "1Ti", "gpus": 1}}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        var errors = JsonDocument.Parse(body).RootElement.GetProperty("errors");
        Assert.Equal("1Ti memory requested; the largest live node has 4Gi", errors.GetProperty("resources.memory")[0].GetString());
        Assert.Equal("1 GPU requested; the largest live node has 0", errors.GetProperty("resources.gpus")[0].GetString());
    }

    [Fact]
    public async Task Nodes_ShowMemoryInHumanUnits()
    {
        var node = (await f.Api.NodesAsync())[0];
        Assert.Equal("4Gi", node.GetProperty("capacity").GetProperty("memory").GetString());
        Assert.Equal(4L << 30, node.GetProperty("capacity").GetProperty("memoryBytes").GetInt64());
        Assert.NotNull(node.GetProperty("allocated").GetProperty("memory").GetString());
    }

    /// <summary>Every endpoint the server maps, asked with a parameter it does not take: 400 naming it, before anything runs.</summary>
    [Fact]
    public async Task EveryEndpoint_Refuses_AnUnknownQueryParameter()
    {
        var endpoints = f.App.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Where(e => QueryParameters.DeclaredFor(e) is not null).ToList();
        var before = await CountJobsAsync();
        var judged = new List<string>();
        foreach (var e in endpoints)
        {
            var path = "/" + RouteParameter().Replace(e.RoutePattern.RawText!.Trim('/'), m => m.Value.Contains("id") ? Guid.NewGuid().ToString() : "x");
            foreach (var method in e.Metadata.GetMetadata<IHttpMethodMetadata>()?.HttpMethods ?? ["GET"])
            {
                using var request = new HttpRequestMessage(new HttpMethod(method), path + "?bogusParam=1");
                var response = await f.Client.SendAsync(request);
                var body = await response.Content.ReadAsStringAsync();
                Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{method} {path}: {(int)response.StatusCode} {body}");
                Assert.True(JsonDocument.Parse(body).RootElement.GetProperty("errors").TryGetProperty("bogusParam", out _), body);
                judged.Add($"{method} {e.RoutePattern.RawText}");
            }
        }
        // The whole public API and the node-to-node endpoints are judged, and nothing was created on the way.
        foreach (var expected in new[] { "POST /api/v1/jobs/", "GET /api/v1/jobs/", "GET /api/v1/jobs/{id}", "POST /api/v1/jobs/{id}/cancel",
                     "GET /api/v1/jobs/{id}/logs", "GET /api/v1/jobs/{id}/outputs", "GET /api/v1/jobs/{id}/outputs/{**path}", "GET /api/v1/nodes/",
                     "GET /api/v1/images/", "POST /api/v1/images/", "GET /internal/v1/jobs/{id}/logs", "GET /healthz" })
            Assert.Contains(judged, j => j.TrimEnd('/') == expected.TrimEnd('/'));
        Assert.Equal(before, await CountJobsAsync());
    }

    [Theory]
    [InlineData("/api/v1/jobs?limit=ten", "limit", "expected an integer, not \"ten\"")]
    [InlineData("/api/v1/nodes?all=yes", "all", "expected true or false, not \"yes\"")]
    [InlineData("/api/v1/jobs?limit=1&limit=2", "limit", "given more than once; give it once")]
    [InlineData("/api/v1/jobs?stat=queued", "stat", "unknown query parameter (did you mean \"state\"?)")]
    public async Task Query_Gets400InTheApisWords_WhenAValueHasTheWrongType(string url, string parameter, string message)
    {
        var response = await f.Client.GetAsync(url);
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(message, JsonDocument.Parse(body).RootElement.GetProperty("errors").GetProperty(parameter)[0].GetString());
        Assert.DoesNotMatch(DotNetWords(), body);
    }

    [GeneratedRegex(@"\{[^}]+\}")]
    private static partial Regex RouteParameter();

    private async Task<(HttpStatusCode, string)> PostAsync(string json)
    {
        var response = await f.Client.PostAsync("/api/v1/jobs", new StringContent(json, Encoding.UTF8, "application/json"));
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    private async Task<int> CountJobsAsync() =>
        JsonDocument.Parse(await f.Client.GetStringAsync("/api/v1/jobs?limit=1000&view=summary")).RootElement.GetProperty("items").GetArrayLength();
}
