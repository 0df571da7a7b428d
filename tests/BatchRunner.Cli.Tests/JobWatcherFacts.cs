using System.Net;
using System.Text;
using BatchRunner.Cli.Connection;
using BatchRunner.Cli.Http;
using BatchRunner.Cli.Jobs;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Tests;

/// <summary>
/// What the watcher prints while a job starts, when stderr is not a terminal: one line per state change and the pull's
/// bytes; how it waits (the server's long poll, or plain polls against a server without it). Logic only: the server is a
/// fake that answers a scripted sequence of job documents.
/// </summary>
[Collection(ConsoleCollection.Name)]
public sealed class JobWatcherFacts
{
    /// <summary>Answers each request with the next document; a document starting with "400 " is a problem answer of status 400.</summary>
    private sealed class ScriptedJobs(params string[] documents) : HttpMessageHandler
    {
        private int _next;
        public int Requests => _next;
        public List<string> Queries { get; } = [];

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            Assert.Equal("/api/v1/jobs/j1", request.RequestUri!.AbsolutePath);
            Queries.Add(request.RequestUri.Query);
            var body = documents[Math.Min(_next++, documents.Length - 1)];
            if (body.StartsWith("400 ", StringComparison.Ordinal))
                return Task.FromResult(new HttpResponseMessage(HttpStatusCode.BadRequest) { Content = new StringContent(body[4..], Encoding.UTF8, "application/problem+json") });
            return Task.FromResult(new HttpResponseMessage(HttpStatusCode.OK) { Content = new StringContent(body, Encoding.UTF8, "application/json") });
        }
    }

    private static ApiClient Api(ScriptedJobs server) => new(new ServerSettings(new Uri("http://server/"), "test", "k", "test"), server);

    private static Terminal Plain() => new(OutputFormat.Text, new Dictionary<string, string?>(), interactive: false);

    [Fact]
    public async Task WaitForFinal_AsksTheServersLongPoll_OneRequestPerChange()
    {
        var server = new ScriptedJobs(Job("queued"), Job("running"), Job("succeeded"));
        using var api = Api(server);
        var job = await new JobWatcher(api, Plain()).WaitForFinalAsync("j1", CancellationToken.None);
        Assert.Equal("succeeded", job.State);
        Assert.Equal(["", "?waitSeconds=30&whileState=queued", "?waitSeconds=30&whileState=running"], server.Queries);
    }

    [Fact]
    public async Task WaitForFinal_PollsPlainly_WhenTheServerRefusesTheLongPoll()
    {
        // What a server older than the long poll answers: its query check names the parameter it does not take.
        const string refused = """400 {"title":"The query is invalid","status":400,"errors":{"waitSeconds":["unknown query parameter"]}}""";
        var server = new ScriptedJobs(Job("running"), refused, Job("running"), Job("succeeded"));
        using var api = Api(server);
        var job = await new JobWatcher(api, Plain()).WaitForFinalAsync("j1", CancellationToken.None);
        Assert.Equal("succeeded", job.State);
        Assert.Equal(["", "?waitSeconds=30&whileState=running", "", ""], server.Queries);
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
        using var api = Api(server);
        var term = Plain();
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
        // Each one the server's long poll: the pull's progress every 0.2 s while starting, a queued job's message every 2 s.
        Assert.Equal(["?waitSeconds=2&whileState=queued", "?waitSeconds=0.2&whileState=starting", "?waitSeconds=0.2&whileState=starting", "?waitSeconds=0.2&whileState=starting"], server.Queries);
    }
}

/// <summary>Tests that swap Console.Error run one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ConsoleCollection
{
    public const string Name = "console";
}
