using System.Text.Json;
using System.Text.RegularExpressions;

namespace BatchRunner.Cli.Tests;

/// <summary>
/// The CLI against server features that landed after it: <c>--disk</c> (per-job disk limits), <c>logs --stream
/// combined</c> and <c>--timestamps</c> (capped, ordered logs), and <c>delete</c> (deletion with the job's files).
/// </summary>
[Collection(CliCollection.Name)]
public sealed class ServerFeatureCommandFacts(CliFixture f)
{
    [Fact]
    public async Task Run_WithDisk_EndsDiskQuotaExceeded_AndSaysSo_WhenTheJobWritesPastIt()
    {
        var r = await f.RunAsync("run", "--disk", "16Mi", "-o", "json", f.Busybox, "--",
            "sh", "-c", "dd if=/dev/zero of=/outputs/big bs=1M count=96 2>/dev/null; exit 0");
        // The job's own exit code was 0: the CLI still fails, as the job did.
        Assert.NotEqual(0, r.ExitCode);
        var job = JsonDocument.Parse(r.Stdout).RootElement;
        Assert.Equal("failed", job.GetProperty("state").GetString());
        Assert.Equal("disk_quota_exceeded", job.GetProperty("reason").GetString());
        Assert.Equal(16L << 20, job.GetProperty("resources").GetProperty("diskBytes").GetInt64());
    }

    [Fact]
    public async Task Logs_Combined_InterleavesTheStreamsInOrder_AndTimestampsPrefixEachLine()
    {
        var run = await f.RunAsync("run", f.Busybox, "--", "sh", "-c", "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three");
        Assert.Equal(0, run.ExitCode);
        var id = Regex.Match(run.Stderr, @"job (\S+) submitted").Groups[1].Value;

        var combined = await f.RunAsync("logs", "--stream", "combined", id);
        Assert.Equal(0, combined.ExitCode);
        Assert.Equal(["one", "two", "three"], combined.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));

        var stamped = await f.RunAsync("logs", "--stream", "stdout", "--timestamps", id);
        Assert.Equal(0, stamped.ExitCode);
        var lines = stamped.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.All(lines, l => Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (one|three)$", l));
    }

    [Fact]
    public async Task Delete_RemovesAFinishedJob_AndRefusesARunningOne()
    {
        var run = await f.RunAsync("run", f.Busybox, "--", "sh", "-c", "echo kept > /outputs/a.txt");
        Assert.Equal(0, run.ExitCode);
        var id = Regex.Match(run.Stderr, @"job (\S+) submitted").Groups[1].Value;

        var running = await f.RunAsync("run", "-d", f.Busybox, "--", "sleep", "60");
        var runningId = running.Stdout.Trim();
        try
        {
            var refused = await f.RunAsync("delete", runningId);
            Assert.NotEqual(0, refused.ExitCode);
            Assert.Contains("(409", refused.Stderr);
        }
        finally
        {
            await f.RunAsync("cancel", runningId);
        }

        var deleted = await f.RunAsync("delete", id);
        Assert.True(deleted.ExitCode == 0, deleted.ToString());
        var gone = await f.RunAsync("status", id);
        Assert.NotEqual(0, gone.ExitCode);
        Assert.Contains("(404", gone.Stderr);
    }
}
