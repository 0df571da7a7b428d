namespace BatchRunner.Runtime.Logs;

/// <summary>
/// One record of a stream's order index. A <b>start</b> says that the stream's bytes from <see cref="Offset"/> on
/// arrived as read number <see cref="Seq"/> at <see cref="TimeMicros"/>; they run up to the stream's next start or
/// to an <b>end</b> record (<see cref="IsStart"/> false), written when the other stream's output came next.
/// </summary>
/// <remarks>
/// Reads of both streams share one sequence, so the two indexes merged by <see cref="Seq"/> give the order in which
/// the relay received the output. One start covers consecutive reads of the same stream (no output of the other in
/// between) within a millisecond of it, so the index grows with how often the output changes streams, not with
/// how many writes the job makes.
/// </remarks>
public readonly record struct LogIndexRecord(bool IsStart, long Seq, long Offset, long TimeMicros)
{
    public static LogIndexRecord Start(long seq, long offset, long timeMicros) => new(true, seq, offset, timeMicros);
    public static LogIndexRecord End(long offset) => new(false, 0, offset, 0);
}

/// <summary>
/// The binary form of an index file: records as LEB128 varints, each relative to the record before it in the same
/// file (the first relative to zero). A start is <c>seqDelta·2, offsetDelta, zigzag(timeDelta)</c>; an end is
/// <c>1, offsetDelta</c>. Every file stands alone, so deleting a part deletes its index with it. A record cut
/// short by a crash (or not yet fully written when read) is not decoded.
/// </summary>
public sealed class LogIndexCodec
{
    /// <summary>The longest encoded record: three 10-byte varints.</summary>
    public const int MaxRecordBytes = 30;

    private long _seq, _offset, _time;

    /// <summary>Encodes <paramref name="r"/> into <paramref name="destination"/> (at least <see cref="MaxRecordBytes"/>); returns its length.</summary>
    public int Encode(LogIndexRecord r, Span<byte> destination)
    {
        int n;
        if (r.IsStart)
        {
            n = WriteVarint(destination, (ulong)(r.Seq - _seq) << 1);
            n += WriteVarint(destination[n..], (ulong)(r.Offset - _offset));
            n += WriteVarint(destination[n..], ZigZag(r.TimeMicros - _time));
            (_seq, _time) = (r.Seq, r.TimeMicros);
        }
        else
        {
            n = WriteVarint(destination, 1);
            n += WriteVarint(destination[n..], (ulong)(r.Offset - _offset));
        }
        _offset = r.Offset;
        return n;
    }

    /// <summary>Decodes the whole records at the start of <paramref name="source"/> into <paramref name="into"/>; returns
    /// the bytes they took (the rest is an incomplete record, to decode again once more bytes are there).</summary>
    public int Decode(ReadOnlySpan<byte> source, List<LogIndexRecord> into)
    {
        int used = 0;
        while (used < source.Length)
        {
            var rest = source[used..];
            if (!TryReadVarint(rest, out var head, out var n)) break;
            if ((head & 1) == 0)
            {
                if (!TryReadVarint(rest[n..], out var offsetDelta, out var n2)) break;
                if (!TryReadVarint(rest[(n + n2)..], out var timeZigZag, out var n3)) break;
                _seq += (long)(head >> 1);
                _offset += (long)offsetDelta;
                _time += UnZigZag(timeZigZag);
                into.Add(LogIndexRecord.Start(_seq, _offset, _time));
                used += n + n2 + n3;
            }
            else
            {
                if (!TryReadVarint(rest[n..], out var offsetDelta, out var n2)) break;
                _offset += (long)offsetDelta;
                into.Add(LogIndexRecord.End(_offset));
                used += n + n2;
            }
        }
        return used;
    }

    private static ulong ZigZag(long v) => (ulong)((v << 1) ^ (v >> 63));
    private static long UnZigZag(ulong v) => (long)(v >> 1) ^ -(long)(v & 1);

    private static int WriteVarint(Span<byte> destination, ulong v)
    {
        int i = 0;
        while (v >= 0x80)
        {
            destination[i++] = (byte)(v | 0x80);
            v >>= 7;
        }
        destination[i++] = (byte)v;
        return i;
    }

    private static bool TryReadVarint(ReadOnlySpan<byte> source, out ulong value, out int length)
    {
        value = 0;
        for (int i = 0, shift = 0; i < source.Length && i < 10; i++, shift += 7)
        {
            value |= (ulong)(source[i] & 0x7f) << shift;
            if ((source[i] & 0x80) == 0)
            {
                length = i + 1;
                return true;
            }
        }
        length = 0;
        return false;
    }
}
