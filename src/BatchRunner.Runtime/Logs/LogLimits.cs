namespace BatchRunner.Runtime.Logs;

/// <summary>
/// How much of one output stream (stdout or stderr) is kept on disk. Up to <see cref="MaxBytes"/> everything is;
/// past it the stream keeps its head (how the job began) and its tail (how it ended), and the middle is dropped in
/// whole parts. The cap counts the stream's data and its order index together, so the disk a stream uses while
/// the job runs is at most <see cref="MaxBytes"/> plus one read's worth of bytes.
/// </summary>
/// <remarks>
/// Derived sizes (<c>C</c> = <see cref="MaxBytes"/>): the head takes <c>C/2</c>; the tail is written in parts of
/// <see cref="PartBytes"/> (<c>C/16</c>, 64 bytes to 1 MiB), of which the oldest are deleted once the stream is over
/// <c>C - </c><see cref="MarkerReserveBytes"/>, the room left for the marker line a reader puts in the gap. The head
/// and every part are extended by at most <see cref="AlignBytes"/> to end with a whole line, so the kept tail starts
/// at the beginning of a line.
/// </remarks>
public sealed record LogLimits
{
    /// <summary>The smallest cap: below it the head, a part and the marker no longer fit.</summary>
    public const long MinBytes = Core.LogSettings.MinBytes;
    public const long MarkerReserveBytes = 160;
    private const long MaxPartBytes = 1 << 20;
    private const long MinPartBytes = 64;
    private const long MaxAlignBytes = 4096;

    public LogLimits(long maxBytes)
    {
        if (maxBytes < MinBytes) throw new ArgumentOutOfRangeException(nameof(maxBytes), maxBytes, $"a log cap must be at least {MinBytes} bytes");
        MaxBytes = maxBytes;
    }

    /// <summary>No cap (the head grows without end): for callers that bound output some other way.</summary>
    public static readonly LogLimits Unlimited = new(long.MaxValue / 4);

    /// <summary>The most one stream keeps: its data plus its index, marker included once a reader adds it.</summary>
    public long MaxBytes { get; }
    public long HeadBytes => MaxBytes / 2;
    public long PartBytes => Math.Clamp(MaxBytes / 16, MinPartBytes, MaxPartBytes);
    public long AlignBytes => Math.Min(MaxAlignBytes, PartBytes);
    /// <summary>Kept bytes (data and index) above which the oldest tail part is deleted.</summary>
    public long KeepBytes => MaxBytes - MarkerReserveBytes;
}
