using System.Globalization;

namespace BatchRunner.Runtime.Logs;

/// <summary>
/// The files one stored stream is made of, named after its head file <c>H</c> (e.g. <c>stdout.log</c>):
/// <list type="bullet">
/// <item><c>H</c>: the head, the stream's bytes from offset 0;</item>
/// <item><c>H.&lt;offset&gt;</c> (20 digits): a tail part, the stream's bytes from that absolute offset;</item>
/// <item><c>F.idx</c> beside any of those files <c>F</c>: the order index of its bytes (<see cref="LogIndex"/>).</item>
/// </list>
/// </summary>
/// <remarks>
/// The stored stream is the head followed by the parts in offset order; where a part starts after the end of what
/// comes before it, the bytes between were dropped (one gap, after the head, once the cap was reached). Every
/// change the writer makes (append, create a part, delete the oldest part) leaves files that read this way, so a
/// crash at any point leaves a servable log. Overlaps (which the writer never makes) are read once.
/// </remarks>
public static class LogFiles
{
    public const string IndexSuffix = ".idx";
    private const int OffsetDigits = 20;
    /// <summary>Plain '*' matching: the default (Win32) would also match "stdout.log" itself for "stdout.log.*".</summary>
    internal static readonly EnumerationOptions Simple = new() { MatchType = MatchType.Simple };

    public static string PartPath(string headPath, long offset) =>
        headPath + "." + offset.ToString("D" + OffsetDigits, CultureInfo.InvariantCulture);

    public static string IndexPath(string file) => file + IndexSuffix;

    /// <summary>The stream's data files as they are now: the head (offset 0; length 0 when absent) then the parts by offset.</summary>
    public static IReadOnlyList<LogFile> List(string headPath) => List(headPath, indexes: null);

    /// <summary><see cref="List(string)"/>, and into <paramref name="indexes"/> (when given) the stream's index files
    /// (<c>F.idx</c> for any <c>F</c>, whether or not <c>F</c> exists), from the same one listing of the directory.</summary>
    public static IReadOnlyList<LogFile> List(string headPath, List<string>? indexes)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(headPath))!;
        var name = Path.GetFileName(headPath);
        var head = new FileInfo(headPath);
        var files = new List<LogFile> { new(headPath, 0, head.Exists ? head.Length : 0, head.Exists) };
        if (!Directory.Exists(dir)) return files;
        var parts = new List<LogFile>();
        foreach (var path in Directory.EnumerateFiles(dir, name + ".*", Simple))
        {
            var suffix = Path.GetFileName(path).AsSpan(name.Length + 1);
            if (path.EndsWith(IndexSuffix, StringComparison.Ordinal))
            {
                indexes?.Add(path);
                continue;
            }
            if (suffix.Length != OffsetDigits || !long.TryParse(suffix, NumberStyles.None, CultureInfo.InvariantCulture, out var offset)) continue;
            var info = new FileInfo(path);
            if (info.Exists) parts.Add(new LogFile(path, offset, info.Length, true));
        }
        parts.Sort((a, b) => a.Offset.CompareTo(b.Offset));
        files.AddRange(parts);
        return files;
    }

    /// <summary>Every file of the stream, data and index (for deletion and disk accounting).</summary>
    public static IEnumerable<string> All(string headPath)
    {
        foreach (var f in List(headPath))
        {
            if (f.Exists) yield return f.Path;
            if (File.Exists(IndexPath(f.Path))) yield return IndexPath(f.Path);
        }
    }
}

/// <summary>One data file of a stored stream: bytes [<see cref="Offset"/>, <see cref="End"/>) of the stream.</summary>
public readonly record struct LogFile(string Path, long Offset, long Length, bool Exists)
{
    public long End => Offset + Length;
}
