using Microsoft.Win32.SafeHandles;

namespace BatchRunner.Runtime.Logs;

/// <summary>
/// Stores one output stream in the files <see cref="LogFiles"/> describes, within <see cref="LogLimits"/>: the head
/// until it is full, then tail parts, deleting the oldest part whenever the stream's files together exceed the
/// cap. Each write appends to one file (data after its index record), so followers and a crash at any moment
/// see a well-formed log. Not thread-safe: one relay thread owns it.
/// </summary>
/// <remarks>
/// Opening a writer on files an earlier attempt (or a crashed worker) left continues that stream: the offsets,
/// the sequence and the truncation carry on, an index record cut short by the crash is removed, and the group it
/// left open is ended.
/// </remarks>
public sealed class CappedLogWriter : IDisposable
{
    /// <summary>Reads of one stream within this many microseconds of its group's start share that start (and timestamp).</summary>
    public const long GroupMicros = 1000;

    private readonly string _head;
    private readonly LogLimits _limits;
    /// <summary>Kept files before the current one (head first), with the bytes each holds (data and index).</summary>
    private readonly List<(string Path, long Offset, long Used)> _older = [];
    private OpenFile? _current;
    /// <summary>Nothing was stored when this writer opened and nothing has been written since: the head is made by the first write.</summary>
    private bool _noFileYet;
    private bool _groupOpen;
    private long _lastChunkSeq;
    private long _groupStartMicros;
    private volatile bool _truncated;
    private readonly byte[] _record = new byte[LogIndexCodec.MaxRecordBytes];

    public CappedLogWriter(string headPath, LogLimits limits)
    {
        _head = Path.GetFullPath(headPath);
        _limits = limits;
        Recover();
    }

    /// <summary>The stream offset the next byte gets (bytes written so far, kept or dropped, over every attempt).</summary>
    public long End { get; private set; }

    /// <summary>The highest read number in the index (0 when none): a relay continues after it.</summary>
    public long LastSeq { get; private set; }

    /// <summary>True once bytes of this stream were dropped (by this writer or an earlier one).</summary>
    public bool Truncated => _truncated;

    /// <summary>Stores <paramref name="data"/>, read as number <paramref name="seq"/> at <paramref name="timeMicros"/> (µs since the Unix epoch).</summary>
    /// <exception cref="IOException">The disk refused a write; the caller decides what to do with the stream.</exception>
    public void Write(ReadOnlySpan<byte> data, long seq, long timeMicros)
    {
        var newGroup = !_groupOpen || seq != _lastChunkSeq + 1 || timeMicros - _groupStartMicros >= GroupMicros;
        while (!data.IsEmpty)
        {
            var file = Writable();
            var n = file.Take(data);
            if (n == 0) continue; // the file just closed: the next one takes the bytes
            if (newGroup || !file.HasStart)
            {
                AppendRecord(file, LogIndexRecord.Start(seq, End, timeMicros));
                if (newGroup) _groupStartMicros = timeMicros;
                newGroup = false;
            }
            file.AppendData(data[..n]);
            End += n;
            data = data[n..];
            EnforceCap();
        }
        _groupOpen = true;
        _lastChunkSeq = seq;
        LastSeq = Math.Max(LastSeq, seq);
    }

    /// <summary>Ends the open group at the current offset: output of the other stream comes next.</summary>
    public void EndGroup()
    {
        if (!_groupOpen) return;
        _groupOpen = false;
        if (_current is { } f) AppendRecord(f, LogIndexRecord.End(End));
    }

    public void Dispose()
    {
        _current?.Dispose();
        _current = null;
    }

    private void AppendRecord(OpenFile file, LogIndexRecord record) =>
        file.AppendIndex(_record.AsSpan(0, file.Codec.Encode(record, _record)), record.IsStart);

    /// <summary>The file the next bytes go to: the current one unless it is closed, else a new part at <see cref="End"/>.</summary>
    private OpenFile Writable()
    {
        if (_current is { IsClosed: false } open) return open;
        if (_noFileYet)
        {
            _noFileYet = false;
            // A stream with nothing stored yet gets its head with its first bytes: a job that prints nothing makes no file.
            Directory.CreateDirectory(Path.GetDirectoryName(_head)!);
            _current = OpenFile.Create(_head, 0, _limits.HeadBytes, _limits.AlignBytes);
            return _current;
        }
        if (_current is { } closed)
        {
            _older.Add((closed.Path, closed.Offset, closed.Used));
            closed.Dispose();
        }
        var path = LogFiles.PartPath(_head, End);
        _current = OpenFile.Create(path, End, _limits.PartBytes, _limits.AlignBytes);
        return _current;
    }

    /// <summary>Deletes the oldest tail parts (never the head, never the part being written) while the stream is over its cap.</summary>
    private void EnforceCap()
    {
        var total = (_current?.Used ?? 0) + _older.Sum(f => f.Used);
        while (total > _limits.KeepBytes && _older.Count > 1)
        {
            var oldest = _older[1]; // [0] is the head
            // Data first: an index whose data file is gone is ignored by readers and swept by the next writer.
            File.Delete(oldest.Path);
            File.Delete(LogFiles.IndexPath(oldest.Path));
            _older.RemoveAt(1);
            total -= oldest.Used;
            _truncated = true;
        }
    }

