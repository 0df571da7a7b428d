using Microsoft.Win32.SafeHandles;
using static BatchRunner.Native.Libc;

namespace BatchRunner.Runtime.Disk;

/// <summary>
/// The empty ext4 images mkfs.ext4 has made, by image size, kept as their data ranges (about 160 KiB for a 10 GiB image:
/// superblock copies, group descriptors, bitmaps, the root and lost+found directories; the rest is holes), so that the
/// next image of that size is those bytes written into a new sparse file instead of another mkfs.ext4: that process,
/// its discard of the whole file and its formatting were about 4.4 ms of CPU and 11 ms of wall per job disk.
/// </summary>
/// <remarks>
/// A copy is the same filesystem byte for byte, its UUID and directory hash seed included. ext4 mounts any number of
/// filesystems with one UUID, and neither is a secret a job could use: a job sees its disk only through the mount, never
/// the device. Templates live in memory only (made anew by each process), at most <see cref="MaxBytes"/> of them; an
/// image that does not fit, or one whose data could not be read as ranges, is made by mkfs.ext4 each time, as before.
/// </remarks>
internal sealed class EmptyImageTemplates
{
    /// <summary>What all templates together may hold in memory.</summary>
    public const long MaxBytes = 16L << 20;
    /// <summary>At most this many data ranges per template (a 10 GiB image has about 17).</summary>
    private const int MaxRanges = 4096;

    private readonly object _gate = new();
    private readonly Dictionary<long, Template> _bySize = [];
    private long _heldBytes;

    /// <summary>The template for images of <paramref name="imageBytes"/>, or null when none was captured.</summary>
    public bool TryGet(long imageBytes, out Template template)
    {
        lock (_gate) return _bySize.TryGetValue(imageBytes, out template!);
    }

    /// <summary>Reads the freshly made, never mounted <paramref name="image"/> and keeps it as the template for its size
    /// when there is room. Best effort: an image that cannot be read so is simply not kept.</summary>
    public void Capture(string image)
    {
        Template? template;
        try { template = Read(image); }
        catch (IOException) { return; }
        if (template is null) return;
        lock (_gate)
        {
            if (_bySize.ContainsKey(template.Length) || _heldBytes + template.DataBytes > MaxBytes) return;
            _bySize[template.Length] = template;
            _heldBytes += template.DataBytes;
        }
    }

    private static Template? Read(string image)
    {
        using var handle = File.OpenHandle(image, FileMode.Open, FileAccess.Read);
        var fd = (int)handle.DangerousGetHandle();
        var length = RandomAccess.GetLength(handle);
        var ranges = new List<(long Offset, byte[] Data)>();
        long held = 0;
        foreach (var (data, hole) in SparseFile.DataRanges(fd, length))
        {
            held += hole - data;
            if (held > MaxBytes || ranges.Count == MaxRanges) return null;
            var bytes = new byte[hole - data];
            for (var read = 0; read < bytes.Length;)
            {
                var n = RandomAccess.Read(handle, bytes.AsSpan(read), data + read);
                if (n == 0) throw new IOException($"{image}: ended at {data + read} inside a data range");
                read += n;
            }
            ranges.Add((data, bytes));
        }
        return new Template(length, ranges, held);
    }

    /// <summary>An empty image: <see cref="Length"/> bytes, these ranges of data, holes elsewhere.</summary>
    public sealed class Template(long length, IReadOnlyList<(long Offset, byte[] Data)> ranges, long dataBytes)
    {
        public long Length { get; } = length;
        public IReadOnlyList<(long Offset, byte[] Data)> Ranges { get; } = ranges;
        public long DataBytes { get; } = dataBytes;

        /// <summary>
        /// Makes <paramref name="file"/>, an image of this size that a filesystem was used in, read as this image again:
        /// everything outside this image's own data ranges is punched out (a hole reads as zeros; on the host the blocks
        /// are freed), and this image's data is written over its ranges. The same bytes as <see cref="WriteTo"/> into a new
        /// file, without freeing and allocating again the blocks both hold: punching the whole file instead was 3 % of
        /// a worker's samples, each freed range a discard on a host mounted with <c>discard</c>.
        /// </summary>
        /// <exception cref="IOException">The file is not this image's size, or a hole could not be punched.</exception>
        public void RewriteOver(SafeFileHandle file)
        {
            if (RandomAccess.GetLength(file) != Length) throw new IOException($"the image is {RandomAccess.GetLength(file)} bytes, not {Length}");
            var fd = (int)file.DangerousGetHandle();
            // Every gap between this image's ranges, not only the data SEEK_DATA finds: the loop device turns a filesystem's
            // write-zeroes into unwritten extents, which read as holes and still hold the host's blocks. A gap that is a
            // hole already costs a walk of an empty extent range.
            foreach (var (from, to) in Outside(0, Length))
                if (PunchHole(fd, from, to - from) != 0)
                    throw new IOException($"freeing bytes {from}–{to} of the image failed: {Describe(Errno)}");
            foreach (var (offset, data) in Ranges) RandomAccess.Write(file, data, offset);
        }

        /// <summary>The parts of [<paramref name="start"/>, <paramref name="end"/>) that none of <see cref="Ranges"/>
        /// (in order, not overlapping) covers.</summary>
        internal IEnumerable<(long From, long To)> Outside(long start, long end)
        {
            var at = start;
            foreach (var (offset, data) in Ranges)
            {
                var rangeEnd = offset + data.Length;
                if (rangeEnd <= at) continue;
                if (offset >= end) break;
                if (offset > at) yield return (at, offset);
                at = Math.Max(at, rangeEnd);
                if (at >= end) yield break;
            }
            if (at < end) yield return (at, end);
        }

        /// <summary>Writes the image into <paramref name="file"/>, new and empty: its size, then its data.</summary>
        public void WriteTo(SafeFileHandle file)
        {
            RandomAccess.SetLength(file, Length);
            foreach (var (offset, data) in Ranges) RandomAccess.Write(file, data, offset);
        }
    }
}
