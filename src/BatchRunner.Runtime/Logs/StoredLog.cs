using System.Globalization;
using System.Text;

namespace BatchRunner.Runtime.Logs;

/// <summary>
/// Reads one stored stream (<see cref="LogFiles"/>) as a person sees it: its bytes in order, with one marker line
/// where bytes were dropped. Safe while the writer appends and deletes: a part deleted under a reader is read as
/// part of the gap, a part already opened is read whole.
/// </summary>
public static class StoredLog
{
    /// <summary>The marker line for <paramref name="droppedBytes"/> bytes of <paramref name="stream"/>, newline included.</summary>
    public static string Marker(string stream, long droppedBytes) =>
        string.Create(CultureInfo.InvariantCulture, $"[batchrunner: {droppedBytes} bytes of {stream} dropped here: the log is over its cap and keeps its first and last parts]\n");

    /// <summary>
    /// Copies the stream from <paramref name="cursor"/>'s position to its current end into <paramref name="output"/>,
    /// a gap as its marker line (after a newline if the bytes before it did not end one), and advances the cursor.
    /// Returns the number of bytes written.
    /// </summary>
    public static async Task<long> CopyAsync(string headPath, string stream, LogCursor cursor, Stream output, CancellationToken ct)
    {
        long written = 0;
        var buffer = new byte[64 * 1024];
        foreach (var file in LogFiles.List(headPath))
        {
            if (!file.Exists || file.End <= cursor.Position) continue;
            FileStream fs;
            try { fs = OpenRead(file.Path); }
            catch (FileNotFoundException) { continue; } // deleted since it was listed: part of the gap
            await using (fs)
            {
                if (file.Offset > cursor.Position)
                {
                    var marker = Encoding.UTF8.GetBytes((cursor.AtLineStart ? "" : "\n") + Marker(stream, file.Offset - cursor.Position));
                    await output.WriteAsync(marker, ct);
                    written += marker.Length;
                    cursor.Advance(file.Offset, (byte)'\n');
                }
                fs.Seek(cursor.Position - file.Offset, SeekOrigin.Begin);
                int n;
                while ((n = await fs.ReadAsync(buffer, ct)) > 0)
                {
                    await output.WriteAsync(buffer.AsMemory(0, n), ct);
                    written += n;
                    cursor.Advance(cursor.Position + n, buffer[n - 1]);
                }
            }
        }
        return written;
    }

    /// <summary>The whole stream as text (for tests and small logs).</summary>
    public static async Task<string> ReadAllTextAsync(string headPath, string stream, CancellationToken ct = default)
    {
        using var ms = new MemoryStream();
        await CopyAsync(headPath, stream, new LogCursor(), ms, ct);
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>The stream's end offset: every byte written to it, kept or dropped.</summary>
    public static long End(string headPath) => LogFiles.List(headPath)[^1].End;

    /// <summary>Bytes of the stream kept on disk: data and index (what its cap bounds).</summary>
    public static long DiskBytes(string headPath) => LogFiles.All(headPath).Sum(f => new FileInfo(f) is { Exists: true } i ? i.Length : 0);

    /// <summary>The last up to <paramref name="maxBytes"/> kept bytes of the stream from the start of a line (a marker
    /// first if they start after a gap).</summary>
    public static async Task<string> TailAsync(string headPath, string stream, int maxBytes, CancellationToken ct = default)
    {
        var files = LogFiles.List(headPath);
        var start = Math.Max(0, files[^1].End - maxBytes);
        var atFileStart = start == 0;
        // Start inside kept bytes: a start in the gap would only show the gap's last few bytes as dropped.
        foreach (var f in files.Where(f => f.Exists && start < f.End))
        {
            if (start <= f.Offset) (start, atFileStart) = (f.Offset, true);
            break;
        }
        using var ms = new MemoryStream();
        await CopyAsync(headPath, stream, new LogCursor(start), ms, ct);
        var text = Encoding.UTF8.GetString(ms.ToArray());
        // Head and parts begin lines; elsewhere the first line is cut: drop it.
        var firstNewline = text.IndexOf('\n');
        return atFileStart || firstNewline < 0 ? text : text[(firstNewline + 1)..];
    }

    /// <summary>
    /// The last line (the last one with visible text) written to the stream at or after <paramref name="fromOffset"/>,
    /// as a person would see it on a terminal: the text after its last carriage return, escape sequences and control
    /// characters removed, cut to <paramref name="maxChars"/> characters. Null when there is none.
    /// </summary>
    public static string? LastLine(string headPath, long fromOffset, int maxChars = 200)
    {
        const int Window = 8 * 1024;
        var files = LogFiles.List(headPath);
        var end = files[^1].End;
        var start = Math.Max(fromOffset, end - Window);
        if (start >= end) return null;
        var bytes = new List<byte>();
        foreach (var f in files)
        {
            if (!f.Exists || f.End <= start) continue;
            try
            {
                using var h = File.OpenHandle(f.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                var from = Math.Max(start, f.Offset);
                var chunk = new byte[f.End - from];
                var n = RandomAccess.Read(h, chunk, from - f.Offset);
                bytes.AddRange(chunk.AsSpan(0, n));
            }
            catch (FileNotFoundException) { bytes.Clear(); } // a gap: only what follows it is the stream's end
        }
        var text = Encoding.UTF8.GetString(bytes.ToArray());
        foreach (var line in text.Split('\n').Reverse())
        {
            var visible = Sanitize(line, maxChars);
            if (visible.Length > 0) return visible;
        }
        return null;
    }

    /// <summary>What a terminal would show of <paramref name="line"/>: text after its last non-empty carriage return,
    /// without ANSI escape sequences or control characters (tabs become spaces), trimmed and cut to <paramref name="maxChars"/>.</summary>
    public static string Sanitize(string line, int maxChars)
    {
        var pieces = line.Split('\r');
        var shown = pieces.LastOrDefault(p => !string.IsNullOrWhiteSpace(p)) ?? "";
        var sb = new StringBuilder(Math.Min(shown.Length, maxChars + 1));
        for (int i = 0; i < shown.Length; i++)
        {
            var c = shown[i];
            if (c == '\u001b')
            {
                // CSI (ESC [ ... final byte 0x40-0x7e) or a two-character escape.
                if (i + 1 < shown.Length && shown[i + 1] == '[')
                {
                    i += 2;
                    while (i < shown.Length && shown[i] is < '@' or > '~') i++;
                }
                else i++;
                continue;
            }
            if (c == '\t') sb.Append(' ');
            else if (!char.IsControl(c) && c != '\uFFFD') sb.Append(c);
        }
        var result = sb.ToString().Trim();
        return result.Length <= maxChars ? result : result[..maxChars].TrimEnd() + "…";
    }

    internal static FileStream OpenRead(string path) =>
        new(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.Asynchronous | FileOptions.SequentialScan);
}

/// <summary>Where a reader is in a stream: the next offset to read, and whether what it wrote so far ended a line.</summary>
public sealed class LogCursor(long position = 0)
{
    public long Position { get; private set; } = position;
    public bool AtLineStart { get; private set; } = true;

    public void Advance(long position, byte lastByte)
    {
        Position = position;
        AtLineStart = lastByte == (byte)'\n';
    }
}
