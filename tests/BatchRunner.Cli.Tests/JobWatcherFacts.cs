using System.Net;
using System.Text;
using BatchRunner.Cli.Connection;
using BatchRunner.Cli.Http;
using BatchRunner.Cli.Jobs;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Tests;

/// <summary>
/// What the watcher prints while a job starts, when stderr is not a terminal: one line per state change and the pull's
/// bytes. Logic only: the server is a fake that answers a scripted sequence of job documents.
/// </summary>
[Collection(ConsoleCollection.Name)]
public sealed class JobWatcherFacts
{
    private sealed class ScriptedJobs(params string[] documents) : HttpMessageHandler
    {
        private int _next;
        public int Requests => _next;

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            Assert.Equal("/api/v1/jobs/j1", request.RequestUri!.AbsolutePath);
            var body = documents[Math.Min(_next++, documents.Length - 1)];
            return Task.FromResult(new HttpResponseMessage(HttpStatusCode.OK) { Content = new StringContent(body, Encoding.UTF8, "application/json") });
        }
    }

    private static string Job(string state, long? done = null, long? total = null, string? message = null) =>
        System.Text.Json.JsonSerializer.Serialize(new
        {
            id = "j1", image = "registry:5000/team/big:1", state, message, node = state == "running" ? "node-a" : null,
            pullProgress = done is null ? null : new { bytesDone = done, bytesTotal = total },
        });

    [Fact]
    public async Task WaitUntilStarted_PrintsEachStateAndThePullsBytes_WhenNotOnATerminal()
    {
        var server = new ScriptedJobs(
            Job("starting"),
            Job("starting", 1L << 20, 80L << 20),
            Job("starting", 80L << 20, 80L << 20),
            Job("running"));
        using var api = new ApiClient(new ServerSettings(new Uri("http://server/"), "test", "k", "test"), server);
        var term = new Terminal(OutputFormat.Text, new Dictionary<string, string?>(), interactive: false);
        var captured = new StringWriter();
        var original = Console.Error;
        Console.SetError(captured);
        try
        {
            var started = await new JobWatcher(api, term).WaitUntilStartedAsync(new JobView(System.Text.Json.JsonDocument.Parse(Job("queued", message: "waiting for 1 CPU")).RootElement), CancellationToken.None);
            Assert.Equal("running", started.State);
        }
        finally
        {
            Console.SetError(original);
        }
        Assert.Equal(
            "queued: waiting for 1 CPU\nstarting\n" +
            "pulling registry:5000/team/big:1: 1.0 MiB of 80.0 MiB (1%)\n" +
            "pulling registry:5000/team/big:1: 80.0 MiB of 80.0 MiB (100%)\n" +
            "running on node node-a\n",
            captured.ToString().Replace("\r\n", "\n"));
        Assert.Equal(4, server.Requests);
    }
}

/// <summary>Tests that swap Console.Error run one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ConsoleCollection
{
    public const string Name = "console";
}
