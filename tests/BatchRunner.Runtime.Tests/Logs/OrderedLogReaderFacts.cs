using System.Text;
using BatchRunner.Runtime.Logs;

namespace BatchRunner.Runtime.Tests.Logs;

/// <summary>The combined view (both streams in the order the relay read them) and per-line timestamps.</summary>
public sealed class OrderedLogReaderFacts
{
    [Fact]
    public async Task PumpAsync_GivesReadOrder_WhenTheStreamsAlternate()
    {
        using var d = new LogDir(64 * 1024);
        d.Read(0, "a\n");
        d.Read(1, "b\n");
        d.Read(0, "c\n");

        Assert.Equal("a\nb\nc\n", await d.OrderedAsync(false));
        Assert.Equal("a\nc\n", await d.OrderedAsync(false, 0));
    }

    [Fact]
    public async Task PumpAsync_PrefixesEachLineWithItsArrival_WhenTimestampsAreAsked()
    {
        using var d = new LogDir(64 * 1024);
        d.NowMicros = 1_764_450_000_123_456; // 2025-11-29T21:00:00.123456Z
        d.Read(0, "one\ntwo\n");
        d.Read(1, "err\n");

        Assert.Equal(
            "2025-11-29T21:00:00.123456Z one\n2025-11-29T21:00:00.123456Z two\n2025-11-29T21:00:00.125456Z err\n",
            await d.OrderedAsync(true));
    }

    [Fact]
    public async Task PumpAsync_StartsANewLine_WhenTheOtherStreamInterruptsALine()
    {
        using var d = new LogDir(64 * 1024);
        d.Read(0, "abc");
        d.Read(1, "x\n");
        d.Read(0, "def\n");

        Assert.Equal("abc\nx\ndef\n", await d.OrderedAsync(false));
        Assert.Matches(@"^\S+Z abc\n\S+Z x\n\S+Z def\n$", await d.OrderedAsync(true));
        Assert.Equal("abcdef\n", await d.StdoutTextAsync()); // the stream itself is unchanged
    }

    [Fact]
    public async Task PumpAsync_KeepsOneLine_WhenAStreamContinuesItAcrossReads()
    {
        using var d = new LogDir(64 * 1024);
        d.Read(0, "progress 10%");
        d.Read(0, " 20% done\n");

        Assert.Equal("progress 10% 20% done\n", await d.OrderedAsync(false));
    }

    [Fact]
    public async Task PumpAsync_WhileFollowing_WritesWhatAFinalReadOfTheWholeOutputWrites()
    {
        // The same reads go to a capped log, followed after every read, and to one without a cap, read at the end:
        // a follower that keeps up sees every byte, in the same order, although parts are dropped behind it.
        using var capped = new LogDir(6 * 1024);
        using var whole = new LogDir(1L << 30);
        var follower = capped.Reader(timestamps: true);
        using var followed = new MemoryStream();
        var random = new Random(7);
        for (int i = 0; i < 3000; i++)
        {
            var stream = random.Next(50) == 0 ? 1 : 0;
            // stdout sometimes writes part of a line; stderr (never dropped here) writes whole lines.
            var text = stream == 0 && random.Next(4) == 0 ? $"partial {i} " : $"line {i} of {(stream == 0 ? "out" : "err")}\n";
            capped.Read(stream, text);
            whole.Read(stream, text);
            await follower.PumpAsync(followed, final: false, CancellationToken.None);
        }
        await follower.PumpAsync(followed, final: true, CancellationToken.None);
        var reference = await whole.OrderedAsync(true);
        Assert.Equal(reference, Encoding.UTF8.GetString(followed.ToArray()));

        // Read at the end, the capped log is the reference's first and last lines with one marker between, and
        // whatever else it kept (stderr from the dropped stretch) in the reference's order.
        var lines = (await capped.OrderedAsync(true)).Split('\n');
        var all = reference.Split('\n');
        var marker = Assert.Single(lines, l => l.Contains("bytes of stdout dropped here"));
        var at = Array.IndexOf(lines, marker);
        Assert.Equal(all[..20], lines[..20]);
        Assert.Equal(all[^20..], lines[^20..]);
        var j = 0;
        foreach (var line in lines.Where(l => l != marker))
        {
            while (j < all.Length && all[j] != line) j++;
            Assert.True(j < all.Length, $"line \"{line}\" is not in the reference after the lines before it");
        }
        Assert.InRange(at, 20, lines.Length - 20);
    }

    [Fact]
    public async Task PumpAsync_WritesOneMarkerPerTruncatedStream_InTheCombinedView()
    {
        using var d = new LogDir(8 * 1024);
        d.Read(1, "stderr begins\n");
        for (int i = 0; i < 5000; i++) d.Read(0, $"stdout line {i:D5}\n");
        d.Read(1, "stderr ends\n");

        var combined = await d.OrderedAsync(false);
        Assert.StartsWith("stderr begins\nstdout line 00000\n", combined);
        Assert.EndsWith("stdout line 04999\nstderr ends\n", combined);
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(combined, @"\[batchrunner: \d+ bytes of stdout dropped here"));
        Assert.DoesNotContain("of stderr dropped", combined);
    }

    [Fact]
    public async Task PumpAsync_ReadsBytesWithoutRecords_AtTheEnd()
    {
        using var d = new LogDir(64 * 1024);
        d.Read(0, "indexed\n");
        d.Dispose();
        Directory.CreateDirectory(d.Dir);
        await File.WriteAllTextAsync(d.StdoutPath, "no index at all\n");

        Assert.Equal("no index at all\n", await d.OrderedAsync(false));
    }

    [Fact]
    public void LastLine_IsWhatATerminalShows_OfTheLastLineWithText()
    {
        using var d = new LogDir(64 * 1024);
        d.Read(1, "Traceback (most recent call last):\n  File \"train.py\", line 3\n");
        d.Read(1, "\u001b[31mKeyError:\u001b[0m 'learning_rate'\tat step\u0007 7\n\n  \n");

        Assert.Equal("KeyError: 'learning_rate' at step 7", StoredLog.LastLine(d.StderrPath, 0));
        Assert.Null(StoredLog.LastLine(d.StderrPath, d.Err.End));
    }

    [Fact]
    public void Sanitize_KeepsTheTextAfterTheLastCarriageReturn_AndCutsLongLines()
    {
        Assert.Equal("100% done", StoredLog.Sanitize("10%\r50%\r100% done\r", 200));
        Assert.Equal(new string('x', 20) + "…", StoredLog.Sanitize(new string('x', 500), 20));
    }
}
