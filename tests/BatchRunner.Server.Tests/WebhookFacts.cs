using System.Collections.Concurrent;
using System.Net;
using System.Text.Json;
using BatchRunner.Server.Notifications;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>notify.url: the final job document, signed, retried after a failure, its delivery state on the job.</summary>
[Collection(ServerCollection.Name)]
public sealed class WebhookFacts(ServerFixture f)
{
    [Fact]
    public async Task Webhook_IsSignedAndRetried_UntilTheReceiverTakesIt()
    {
        await using var receiver = WebhookReceiver.Start(failFirst: 1);
        const string jobSecret = "job-webhook-secret-0123456789";
        var job = await f.Api.SubmitAsync(new
        {
            image = f.Busybox,
            command = new[] { "sh", "-c", "echo done" },
            notify = new { url = receiver.Url, secret = jobSecret },
        });
        var id = BatchRunnerClient.Id(job);
        // The secret is the job's business: never shown back.
        Assert.DoesNotContain(jobSecret, job.GetRawText());
        Assert.Equal(receiver.Url, job.GetProperty("notify").GetProperty("url").GetString());
        Assert.Equal("waiting", job.GetProperty("notify").GetProperty("state").GetString());

        var delivered = await f.Api.WaitAsync(id, j => j.GetProperty("notify").GetProperty("state").GetString() == "delivered",
            TimeSpan.FromSeconds(60), "webhook delivered");
        var notify = delivered.GetProperty("notify");
        Assert.Equal(2, notify.GetProperty("attempts").GetInt32());
        Assert.NotEqual(JsonValueKind.Null, notify.GetProperty("deliveredAt").ValueKind);

        var calls = receiver.Calls.ToList();
        Assert.Equal(2, calls.Count);
        Assert.Equal(["1", "2"], calls.Select(c => c.Headers[WebhookSender.AttemptHeader]));
        foreach (var call in calls)
        {
            Assert.Equal(id, call.Headers[WebhookSender.DeliveryHeader]);
            Assert.Equal("application/json; charset=utf-8", call.Headers["Content-Type"]);
            // What a receiver does: HMAC-SHA256 of the bytes it got, with the job's secret.
            Assert.True(WebhookSignature.Verify(jobSecret, call.Body, call.Headers[WebhookSignature.Header]), call.Headers[WebhookSignature.Header]);
            Assert.False(WebhookSignature.Verify(ServerFixture.WebhookSecret, call.Body, call.Headers[WebhookSignature.Header]));
            var document = JsonDocument.Parse(call.Body).RootElement;
            Assert.Equal(id, document.GetProperty("id").GetString());
            Assert.Equal("succeeded", document.GetProperty("state").GetString());
            Assert.Equal(1, document.GetProperty("attempts").GetArrayLength());
        }
    }

    [Fact]
    public async Task Webhook_WithoutASecretOfItsOwn_IsSignedWithTheServers()
    {
        await using var receiver = WebhookReceiver.Start(failFirst: 0);
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "false" }, notify = new { url = receiver.Url } });
        await f.Api.WaitAsync(id, j => j.GetProperty("notify").GetProperty("state").GetString() == "delivered", TimeSpan.FromSeconds(60), "webhook delivered");
        var call = Assert.Single(receiver.Calls);
        Assert.True(WebhookSignature.Verify(ServerFixture.WebhookSecret, call.Body, call.Headers[WebhookSignature.Header]));
        Assert.Equal("failed", JsonDocument.Parse(call.Body).RootElement.GetProperty("state").GetString());
    }

    [Theory]
    [InlineData("http://169.254.169.254/latest/meta-data/", "notify.url")] // cloud metadata
    [InlineData("http://127.0.0.2:8080/hook", "notify.url")]               // loopback not named in AllowedHosts
    [InlineData("http://localhost:8080/hook", "notify.url")]
    [InlineData("ftp://example.com/hook", "notify.url")]
    [InlineData("http://user:pw@example.com/hook", "notify.url")]
    public async Task Webhook_ToAHostThePolicyRefuses_Gets400(string url, string field)
    {
        var response = await f.Api.PostJobAsync(new { image = f.Busybox, command = new[] { "true" }, notify = new { url } });
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, text);
        Assert.True(JsonDocument.Parse(text).RootElement.GetProperty("errors").TryGetProperty(field, out _), text);
    }
}

/// <summary>A webhook receiver on 127.0.0.1: answers 500 to the first <c>failFirst</c> calls, then 200; records every call.</summary>
internal sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly HttpListener _listener = new();
    private readonly Task _loop;
    private int _remainingFailures;

    public sealed record Call(IReadOnlyDictionary<string, string> Headers, byte[] Body);

    private WebhookReceiver(int failFirst)
    {
        _remainingFailures = failFirst;
        var port = Cluster.TestCluster.FreePort();
        Url = $"http://127.0.0.1:{port}/hook";
        _listener.Prefixes.Add($"http://127.0.0.1:{port}/");
        _listener.Start();
        _loop = Task.Run(LoopAsync);
    }

    public string Url { get; }
    public ConcurrentQueue<Call> Calls { get; } = new();

    public static WebhookReceiver Start(int failFirst) => new(failFirst);

    private async Task LoopAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext ctx;
            try { ctx = await _listener.GetContextAsync(); }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { return; }
            using var body = new MemoryStream();
            await ctx.Request.InputStream.CopyToAsync(body);
            Calls.Enqueue(new Call(ctx.Request.Headers.AllKeys.ToDictionary(k => k!, k => ctx.Request.Headers[k]!, StringComparer.OrdinalIgnoreCase), body.ToArray()));
            ctx.Response.StatusCode = Interlocked.Decrement(ref _remainingFailures) >= 0 ? 500 : 200;
            ctx.Response.Close();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _listener.Stop();
        _listener.Close();
        await _loop;
    }
}
