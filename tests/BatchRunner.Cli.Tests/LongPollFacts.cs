using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Cli.Connection;
using BatchRunner.Cli.Http;
using BatchRunner.Cli.Jobs;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Tests;

/// <summary>
/// The CLI's wait for a job's end against the real server: a request or two (the server's long poll) instead of one
/// every 0.2 s, and the end known within a moment of it.
/// </summary>
[Collection(CliCollection.Name)]
public sealed class LongPollFacts(CliFixture f)
{
    private sealed class Counting() : DelegatingHandler(new SocketsHttpHandler())
    {
        private int _requests;
        public int Requests => _requests;

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            Interlocked.Increment(ref _requests);
            return base.SendAsync(request, ct);
        }
    }

    [Fact]
    public async Task WaitForFinal_UsesTheServersLongPoll_AndLearnsOfTheEndAtOnce()
    {
        var submitted = await f.Client.PostAsJsonAsync("/api/v1/jobs", new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "sleep 3" } });
        Assert.True(submitted.IsSuccessStatusCode, await submitted.Content.ReadAsStringAsync());
        var id = JsonDocument.Parse(await submitted.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!;

        var counting = new Counting();
        using var api = new ApiClient(new ServerSettings(new Uri(f.Url), "test", CliFixture.ApiKey, "test"), counting);
        var job = await new JobWatcher(api, new Terminal(OutputFormat.Text, new Dictionary<string, string?>(), interactive: false))
            .WaitForFinalAsync(id, CancellationToken.None);
        var late = DateTimeOffset.UtcNow - job.FinishedAt!.Value;

        Assert.Equal("succeeded", job.State);
        // The first read, then one wait per state change (queued → starting → running → succeeded at most): polling every
        // 0.2 s would have taken about 15.
        Assert.True(counting.Requests <= 5, $"{counting.Requests} requests for a 3 s job");
        Assert.True(late < TimeSpan.FromSeconds(1.5), $"learnt of the end {late.TotalMilliseconds:F0} ms after it");
    }
}
