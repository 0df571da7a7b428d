using System.Text;
using System.Text.RegularExpressions;
using BatchRunner.Runtime.Logs;

namespace BatchRunner.Runtime.Tests.Logs;

/// <summary>The cap, the head and the tail, the marker, crash recovery: the stored files, without root or a container.</summary>
public sealed class CappedLogWriterFacts
{
    private static string Line(int i) => $"line {i:D7} ................\n"; // 30 bytes

    private static readonly Regex MarkerPattern = new(@"\[batchrunner: (\d+) bytes of stdout dropped here[^\n]*\]\n");

    [Fact]
    public async Task Write_KeepsEveryByteInTheHeadFile_WhenTheStreamStaysUnderItsCap()
    {
        using var d = new LogDir(64 * 1024);
        var text = string.Concat(Enumerable.Range(0, 1000).Select(Line)); // 30,000 bytes
        foreach (var chunk in text.Chunk(4096)) d.Read(0, new string(chunk));

        Assert.Equal(text, await File.ReadAllTextAsync(d.StdoutPath));
        Assert.Equal(text, await d.StdoutTextAsync());
        Assert.Single(LogFiles.List(d.StdoutPath));
        Assert.False(d.Out.Truncated);
    }

    [Fact]
    public async Task AStreamThatGetsNoBytes_HasNoFile_AndItsFirstBytesMakeTheHeadAndIndex()
    {
        using var d = new LogDir(64 * 1024);
        d.Read(0, "only stdout\n");
        d.Out.Dispose();
        d.Err.Dispose();

        // stderr got nothing: no file at all (a silent job creates none), and every reader sees an empty stream.
        Assert.Equal(["stdout.log", "stdout.log.idx"], Directory.GetFiles(d.Dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal("", await StoredLog.ReadAllTextAsync(d.StderrPath, "stderr"));
        Assert.Equal(0, StoredLog.End(d.StderrPath));
        Assert.Equal("only stdout\n", await d.OrderedAsync(timestamps: false));

        // The next attempt's writer continues after the last read, and its first stderr bytes make the head.
        d.Reopen(dispose: false);
        d.Read(1, "late\n");
        d.Out.Dispose();
        d.Err.Dispose();
        Assert.Equal("late\n", await StoredLog.ReadAllTextAsync(d.StderrPath, "stderr"));
        Assert.Equal("only stdout\nlate\n", await d.OrderedAsync(timestamps: false));
    }

    [Fact]
    public void AnIndexLeftWithoutItsData_IsDeleted_WhenTheNextWriterOpens()
    {
        using var d = new LogDir(64 * 1024);
        d.Out.Dispose();
        d.Err.Dispose();
        // A crash between deleting a file's data and its index (EnforceCap deletes data first).
        File.WriteAllBytes(LogFiles.IndexPath(d.StdoutPath), [0, 0, 0]);
        File.WriteAllBytes(LogFiles.IndexPath(LogFiles.PartPath(d.StdoutPath, 4096)), [0, 0, 0]);

        d.Reopen(dispose: false);

        Assert.Empty(Directory.GetFiles(d.Dir));
    }

    [Fact]
    public async Task Write_KeepsHeadOneMarkerAndTail_WhenTheStreamGoesFarOverItsCap()
    {
        const long cap = 64 * 1024;
        using var d = new LogDir(cap);
        const int lines = 100_000; // 3,000,000 bytes
        var chunk = new StringBuilder();
        for (int i = 0; i < lines; i++)
        {
            chunk.Append(Line(i));
            if (chunk.Length >= 3000) { d.Read(0, chunk.ToString()); chunk.Clear(); }
        }
        d.Read(0, chunk.ToString());

        var stored = await d.StdoutTextAsync();
        Assert.True(d.Out.Truncated);
        Assert.InRange(Encoding.UTF8.GetByteCount(stored), cap / 2, cap);
        Assert.InRange(StoredLog.DiskBytes(d.StdoutPath), cap / 2, cap);
        var marker = Assert.Single(MarkerPattern.Matches(stored));
        var head = stored[..marker.Index];
        var tail = stored[(marker.Index + marker.Length)..];
        Assert.StartsWith(Line(0), head);
        Assert.EndsWith("\n", head);
        Assert.EndsWith(Line(lines - 1), tail);
        // Head and tail are whole lines, and the marker counts exactly what is missing between them.
        Assert.Matches(@"^line \d{7} ", tail);
        var lastHead = int.Parse(head[^30..][5..12]);
        var firstTail = int.Parse(tail[5..12]);
        Assert.Equal((long)(firstTail - lastHead - 1) * 30, long.Parse(marker.Groups[1].Value));
        Assert.Equal(30L * lines, d.Out.End);
    }

    [Fact]
    public void Write_NeverHoldsMoreThanTheCapPlusOneRead_WhileTheStreamGrows()
    {
        const long cap = 16 * 1024;
        using var d = new LogDir(cap);
        var read = new byte[1500];
        Array.Fill(read, (byte)'x');
        read[^1] = (byte)'\n';
        for (int i = 0; i < 2000; i++)
        {
            d.Read(i % 7 == 0 ? 1 : 0, read);
            Assert.InRange(StoredLog.DiskBytes(d.StdoutPath), 0, cap + read.Length + LogIndexCodec.MaxRecordBytes);
            Assert.InRange(StoredLog.DiskBytes(d.StderrPath), 0, cap + read.Length + LogIndexCodec.MaxRecordBytes);
        }
    }

    [Fact]
    public async Task Write_BoundsTheIndexByTheCap_WhenEveryReadIsOneByteAndTheStreamsAlternate()
    {
        const long cap = 8 * 1024;
        using var d = new LogDir(cap);
        for (int i = 0; i < 50_000; i++) d.Read(i % 2, i % 50 == 49 ? "\n" : "y");

        Assert.InRange(StoredLog.DiskBytes(d.StdoutPath), 0, cap);
        Assert.InRange(StoredLog.DiskBytes(d.StderrPath), 0, cap);
        Assert.Single(MarkerPattern.Matches(await d.StdoutTextAsync()));
    }

    [Fact]
    public async Task NewWriter_ContinuesTheStream_WhenTheLastOneCrashedMidRecord()
    {
        using var d = new LogDir(8 * 1024);
        for (int i = 0; i < 1000; i++) d.Read(i % 3 == 0 ? 1 : 0, Line(i));
        var endBefore = d.Out.End;
        var seqBefore = Math.Max(d.Out.LastSeq, d.Err.LastSeq);
        // A crash: the writers are never disposed, the last index gets half a record.
        var lastIndex = LogFiles.IndexPath(LogFiles.List(d.StdoutPath)[^1].Path);
        await File.AppendAllBytesAsync(lastIndex, [0x84, 0x80]);
        d.Reopen(dispose: false);

        Assert.Equal(endBefore, d.Out.End);
        Assert.Equal(seqBefore, Math.Max(d.Out.LastSeq, d.Err.LastSeq));
        d.Read(0, "after the crash\n");
        d.Read(1, "stderr after the crash\n");
        var stored = await d.StdoutTextAsync();
        Assert.EndsWith(Line(998) + "after the crash\n", stored);
        Assert.Single(MarkerPattern.Matches(stored));
        var ordered = await d.OrderedAsync(false);
        Assert.EndsWith(Line(998) + Line(999) + "after the crash\nstderr after the crash\n", ordered);
    }

    [Fact]
    public async Task NewWriter_RemovesIndexesWhoseDataFileIsGone()
    {
        using var d = new LogDir(8 * 1024);
        var orphan = LogFiles.IndexPath(LogFiles.PartPath(d.StdoutPath, 12345));
        await File.WriteAllBytesAsync(orphan, [2, 0, 0]);
        d.Reopen();
        Assert.False(File.Exists(orphan));
    }

    [Fact]
    public async Task CopyAsync_WritesTheMarkerAndGoesOn_WhenAFollowersNextBytesWereDropped()
    {
        const long cap = 8 * 1024;
        using var d = new LogDir(cap);
        for (int i = 0; i < 200; i++) d.Read(0, Line(i)); // 6,000 bytes: the head and a first part
        var cursor = new LogCursor();
        using var first = new MemoryStream();
        await StoredLog.CopyAsync(d.StdoutPath, "stdout", cursor, first, CancellationToken.None);
        Assert.Equal(6000, cursor.Position);

        for (int i = 200; i < 2000; i++) d.Read(0, Line(i)); // the part the follower was in is dropped
        using var second = new MemoryStream();
        await StoredLog.CopyAsync(d.StdoutPath, "stdout", cursor, second, CancellationToken.None);
        var text = Encoding.UTF8.GetString(second.ToArray());

        var marker = Assert.Single(MarkerPattern.Matches(text));
        Assert.Equal(0, marker.Index);
        Assert.EndsWith(Line(1999), text);
        Assert.Equal(2000L * 30, cursor.Position);
    }

    [Fact]
    public void Limits_RefuseACapBelowTheMinimum()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new LogLimits(LogLimits.MinBytes - 1));
    }

    [Fact]
    public void Codec_DecodesWhatItEncoded_AndStopsBeforeARecordCutShort()
    {
        var records = new[]
        {
            LogIndexRecord.Start(1, 0, 1_700_000_000_000_000), LogIndexRecord.End(17),
            LogIndexRecord.Start(5, 17, 1_699_999_999_999_000), LogIndexRecord.Start(6, 1L << 40, 1_700_000_000_500_000),
        };
        var encoder = new LogIndexCodec();
        var buffer = new byte[LogIndexCodec.MaxRecordBytes * records.Length];
        var length = 0;
        foreach (var r in records) length += encoder.Encode(r, buffer.AsSpan(length));

        var decoded = new List<LogIndexRecord>();
        Assert.Equal(length, new LogIndexCodec().Decode(buffer.AsSpan(0, length), decoded));
        Assert.Equal(records, decoded);

        decoded.Clear();
        var used = new LogIndexCodec().Decode(buffer.AsSpan(0, length - 1), decoded);
        Assert.Equal(records[..3], decoded);
        Assert.True(used < length - 1);
    }
}