    private void Recover()
    {
        var indexes = new List<string>();
        var files = LogFiles.List(_head, indexes);
        // An index whose data file is gone (deleted first, see EnforceCap) goes too.
        foreach (var idx in indexes)
        {
            var data = idx[..^LogFiles.IndexSuffix.Length];
            if (!files.Any(f => f.Exists && f.Path == data)) File.Delete(idx);
        }
        // Nothing stored yet (the first attempt): no file until the first bytes (Writable).
        if (files is [{ Exists: false }])
        {
            _noFileYet = true;
            return;
        }
        _truncated = files.Count > 1 && files[1].Offset > files[0].Length;
        var last = files[^1];
        End = last.End;
        foreach (var f in files.Take(files.Count - 1))
            _older.Add((f.Path, f.Offset, f.Length + IndexLength(f.Path)));
        _current = OpenFile.Resume(last.Path, last.Offset, files.Count == 1 ? _limits.HeadBytes : _limits.PartBytes, _limits.AlignBytes);
        // The last start gives the sequence to continue after; a group that a crash left open (its last record is a
        // start, possibly in an earlier file) is ended here, so that readers do not wait for its end.
        LogIndexRecord? lastRecord = null;
        foreach (var f in files.AsEnumerable().Reverse())
        {
            var records = f.Path == _current.Path ? _current.Records : ReadIndex(f.Path);
            lastRecord ??= records.Count > 0 ? records[^1] : null;
            if (records.FindLast(r => r.IsStart) is { IsStart: true } start)
            {
                LastSeq = start.Seq;
                break;
            }
        }
        if (lastRecord is { IsStart: true }) AppendRecord(_current, LogIndexRecord.End(End));
    }

    private static long IndexLength(string file)
    {
        var info = new FileInfo(LogFiles.IndexPath(file));
        return info.Exists ? info.Length : 0;
    }

    private static List<LogIndexRecord> ReadIndex(string file)
    {
        var records = new List<LogIndexRecord>();
        try { new LogIndexCodec().Decode(File.ReadAllBytes(LogFiles.IndexPath(file)), records); }
        catch (FileNotFoundException) { }
        return records;
    }

    /// <summary>The file being appended to, with its index; closes once full and, if it can, at the end of a line.</summary>
    private sealed class OpenFile : IDisposable
    {
        private enum Phase { Open, Aligning, Closed }

        private readonly SafeFileHandle _data;
        private readonly SafeFileHandle _index;
        private readonly long _budget;
        private readonly long _alignBytes;
        private Phase _phase;
        private byte _lastByte;

        private OpenFile(string path, long offset, long budget, long alignBytes, FileMode mode)
        {
            Path = path;
            Offset = offset;
            _budget = budget;
            _alignBytes = alignBytes;
            // Data before index: a data file without an index is still read (its bytes join the group before it).
            _data = File.OpenHandle(path, mode, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
            _index = File.OpenHandle(LogFiles.IndexPath(path), mode, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
        }

        public static OpenFile Create(string path, long offset, long budget, long alignBytes) =>
            new(path, offset, budget, alignBytes, FileMode.Create);

        /// <summary>Continues an existing file: its index is decoded (and a record cut short removed); a full file is closed.</summary>
        public static OpenFile Resume(string path, long offset, long budget, long alignBytes)
        {
            var f = new OpenFile(path, offset, budget, alignBytes, FileMode.OpenOrCreate);
            f.DataLength = RandomAccess.GetLength(f._data);
            var bytes = new byte[RandomAccess.GetLength(f._index)];
            RandomAccess.Read(f._index, bytes, 0);
            f.IndexLength = f.Codec.Decode(bytes, f.Records);
            if (f.IndexLength < bytes.Length) RandomAccess.SetLength(f._index, f.IndexLength);
            f.HasStart = f.Records.Any(r => r.IsStart);
            if (f.DataLength > 0)
            {
                Span<byte> last = stackalloc byte[1];
                RandomAccess.Read(f._data, last, f.DataLength - 1);
                f._lastByte = last[0];
            }
            if (f.Used >= budget) f._phase = Phase.Closed;
            return f;
        }

        public string Path { get; }
        public long Offset { get; }
        public long DataLength { get; private set; }
        public long IndexLength { get; private set; }
        public long Used => DataLength + IndexLength;
        public bool HasStart { get; private set; }
        public bool IsClosed => _phase == Phase.Closed;
        public LogIndexCodec Codec { get; } = new();
        /// <summary>The records found when resuming (empty for a new file).</summary>
        public List<LogIndexRecord> Records { get; } = [];

        /// <summary>How many bytes of <paramref name="data"/> go into this file now; 0 when it has just closed.</summary>
        public int Take(ReadOnlySpan<byte> data)
        {
            if (_phase == Phase.Open)
            {
                var room = _budget - Used;
                if (room >= data.Length) return data.Length;
                if (room > 0) return (int)room;
                _phase = DataLength == 0 || _lastByte == (byte)'\n' ? Phase.Closed : Phase.Aligning;
            }
            if (_phase == Phase.Aligning)
            {
                // Up to AlignBytes more (data and index) to end at a newline; a line longer than that is cut.
                var left = _budget + _alignBytes - Used;
                if (left <= 0)
                {
                    _phase = Phase.Closed;
                    return 0;
                }
                var limit = (int)Math.Min(data.Length, left);
                var newline = data[..limit].IndexOf((byte)'\n');
                var n = newline >= 0 ? newline + 1 : limit;
                if (newline >= 0 || n == left) _phase = Phase.Closed;
                return n;
            }
            return 0;
        }

        public void AppendData(ReadOnlySpan<byte> data)
        {
            RandomAccess.Write(_data, data, DataLength);
            DataLength += data.Length;
            _lastByte = data[^1];
        }

        public void AppendIndex(ReadOnlySpan<byte> record, bool isStart)
        {
            RandomAccess.Write(_index, record, IndexLength);
            IndexLength += record.Length;
            HasStart |= isStart;
        }

        public void Dispose()
        {
            _data.Dispose();
            _index.Dispose();
        }
    }
}
