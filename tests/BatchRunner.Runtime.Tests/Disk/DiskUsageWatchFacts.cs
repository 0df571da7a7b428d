using BatchRunner.Runtime.Disk;
using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests.Disk;

/// <summary>The sampling logic, over a volume whose readings the test sets.</summary>
public sealed class DiskUsageWatchFacts
{
    private sealed class ScriptedVolume(long limitBytes) : IDiskVolume
    {
        private readonly object _gate = new();
        private DiskUsage _now = new(0, limitBytes, limitBytes, 100);
        public int Reads;
        public string Path => "/nowhere";
        public long LimitBytes => limitBytes;
        public void Set(long used, long freeInodes = 100) { lock (_gate) _now = new DiskUsage(used, limitBytes, limitBytes - used, freeInodes); }
        public DiskUsage ReadUsage() { Interlocked.Increment(ref Reads); lock (_gate) return _now; }
        public void ReleaseFreedSpace() { }
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    [Fact]
    public async Task StopAsync_ReportsOverLimit_WhenAReadingBetweenStartAndStopWasOverAndTheFilesAreGoneSince()
    {
        var volume = new ScriptedVolume(100);
        await using var watch = DiskUsageWatch.Start(volume, TimeSpan.FromMilliseconds(10));

        volume.Set(150);
        await Poll.UntilAsync(() => Task.FromResult(watch.OverLimit), o => o, TimeSpan.FromSeconds(10), "an over-limit reading");
        volume.Set(20); // the job deleted its files and exited 0
        var summary = await watch.StopAsync();

        Assert.Equal(new DiskUsageSummary(150, 20, 100, OverLimit: true, OutOfInodes: false), summary);
    }

    [Fact]
    public async Task StopAsync_ReadsOnceMore_SoAFullDiskAtTheEndIsAlwaysSeen()
    {
        var volume = new ScriptedVolume(100);
        var watch = DiskUsageWatch.Start(volume, TimeSpan.FromHours(1));

        volume.Set(101);
        var summary = await watch.StopAsync();

        Assert.True(summary.OverLimit);
        Assert.Equal(101, summary.PeakUsedBytes);
    }

    [Fact]
    public async Task StopAsync_IsNotOverLimit_WhenTheJobStayedWithinIt()
    {
        var volume = new ScriptedVolume(100);
        var watch = DiskUsageWatch.Start(volume, TimeSpan.FromMilliseconds(10));
        volume.Set(100);
        await Poll.UntilAsync(() => Task.FromResult(volume.Reads), r => r > 3, TimeSpan.FromSeconds(10), "a few readings");

        var summary = await watch.StopAsync();

        Assert.Equal(new DiskUsageSummary(100, 100, 100, OverLimit: false, OutOfInodes: false), summary);
    }

    /// <summary>The stop ends the sampling loop's wait without an exception thrown: one per job before (a
    /// TaskCanceledException, each a stack walk in the server's process).</summary>
    [Fact]
    public async Task StopAsync_EndsTheSampling_WithoutAnExceptionThrown()
    {
        var thrown = 0;
        void Count(object? _, System.Runtime.ExceptionServices.FirstChanceExceptionEventArgs e)
        {
            if (e.Exception is OperationCanceledException && (e.Exception.StackTrace ?? "").Contains(nameof(DiskUsageWatch)))
                Interlocked.Increment(ref thrown);
        }
        AppDomain.CurrentDomain.FirstChanceException += Count;
        try
        {
            var volume = new ScriptedVolume(100);
            var watch = DiskUsageWatch.Start(volume, TimeSpan.FromMilliseconds(10));
            await Poll.UntilAsync(() => Task.FromResult(volume.Reads), r => r > 2, TimeSpan.FromSeconds(10), "a few readings");
            await watch.StopAsync();
            await watch.DisposeAsync();
        }
        finally
        {
            AppDomain.CurrentDomain.FirstChanceException -= Count;
        }
        Assert.Equal(0, thrown);
    }

    [Fact]
    public async Task StopAsync_SaysOutOfInodes_WhenTheFilesRanOutFirst()
    {
        var volume = new ScriptedVolume(100);
        var watch = DiskUsageWatch.Start(volume, TimeSpan.FromHours(1));

        volume.Set(10, freeInodes: 0);
        var summary = await watch.StopAsync();

        Assert.True(summary.OverLimit);
        Assert.True(summary.OutOfInodes);
    }

    [Theory]
    [InlineData(100L << 30, 200)]
    [InlineData(800L << 20, 97.65625)]
    [InlineData(16L << 20, 1.953125)]
    [InlineData(0L, 1)]
    public void NextInterval_LooksAgainBeforeAFastWriterCouldFillWhatIsLeft(long availableBytes, double milliseconds) =>
        Assert.Equal(milliseconds, DiskUsageWatch.NextInterval(availableBytes, DiskUsageWatch.MaxInterval).TotalMilliseconds, precision: 3);
}
