using BatchRunner.Runtime.Logs;
using BatchRunner.Server.Dashboard;

namespace BatchRunner.Server.Tests.Dashboard;

/// <summary>The job page's log tail, from a stored log that went over its cap.</summary>
public sealed class JobDetailsFacts : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("br-jobdetails-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void TailLines_ShowsTheEndOfTheKeptTail_WhenTheLogWasTruncated()
    {
        var head = Path.Combine(_dir, "stdout.log");
        using (var w = new CappedLogWriter(head, new LogLimits(64 * 1024)))
            for (int i = 0; i < 20_000; i++) w.Write(System.Text.Encoding.UTF8.GetBytes($"line {i}\n"), i + 1, 0);

        Assert.Equal(string.Join('\n', Enumerable.Range(19_995, 5).Select(i => $"line {i}")), JobDetails.TailLines(head, "stdout", 5));
        Assert.Null(JobDetails.TailLines(Path.Combine(_dir, "stderr.log"), "stderr", 5));
    }

    [Fact]
    public void TailLines_StartsAtALineStart_WhenTheLogIsLongerThanItReads()
    {
        var head = Path.Combine(_dir, "stdout.log");
        File.WriteAllText(head, string.Concat(Enumerable.Range(0, 10_000).Select(i => $"line {i:D5} ........\n")));

        var tail = JobDetails.TailLines(head, "stdout", 100_000)!.Split('\n');
        Assert.Matches(@"^line \d{5} \.{8}$", tail[0]);
        Assert.Equal("line 09999 ........", tail[^1]);
    }
}
