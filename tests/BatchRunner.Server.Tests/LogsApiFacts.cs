using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using BatchRunner.Runtime.Logs;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>Logs through the HTTP API: the cap with head, marker and tail, follow across truncation, the combined
/// view with timestamps, the status trailer, and stderr's last line in a failed job's message. Real server and runc.</summary>
[Collection(ServerCollection.Name)]
public sealed class LogsApiFacts(ServerFixture f)
{
    private static readonly Regex Marker = new(@"\[batchrunner: (\d+) bytes of stdout dropped here[^\]\n]*\]\n");

    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(90);

    private string Logs(string id, string query) => $"/api/v1/jobs/{id}/logs?{query}";

    [Fact]
    public async Task HugeStdout_KeepsHeadMarkerAndTailWithinTheCap_AndTheJobSucceeds()
    {
        const long cap = 1 << 20;
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "sh", "-c", "echo BEGIN; yes 'the same line of output, again and again' | head -c 300000000; echo; echo END" },
            logs = new { maxBytes = "1Mi" },
        });
        var done = await f.Api.WaitForFinalAsync(id, Deadline);

        Assert.Equal("succeeded", BatchRunnerClient.State(done));
        Assert.True(done.GetProperty("logsTruncated").GetBoolean());
        var stdout = await f.Api.LogsAsync(id, "stdout");
        Assert.InRange(stdout.Length, cap / 2, cap);
        Assert.StartsWith("BEGIN\nthe same line", stdout);
        Assert.EndsWith("\nEND\n", stdout);
        var marker = Assert.Single(Marker.Matches(stdout));
        Assert.InRange(long.Parse(marker.Groups[1].Value, CultureInfo.InvariantCulture), 300_000_000 - cap, 300_000_000);
        // On disk too: the stream's files (data and index) hold no more than the cap.
        var head = Path.Combine(f.DataDir, "jobs", Guid.Parse(id).ToString("N"), "stdout.log");
        Assert.InRange(StoredLog.DiskBytes(head), cap / 2, cap);
        Assert.Equal("", await f.Api.LogsAsync(id, "stderr"));
    }

    [Fact]
    public async Task FollowLogs_GetTheMarkerAndGoOn_WhenTruncationDropsWhatTheyHadNotRead()
    {
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "sh", "-c", "echo BEGIN; sleep 0.5; yes 'a line that will mostly be dropped' | head -c 50000000; echo; echo END" },
            logs = new { maxBytes = "1Mi" },
        });
        using var cts = new CancellationTokenSource(Deadline);
        var text = await f.Client.GetStringAsync(Logs(id, "stream=stdout&follow=true&status=true"), cts.Token);

        Assert.StartsWith("BEGIN\n", text);
        Assert.EndsWith("\nEND\n[batchrunner: job succeeded, exit code 0: exited with code 0]\n", text);
        Assert.NotEmpty(Marker.Matches(text));
        Assert.InRange(text.Length, 1, 50_000_000);
        Assert.True((await f.Api.GetJobAsync(id)).GetProperty("logsTruncated").GetBoolean());
    }

    [Fact]
    public async Task CombinedLogs_InterleaveTheStreamsAsWritten_WithTimestampsWhenAsked()
    {
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "sh", "-c", "sleep 0.3; echo a; sleep 0.1; echo b >&2; sleep 0.1; echo c" },
        });
        // Followed while it runs, then read once it has ended: the same lines.
        using var cts = new CancellationTokenSource(Deadline);
        Assert.Equal("a\nb\nc\n", await f.Client.GetStringAsync(Logs(id, "stream=combined&follow=true"), cts.Token));
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("a\nb\nc\n", await f.Client.GetStringAsync(Logs(id, "stream=combined")));
        Assert.False(done.GetProperty("logsTruncated").GetBoolean());

        var stamped = (await f.Client.GetStringAsync(Logs(id, "stream=combined&timestamps=true"))).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["a", "b", "c"], stamped.Select(l => l[(l.IndexOf(' ') + 1)..]));
        var times = stamped.Select(l => DateTimeOffset.Parse(l[..l.IndexOf(' ')], CultureInfo.InvariantCulture)).ToList();
        Assert.All(stamped, l => Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z ", l));
        Assert.Equal(times.Order(), times);
        Assert.InRange(times[2] - times[0], TimeSpan.FromMilliseconds(150), TimeSpan.FromSeconds(5));
        Assert.InRange(times[0], done.GetProperty("startedAt").GetDateTimeOffset().AddSeconds(-1), done.GetProperty("finishedAt").GetDateTimeOffset());
        Assert.Matches(@"^\S+Z b\n$", await f.Client.GetStringAsync(Logs(id, "stream=stderr&timestamps=true")));

        // The plain forms are unchanged: stdout then stderr, byte for byte.
        Assert.Equal("a\nc\nb\n", await f.Api.LogsAsync(id));
        Assert.Equal("a\nc\n", await f.Api.LogsAsync(id, "stdout"));
    }

    [Fact]
    public async Task FailedJob_QuotesItsLastStderrLine_AndTheTrailerSaysHowItEnded_OnlyWhenAsked()
    {
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "sh", "-c", "sleep 0.3; echo loading; echo 'Traceback (most recent call last):' >&2; printf '\\033[31mKeyError\\033[0m:\\t'\"'\"'learning_rate'\"'\"'\\r\\n\\n' >&2; exit 3" },
        });
        using var cts = new CancellationTokenSource(Deadline);
        var followed = await f.Client.GetStringAsync(Logs(id, "stream=stdout&follow=true&status=true"), cts.Token);
        var done = await f.Api.WaitForFinalAsync(id);

        Assert.Equal("failed", BatchRunnerClient.State(done));
        Assert.Equal("exited with code 3: KeyError: 'learning_rate'", done.GetProperty("message").GetString());
        Assert.Equal("loading\n[batchrunner: job failed, reason exit_code, exit code 3: exited with code 3: KeyError: 'learning_rate']\n", followed);
        Assert.Equal("loading\n", await f.Client.GetStringAsync(Logs(id, "stream=stdout&follow=true")));
        Assert.EndsWith("\n[batchrunner: job failed, reason exit_code, exit code 3: exited with code 3: KeyError: 'learning_rate']\n",
            await f.Client.GetStringAsync(Logs(id, "status=true")));
    }

    [Theory]
    [InlineData("1Gi", "must not exceed this node's MaxLogBytes (100Mi)")]
    [InlineData(0, "logs.maxBytes must be positive: an integer")]
    [InlineData("lots", "logs.maxBytes \"lots\" is not a quantity")]
    [InlineData("1Ki", "must be at least 4Ki")]
    public async Task Submit_RefusesLogsMaxBytes_NamingTheField_WhenItIsNotAllowed(object maxBytes, string why)
    {
        var response = await f.Api.PostJobAsync(new { image = f.Busybox, command = new[] { "true" }, logs = new { maxBytes } });
        var text = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var errors = JsonDocument.Parse(text).RootElement.GetProperty("errors");
        Assert.Contains(why, errors.GetProperty("logs.maxBytes")[0].GetString());
    }

    [Fact]
    public async Task Logs_RefuseTimestampsWithoutAStream_AndUnknownStreams()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" } });
        var stamped = await f.Client.GetAsync(Logs(id, "timestamps=true"));
        Assert.Equal(HttpStatusCode.BadRequest, stamped.StatusCode);
        Assert.Contains("\"timestamps\"", await stamped.Content.ReadAsStringAsync());
        var unknown = await f.Client.GetAsync(Logs(id, "stream=both"));
        Assert.Equal(HttpStatusCode.BadRequest, unknown.StatusCode);
        Assert.Contains("combined", await unknown.Content.ReadAsStringAsync());
    }
}
