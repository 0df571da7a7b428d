using System.Globalization;
using System.Text;

namespace BatchRunner.Runtime.Logs;

/// <summary>
/// Reads stored streams in the order their output reached the relay, merging their indexes (<see cref="LogIndexRecord"/>)
/// by read number, optionally with each line prefixed by when it arrived (RFC 3339, UTC, microseconds). Where the
/// output changes stream in the middle of a line, a newline is added, so that every output line belongs to one
/// stream. Incremental: <see cref="PumpAsync"/> writes what can be placed now and can be called again as the job
/// writes more (follow).
/// </summary>
/// <remarks>
/// What can be placed: a group of one stream ends at its stream's next start or at an end record, which the
/// relay writes before the other stream's next start. So a group is complete once either is seen, and the one
/// group left open is the newest of all, whose bytes can be written as they come. Index files are read after
/// the data files are listed, and records are written before their bytes, so every byte on disk has its record.
/// </remarks>
public sealed class OrderedLogReader
{
    private readonly Source[] _sources;
    private readonly bool _timestamps;
    private int _lastSource = -1;
    private bool _atLineStart = true;
    private readonly byte[] _buffer = new byte[64 * 1024];

    /// <param name="streams">Name (as markers say it) and head file of each stream.</param>
    public OrderedLogReader(IReadOnlyList<(string Name, string HeadPath)> streams, bool timestamps)
    {
        _sources = streams.Select(s => new Source(s.Name, s.HeadPath)).ToArray();
        _timestamps = timestamps;
    }

    /// <summary>
    /// Writes to <paramref name="output"/> every byte that can be placed in order now. <paramref name="final"/>: the
    /// job has ended and its output is complete, so open groups end where their data ends. Returns true when it wrote anything.
    /// </summary>
    public async Task<bool> PumpAsync(Stream output, bool final, CancellationToken ct)
    {
        var o = new Output(output);
        // An index read between the relay's end record and the other stream's next start shows an open group
        // older than another: reading again sees the end.
        for (int attempt = 0; attempt < 3; attempt++)
        {
            foreach (var s in _sources) s.Refresh();
            if (!await EmitAsync(o, final, ct)) break;
        }
        await o.FlushAsync(ct);
        return o.Any;
    }

    /// <summary>Emits groups in read order; returns true when it stopped on an inconsistent read (retry).</summary>
    private async Task<bool> EmitAsync(Output o, bool final, CancellationToken ct)
    {
        while (true)
        {
            int next = -1;
            for (int i = 0; i < _sources.Length; i++)
            {
                if (_sources[i].Groups.Count == 0) continue;
                if (next < 0 || _sources[i].Groups[0].Seq < _sources[next].Groups[0].Seq) next = i;
            }
            if (next < 0)
            {
                // No group left; bytes without any record (a data file whose index a crash lost) go last.
                if (final)
                    for (int i = 0; i < _sources.Length; i++)
                        await WriteRangeAsync(o, i, long.MaxValue, _sources[i].LastTimeMicros, ct);
                return false;
            }
            var s = _sources[next];
            var g = s.Groups[0];
            if (g.End is { } end)
            {
                await WriteRangeAsync(o, next, end, g.TimeMicros, ct);
                s.Groups.RemoveAt(0);
                continue;
            }
            if (!final && _sources.Any(other => other != s && other.Groups.Count > 0)) return true;
            // The newest group: its bytes that were on disk before its index was read (later ones may be another
            // group's, whose record that read missed); at the end, all of them.
            await WriteRangeAsync(o, next, final ? long.MaxValue : s.DataEnd, g.TimeMicros, ct);
            if (final) s.Groups.RemoveAt(0);
            return false;
        }
    }

    /// <summary>Writes source <paramref name="index"/>'s bytes from its position up to <paramref name="end"/> (or its end of data).</summary>
    private async Task WriteRangeAsync(Output o, int index, long end, long timeMicros, CancellationToken ct)
    {
        var s = _sources[index];
        if (s.Position >= end) return;
        foreach (var file in LogFiles.List(s.HeadPath))
        {
            if (s.Position >= end) break;
            if (!file.Exists || file.End <= s.Position) continue;
            if (file.Offset >= end) break;
            FileStream fs;
            try { fs = StoredLog.OpenRead(file.Path); }
            catch (FileNotFoundException) { continue; }
            await using (fs)
            {
                if (file.Offset > s.Position)
                {
                    WriteMarker(o, index, file.Offset - s.Position, timeMicros);
                    s.Position = file.Offset;
                }
                fs.Seek(s.Position - file.Offset, SeekOrigin.Begin);
                while (s.Position < end)
                {
                    var want = (int)Math.Min(_buffer.Length, end - s.Position);
                    var n = await fs.ReadAsync(_buffer.AsMemory(0, want), ct);
                    if (n == 0) break;
                    WriteBytes(o, index, _buffer.AsSpan(0, n), timeMicros);
                    s.Position += n;
                    await o.FlushIfFullAsync(ct);
                }
            }
        }
        // Bytes up to a known end that are on no file were dropped after this group was indexed.
        if (end != long.MaxValue && s.Position < end)
        {
            WriteMarker(o, index, end - s.Position, timeMicros);
            s.Position = end;
        }
    }

