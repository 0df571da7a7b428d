using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>What one request may ask of the server: body and spec sizes, the command's size, pids, the request rate;
/// and the list view staying lean.</summary>
[Collection(ServerCollection.Name)]
public sealed class RequestLimitsFacts(ServerFixture f)
{
    private static string BigSpec(int bytes) =>
        JsonSerializer.Serialize(new { image = "busybox", labels = new Dictionary<string, string> { ["pad"] = new string('x', bytes) } });

    [Fact]
    public async Task JsonSpec_Over1MiB_Gets413_WithOrWithoutContentLength()
    {
        var spec = BigSpec(2 << 20);
        var sized = await f.Client.PostAsync("/api/v1/jobs", new StringContent(spec, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, sized.StatusCode);
        Assert.Equal("application/problem+json", sized.Content.Headers.ContentType?.MediaType);

        // Chunked: no Content-Length to refuse it by; reading stops at the limit.
        var chunked = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(spec)));
        chunked.Headers.ContentType = new("application/json");
        using var request = new HttpRequestMessage(HttpMethod.Post, "/api/v1/jobs") { Content = chunked };
        request.Headers.TransferEncodingChunked = true;
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, (await f.Client.SendAsync(request)).StatusCode);
    }

    [Fact]
    public async Task MultipartSpecPart_Over1MiB_Gets413_AndStoresNothing()
    {
        using var form = new MultipartFormDataContent
        {
            { new StringContent(BigSpec(2 << 20), Encoding.UTF8, "application/json"), "spec" },
            { new ByteArrayContent(new byte[1024]), "file", "data.bin" },
        };
        var response = await f.Client.PostAsync("/api/v1/jobs", form);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Contains("spec", await response.Content.ReadAsStringAsync());
        var staging = Path.Combine(f.DataDir, "inputs-staging");
        await Poll.UntilAsync(() => Task.FromResult(!Directory.Exists(staging) || Directory.GetFileSystemEntries(staging).Length == 0), e => e,
            TimeSpan.FromSeconds(10), "staged inputs removed", 100);
    }

    [Theory]
    [InlineData("args", 300 * 1024, 1)]
    [InlineData("command", 200 * 1024, 2)]
    [InlineData("env", 270 * 1024, 1)]
    public async Task CommandArgsAndEnv_Over256KiB_Get400_NamingTheLargest(string field, int bytes, int parts)
    {
        var chunk = new string('a', bytes / parts);
        var list = Enumerable.Repeat(chunk, parts).ToArray();
        object spec = field switch
        {
            "args" => new { image = f.Busybox, command = new[] { "true" }, args = list },
            "command" => new { image = f.Busybox, command = list, args = new[] { new string('b', 60 * 1024) } },
            _ => new { image = f.Busybox, env = new Dictionary<string, string> { ["BIG"] = chunk } },
        };
        var response = await f.Api.PostJobAsync(spec);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, text[..Math.Min(400, text.Length)]);
        var errors = JsonDocument.Parse(text).RootElement.GetProperty("errors");
        Assert.True(errors.TryGetProperty(field, out var messages), text[..Math.Min(400, text.Length)]);
        Assert.Contains("262144", messages[0].GetString());
    }

    [Fact]
    public async Task Pids_AboveTheMaximum_Gets400()
    {
        var response = await f.Api.PostJobAsync(new { image = f.Busybox, resources = new { pids = 1_000_000 } });
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.True(JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("errors").TryGetProperty("resources.pids", out _));
    }

    [Fact]
    public async Task AKeyPastItsRolesRate_Gets429_WithRetryAfter_ThenGetsIn()
    {
        // The fixture gives viewers a burst of 30 requests, refilled at 2 per second; this key has its own bucket.
        using var viewer = await f.Api.ClientForNewKeyAsync("t-" + Guid.NewGuid().ToString("N")[..10], "viewer");
        HttpResponseMessage? limited = null;
        for (var i = 0; i < 60 && limited is null; i++)
        {
            var r = await viewer.Http.GetAsync("/api/v1/nodes");
            if (r.StatusCode == HttpStatusCode.TooManyRequests) limited = r;
            else Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
        Assert.NotNull(limited);
        Assert.Equal("application/problem+json", limited.Content.Headers.ContentType?.MediaType);
        var retryAfter = limited.Headers.RetryAfter?.Delta;
        Assert.NotNull(retryAfter);
        Assert.InRange(retryAfter.Value.TotalSeconds, 1, 5);
        // Other keys are not affected; this one gets in again once its bucket refills.
        Assert.Equal(HttpStatusCode.OK, (await f.Client.GetAsync("/api/v1/nodes")).StatusCode);
        await Poll.UntilAsync(async () => (await viewer.Http.GetAsync("/api/v1/nodes")).StatusCode, s => s == HttpStatusCode.OK,
            TimeSpan.FromSeconds(10), "the viewer's bucket refilled", 250);
    }

    [Fact]
    public async Task JobList_LeavesArgsAndEnvOut_TheJobKeepsThem()
    {
        var tenant = "t-" + Guid.NewGuid().ToString("N")[..10];
        using var user = await f.Api.ClientForNewKeyAsync(tenant, "user");
        var id = await user.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "sh", "-c" },
            args = new[] { "echo $A" },
            env = new Dictionary<string, string> { ["A"] = "1", ["B"] = "2" },
        });
        var item = JsonDocument.Parse(await user.Http.GetStringAsync("/api/v1/jobs")).RootElement.GetProperty("items")[0];
        Assert.Equal(id, BatchRunnerClient.Id(item));
        Assert.Equal(JsonValueKind.Null, item.GetProperty("args").ValueKind);
        Assert.Equal(JsonValueKind.Null, item.GetProperty("env").ValueKind);
        Assert.Equal(["A", "B"], item.GetProperty("envNames").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(["sh", "-c"], item.GetProperty("command").EnumerateArray().Select(e => e.GetString()));

        var full = await user.GetJobAsync(id);
        Assert.Equal(["echo $A"], full.GetProperty("args").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal("2", full.GetProperty("env").GetProperty("B").GetString());
        Assert.Equal("1\n", await user.SucceededStdoutAsync(id));
    }
}
