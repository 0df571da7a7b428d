using static BatchRunner.Native.Libc;

namespace BatchRunner.Runtime.Disk;

/// <summary>The data ranges of a sparse file, as SEEK_DATA/SEEK_HOLE report them.</summary>
internal static class SparseFile
{
    /// <summary>Each range of data in the first <paramref name="size"/> bytes of <paramref name="fd"/>, in order, as
    /// (start, end); holes are skipped. A range is found when the previous one has been handled, so a caller may change
    /// what is before the next one (punch out what it copied) as it goes.</summary>
    public static IEnumerable<(long Start, long End)> DataRanges(int fd, long size)
    {
        for (var offset = 0L; offset < size;)
        {
            var data = NextData(fd, offset);
            if (data < 0) yield break; // ENXIO: nothing but a hole up to the end
            var hole = Math.Min(NextHole(fd, data), size);
            if (hole <= data) throw new IOException($"SEEK_HOLE at {data} gave {hole}");
            yield return (data, hole);
            offset = hole;
        }
    }
}