    private void WriteBytes(Output o, int index, ReadOnlySpan<byte> bytes, long timeMicros)
    {
        if (_lastSource != index && !_atLineStart)
        {
            o.Write("\n"u8);
            _atLineStart = true;
        }
        _lastSource = index;
        while (!bytes.IsEmpty)
        {
            if (_atLineStart && _timestamps) o.Write(Timestamp(timeMicros));
            var nl = bytes.IndexOf((byte)'\n');
            var line = nl < 0 ? bytes : bytes[..(nl + 1)];
            o.Write(line);
            _atLineStart = nl >= 0;
            bytes = bytes[line.Length..];
        }
    }

    private void WriteMarker(Output o, int index, long dropped, long timeMicros)
    {
        if (!_atLineStart) o.Write("\n"u8);
        if (_timestamps) o.Write(Timestamp(timeMicros));
        o.Write(Encoding.UTF8.GetBytes(StoredLog.Marker(_sources[index].Name, dropped)));
        _lastSource = index;
        _atLineStart = true;
    }

    /// <summary>"2026-11-29T21:15:04.123456Z " for a time in microseconds since the Unix epoch.</summary>
    public static byte[] Timestamp(long timeMicros) =>
        Encoding.ASCII.GetBytes(DateTimeOffset.UnixEpoch.AddTicks(timeMicros * 10).UtcDateTime
            .ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z' ", CultureInfo.InvariantCulture));

    /// <summary>One stream: its groups not yet written, and how far its index files have been read.</summary>
    private sealed class Source(string name, string headPath)
    {
        private readonly Dictionary<string, (LogIndexCodec Codec, long Read)> _indexes = [];
        private readonly List<LogIndexRecord> _scratch = [];

        public string Name { get; } = name;
        public string HeadPath { get; } = headPath;
        /// <summary>The next stream offset to write.</summary>
        public long Position { get; set; }
        public List<Group> Groups { get; } = [];
        public long LastTimeMicros { get; private set; }
        /// <summary>The end of the stream's data when it was last listed, before its index was read.</summary>
        public long DataEnd { get; private set; }

        /// <summary>Reads the records added to the index files since the last call and turns them into groups.</summary>
        public void Refresh()
        {
            var files = LogFiles.List(HeadPath);
            DataEnd = files[^1].End;
            foreach (var file in files)
            {
                if (!file.Exists) continue;
                var path = LogFiles.IndexPath(file.Path);
                var (codec, read) = _indexes.TryGetValue(path, out var st) ? st : (new LogIndexCodec(), 0L);
                byte[] bytes;
                try
                {
                    using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                    if (fs.Length <= read) continue;
                    fs.Seek(read, SeekOrigin.Begin);
                    bytes = new byte[fs.Length - read];
                    fs.ReadExactly(bytes);
                }
                catch (FileNotFoundException) { continue; }
                _scratch.Clear();
                read += codec.Decode(bytes, _scratch);
                _indexes[path] = (codec, read);
                foreach (var r in _scratch) Add(r);
            }
        }

        private void Add(LogIndexRecord r)
        {
            var open = Groups.Count > 0 && Groups[^1].End is null ? Groups[^1] : null;
            if (r.IsStart)
            {
                if (open is not null) Groups[^1] = open with { End = Math.Max(r.Offset, open.Offset) };
                Groups.Add(new Group(r.Seq, r.Offset, r.TimeMicros, null));
                LastTimeMicros = r.TimeMicros;
            }
            else if (open is not null)
                Groups[^1] = open with { End = Math.Max(r.Offset, open.Offset) };
        }
    }

    /// <summary>Bytes [<see cref="Offset"/>, <see cref="End"/>) of a stream, read as number <see cref="Seq"/>; End null: still open.</summary>
    private sealed record Group(long Seq, long Offset, long TimeMicros, long? End);

    /// <summary>Buffers small writes (timestamps, single lines) into few writes of the response.</summary>
    private sealed class Output(Stream stream)
    {
        private readonly MemoryStream _pending = new();
        public bool Any { get; private set; }

        public void Write(ReadOnlySpan<byte> bytes)
        {
            _pending.Write(bytes);
            Any = true;
        }

        public async Task FlushIfFullAsync(CancellationToken ct)
        {
            if (_pending.Length >= 64 * 1024) await FlushAsync(ct);
        }

        public async Task FlushAsync(CancellationToken ct)
        {
            if (_pending.Length == 0) return;
            await stream.WriteAsync(_pending.GetBuffer().AsMemory(0, (int)_pending.Length), ct);
            _pending.SetLength(0);
        }
    }
}
