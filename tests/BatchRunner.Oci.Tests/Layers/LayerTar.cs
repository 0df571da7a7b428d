using System.Formats.Tar;
using System.IO.Compression;
using System.Text;

namespace BatchRunner.Oci.Tests.Layers;

/// <summary>Builds crafted layer tarballs in memory, the way a hostile or unusual image builder could.</summary>
internal sealed class LayerTar
{
    public static readonly DateTimeOffset DefaultTime = new(2001, 2, 3, 4, 5, 6, TimeSpan.Zero);
    private readonly List<PaxTarEntry> _entries = [];

    public LayerTar File(string name, string content = "", int mode = 0x1A4, int uid = 0, int gid = 0, DateTimeOffset? mtime = null,
        IEnumerable<KeyValuePair<string, string>>? pax = null)
    {
        var e = pax is null ? new PaxTarEntry(TarEntryType.RegularFile, name) : new PaxTarEntry(TarEntryType.RegularFile, name, pax);
        e.DataStream = new MemoryStream(Encoding.UTF8.GetBytes(content));
        return Add(e, mode, uid, gid, mtime);
    }

    public LayerTar Dir(string name, int mode = 0x1ED, int uid = 0, int gid = 0, DateTimeOffset? mtime = null,
        IEnumerable<KeyValuePair<string, string>>? pax = null) =>
        Add(pax is null ? new PaxTarEntry(TarEntryType.Directory, name) : new PaxTarEntry(TarEntryType.Directory, name, pax), mode, uid, gid, mtime);

    public LayerTar Symlink(string name, string target, int uid = 0, int gid = 0, DateTimeOffset? mtime = null) =>
        Add(new PaxTarEntry(TarEntryType.SymbolicLink, name) { LinkName = target }, 0x1FF, uid, gid, mtime);

    public LayerTar HardLink(string name, string target) =>
        Add(new PaxTarEntry(TarEntryType.HardLink, name) { LinkName = target }, 0x1A4, 0, 0, null);

    public LayerTar Device(TarEntryType type, string name, int major, int minor, int mode = 0x1B6, int uid = 0, int gid = 0) =>
        Add(new PaxTarEntry(type, name) { DeviceMajor = major, DeviceMinor = minor }, mode, uid, gid, null);

    public LayerTar Fifo(string name, int mode = 0x1A4) => Add(new PaxTarEntry(TarEntryType.Fifo, name), mode, 0, 0, null);

    private LayerTar Add(PaxTarEntry e, int mode, int uid, int gid, DateTimeOffset? mtime)
    {
        e.Mode = (UnixFileMode)mode;
        e.Uid = uid;
        e.Gid = gid;
        e.ModificationTime = mtime ?? DefaultTime;
        _entries.Add(e);
        return this;
    }

    /// <param name="trailingZeroBlocks">Extra zero blocks after the end-of-archive marker, as some writers pad to a record size.</param>
    public byte[] ToTar(int trailingZeroBlocks = 0)
    {
        var ms = new MemoryStream();
        using (var w = new TarWriter(ms, TarEntryFormat.Pax, leaveOpen: true))
            foreach (var e in _entries)
            {
                e.DataStream?.Seek(0, SeekOrigin.Begin);
                w.WriteEntry(e);
            }
        ms.Write(new byte[512 * trailingZeroBlocks]);
        return ms.ToArray();
    }

    public static byte[] Gzip(byte[] data)
    {
        var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Optimal, leaveOpen: true)) gz.Write(data);
        return ms.ToArray();
    }

    public static byte[] Zstd(byte[] data)
    {
        var ms = new MemoryStream();
        using (var z = new ZstdSharp.CompressionStream(ms, 3, leaveOpen: true)) z.Write(data);
        return ms.ToArray();
    }
}

/// <summary>
/// A temp directory holding the unpack target next to an "outside" directory with a victim file, so a test can
/// prove that nothing outside the target changed. Removed on dispose.
/// </summary>
internal sealed class Sandbox : IDisposable
{
    public Sandbox()
    {
        // Under /tmp explicitly: other service users must be able to traverse it, and /root is closed to them.
        Root = Path.Combine("/tmp", "br-oci-test-" + Guid.NewGuid().ToString("n")[..12]);
        Target = Path.Combine(Root, "a", "b", "target");
        Outside = Path.Combine(Root, "outside");
        Directory.CreateDirectory(Target);
        Directory.CreateDirectory(Outside);
        System.IO.File.WriteAllText(Path.Combine(Outside, "victim"), "original");
        System.IO.File.WriteAllText(Path.Combine(Root, "a", "sibling"), "original");
        _before = TestFs.Snapshot(Root, exclude: Target);
    }

    private readonly SortedDictionary<string, string> _before;
    public string Root { get; }
    public string Target { get; }
    public string Outside { get; }

    public string this[string relative] => Path.Combine(Target, relative);

    public void AssertOutsideUnchanged() => Assert.Equal(_before, TestFs.Snapshot(Root, exclude: Target));

    public void Dispose()
    {
        foreach (var point in File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(' ')[4]).Where(p => p.StartsWith(Root + "/")).Reverse())
            TestFs.Run("umount", "-l", point);
        Directory.Delete(Root, recursive: true);
    }
}
