using System.Formats.Tar;
using System.Security.Cryptography;
using BatchRunner.Oci.Layers;
using BatchRunner.Oci.Tests.Layers;
using static BatchRunner.Oci.Tests.Layers.TestFs;

namespace BatchRunner.Oci.Tests;

public sealed class LayerUnpackerFacts : IDisposable
{
    private readonly Sandbox _box = new();

    public void Dispose() => _box.Dispose();

    private Task<LayerUnpackResult> Unpack(byte[] blob, string mediaType = LayerUnpacker.OciLayerTar, LayerUnpackOptions? options = null) =>
        LayerUnpacker.UnpackAsync(new MemoryStream(blob), mediaType, _box.Target, options ?? LayerUnpackOptions.Default, CancellationToken.None);

    private static string Sha256(byte[] data) => "sha256:" + Convert.ToHexStringLower(SHA256.HashData(data));

    [Fact]
    public async Task UnpackAsync_RestoresEveryEntryTypeWithMetadata_WhenLayerIsPlainTar()
    {
        var dirTime = new DateTimeOffset(1999, 12, 31, 23, 59, 58, TimeSpan.Zero);
        var fileTime = new DateTimeOffset(2010, 6, 7, 8, 9, 10, TimeSpan.Zero).AddTicks(1234567);
        var tar = new LayerTar()
            .Dir("usr/", mtime: dirTime)
            .Dir("usr/bin/", mode: 0x1E8 /* 0750 */, uid: 2, gid: 3, mtime: dirTime)
            .File("usr/bin/tool", "#!/bin/sh\necho hi\n", mode: 0x9ED /* 04755 */, uid: 1000, gid: 1001, mtime: fileTime)
            .File("usr/bin/sgid", "x", mode: 0x5C9 /* 02711 */)
            .Dir("tmp/", mode: 0x3FF /* 01777 */)
            .Symlink("usr/bin/link", "tool", uid: 7, gid: 8, mtime: fileTime)
            .Symlink("usr/bin/abs", "/etc/passwd")
            .HardLink("usr/bin/hard", "usr/bin/tool")
            .Device(TarEntryType.CharacterDevice, "dev/null", 1, 3, mode: 0x1B6)
            .Device(TarEntryType.BlockDevice, "dev/big", 259, 300000, mode: 0x1B0)
            .Fifo("run/fifo", mode: 0x180)
            .File("usr/share/doc/readme", new string('r', 3 << 20))
            .ToTar();

        var result = await Unpack(tar);

        Assert.Equal(Sha256(tar), result.DiffId);
        Assert.Equal(tar.Length, result.UncompressedBytes);
        Assert.Equal(12, result.EntryCount);
        Assert.Equal(0, result.SkippedEntries);

        var tool = Lstat(_box["usr/bin/tool"]);
        Assert.Equal(S_IFREG, tool.Type);
        Assert.Equal(0x9EDu, tool.Permissions);
        Assert.Equal((1000u, 1001u), (tool.Uid, tool.Gid));
        Assert.Equal("#!/bin/sh\necho hi\n", File.ReadAllText(_box["usr/bin/tool"]));
        Assert.Equal(fileTime.ToUnixTimeSeconds(), tool.MtimeSeconds);
        Assert.Equal(123456700u, tool.MtimeNanoseconds);
        Assert.Equal(0x5C9u, Lstat(_box["usr/bin/sgid"]).Permissions);
        Assert.Equal(3 << 20, new FileInfo(_box["usr/share/doc/readme"]).Length);
        // Parents the layer omits are created 0755 root:root, whatever the process umask.
        var implicitParent = Lstat(_box["usr/share/doc"]);
        Assert.Equal((S_IFDIR, 0x1EDu, 0u, 0u), (implicitParent.Type, implicitParent.Permissions, implicitParent.Uid, implicitParent.Gid));

        var bin = Lstat(_box["usr/bin"]);
        Assert.Equal((S_IFDIR, 0x1E8u, 2u, 3u), (bin.Type, bin.Permissions, bin.Uid, bin.Gid));
        // Directory mtimes survive the children created after them.
        Assert.Equal(dirTime.ToUnixTimeSeconds(), bin.MtimeSeconds);
        Assert.Equal(dirTime.ToUnixTimeSeconds(), Lstat(_box["usr"]).MtimeSeconds);
        Assert.Equal(0x3FFu, Lstat(_box["tmp"]).Permissions);

        var link = Lstat(_box["usr/bin/link"]);
        Assert.Equal(S_IFLNK, link.Type);
        Assert.Equal("tool", new FileInfo(_box["usr/bin/link"]).LinkTarget);
        Assert.Equal((7u, 8u), (link.Uid, link.Gid));
        Assert.Equal(fileTime.ToUnixTimeSeconds(), link.MtimeSeconds);
        Assert.Equal("/etc/passwd", new FileInfo(_box["usr/bin/abs"]).LinkTarget);

        var hard = Lstat(_box["usr/bin/hard"]);
        Assert.Equal(tool.Inode, hard.Inode);
        Assert.Equal(2u, hard.Nlink);

        var nul = Lstat(_box["dev/null"]);
        Assert.Equal((S_IFCHR, 1u, 3u, 0x1B6u), (nul.Type, nul.RdevMajor, nul.RdevMinor, nul.Permissions));
        var big = Lstat(_box["dev/big"]);
        Assert.Equal((S_IFBLK, 259u, 300000u, 0x1B0u), (big.Type, big.RdevMajor, big.RdevMinor, big.Permissions));
        var fifo = Lstat(_box["run/fifo"]);
        Assert.Equal((S_IFIFO, 0x180u), (fifo.Type, fifo.Permissions));
        _box.AssertOutsideUnchanged();
    }

    [Fact]
    public async Task UnpackAsync_ComputesDiffIdOverWholeUncompressedStream_WhenGzipLayerHasTrailingPadding()
    {
        var tar = new LayerTar().Dir("etc/").File("etc/hostname", "box\n").ToTar(trailingZeroBlocks: 18);

        var result = await Unpack(LayerTar.Gzip(tar), LayerUnpacker.OciLayerGzip);

        Assert.Equal(Sha256(tar), result.DiffId);
        Assert.Equal(tar.Length, result.UncompressedBytes);
        Assert.Equal("box\n", File.ReadAllText(_box["etc/hostname"]));
    }

    [Fact]
    public async Task UnpackAsync_AcceptsATarWithoutEndOfArchiveBlocks_AsUmociInsertWritesThem()
    {
        var full = new LayerTar().Dir("usr/").File("usr/numpy.py", "x = 1\n").ToTar();
        Assert.All(full[^1024..], b => Assert.Equal(0, b));
        var tar = full[..^1024];

        var result = await Unpack(LayerTar.Gzip(tar), LayerUnpacker.OciLayerGzip);

        Assert.Equal(Sha256(tar), result.DiffId);
        Assert.Equal(tar.Length, result.UncompressedBytes);
        Assert.Equal("x = 1\n", File.ReadAllText(_box["usr/numpy.py"]));
    }

    [Fact]
    public async Task UnpackAsync_AcceptsATarWhoseLastBlockIsNotPadded()
    {
        var full = new LayerTar().File("a.txt", "37 bytes of content, not a full block").ToTar();
        // Cut right after the file's 37 data bytes: no block padding, no end-of-archive blocks.
        var content = System.Text.Encoding.ASCII.GetBytes("37 bytes of content, not a full block");
        var end = full.AsSpan().IndexOf(content) + content.Length;
        var tar = full[..end];
        Assert.NotEqual(0, tar.Length % 512);

        var result = await Unpack(LayerTar.Gzip(tar), LayerUnpacker.OciLayerGzip);

        Assert.Equal(Sha256(tar), result.DiffId);
        Assert.Equal("37 bytes of content, not a full block", File.ReadAllText(_box["a.txt"]));
    }

    [Theory]
    [InlineData(LayerUnpacker.DockerLayerGzip)]
    [InlineData(LayerUnpacker.OciLayerGzip)]
    public async Task UnpackAsync_DecompressesGzip_WhenMediaTypeSaysGzip(string mediaType)
    {
        var tar = new LayerTar().File("a", "1").ToTar();
        var result = await Unpack(LayerTar.Gzip(tar), mediaType);
        Assert.Equal(Sha256(tar), result.DiffId);
        Assert.Equal("1", File.ReadAllText(_box["a"]));
    }

    [Fact]
    public async Task UnpackAsync_DecompressesZstd_WhenMediaTypeSaysZstd()
    {
        var tar = new LayerTar().Dir("opt/").File("opt/data", new string('z', 100_000), mode: 0x124).ToTar();

        var result = await Unpack(LayerTar.Zstd(tar), LayerUnpacker.OciLayerZstd);

        Assert.Equal(Sha256(tar), result.DiffId);
        Assert.Equal(new string('z', 100_000), File.ReadAllText(_box["opt/data"]));
        Assert.Equal(0x124u, Lstat(_box["opt/data"]).Permissions);
    }

    [Fact]
    public async Task UnpackAsync_SkipsDeviceNodes_WhenDevicesAreNotAllowed()
    {
        var tar = new LayerTar()
            .Device(TarEntryType.CharacterDevice, "dev/null", 1, 3)
            .Device(TarEntryType.BlockDevice, "dev/sda", 8, 0)
            .Fifo("dev/fifo")
            .ToTar();

        var result = await Unpack(tar, options: new LayerUnpackOptions { AllowDevices = false });

        Assert.Equal(2, result.SkippedEntries);
        Assert.Null(TryLstat(_box["dev/null"]));
        Assert.Null(TryLstat(_box["dev/sda"]));
        Assert.Equal(S_IFIFO, Lstat(_box["dev/fifo"]).Type);
    }

    [Theory]
    [InlineData("../../evil")]
    [InlineData("a/../../evil")]
    [InlineData("/../../outside/victim")]
    [InlineData("./../sibling")]
    public async Task UnpackAsync_RefusesEntry_WhenPathClimbsOutOfRoot(string name)
    {
        var tar = new LayerTar().File("ok", "fine").File(name, "pwned").ToTar();

        var ex = await Assert.ThrowsAsync<LayerUnpackException>(() => Unpack(tar));

        Assert.Contains("points outside the layer root", ex.Message);
        Assert.Contains(name, ex.Message);
        _box.AssertOutsideUnchanged();
    }

    [Fact]
    public async Task UnpackAsync_RefusesDeviceNode_WhenPathClimbsOutOfRoot()
    {
        var tar = new LayerTar().Device(TarEntryType.CharacterDevice, "../../../outside/mem", 1, 1).ToTar();

        await Assert.ThrowsAsync<LayerUnpackException>(() => Unpack(tar));

        Assert.Null(TryLstat(Path.Combine(_box.Outside, "mem")));
        _box.AssertOutsideUnchanged();
    }

    [Fact]
    public async Task UnpackAsync_PlacesEntryUnderRoot_WhenNameIsAbsolute()
    {
        var tar = new LayerTar().File($"{_box.Root}/abs-file", "inside").File($"{_box.Outside}/victim", "pwned").ToTar();

        await Unpack(tar);

        Assert.Equal("inside", File.ReadAllText(_box[_box.Root.TrimStart('/') + "/abs-file"]));
        Assert.Equal("pwned", File.ReadAllText(_box[_box.Outside.TrimStart('/') + "/victim"]));
        _box.AssertOutsideUnchanged();
    }

    [Fact]
    public async Task UnpackAsync_DoesNotWriteThroughSymlink_WhenSymlinkPointsOutsideRoot()
    {
        var tar = new LayerTar()
            .Symlink("etc", _box.Outside)
            .File("etc/pwned", "pwned")
            .ToTar();

        var ex = await Assert.ThrowsAsync<LayerUnpackException>(() => Unpack(tar));

        Assert.Contains("etc/pwned", ex.Message);
        Assert.Null(TryLstat(Path.Combine(_box.Outside, "pwned")));
        _box.AssertOutsideUnchanged();
    }

    [Fact]
    public async Task UnpackAsync_DoesNotOverwriteSymlinkTarget_WhenSymlinkPointsAtOutsideFile()
    {
        var victim = Path.Combine(_box.Outside, "victim");
        var tar = new LayerTar()
            .Symlink("f", victim)
            .File("f", "pwned")
            .Symlink("d", _box.Outside)
            .Dir("d/")
            .ToTar();

        await Unpack(tar);

        Assert.Equal(S_IFREG, Lstat(_box["f"]).Type);
        Assert.Equal("pwned", File.ReadAllText(_box["f"]));
        Assert.Equal(S_IFDIR, Lstat(_box["d"]).Type);
        Assert.Equal("original", File.ReadAllText(victim));
        _box.AssertOutsideUnchanged();
    }

    [Fact]
    public async Task UnpackAsync_ResolvesLayerSymlinkInsideRoot_WhenEntryWritesThroughIt()
    {
        // Both symlinks are chosen so that an unpacker that follows them on the host fails or writes into the
        // sandbox, never into the real filesystem: the absolute one names a directory the host does not have,
        // the climbing one reaches exactly the sandbox root.
        var hostAbsent = "br-test-absent-" + Guid.NewGuid().ToString("n");
        var tar = new LayerTar()
            .Dir($"{hostAbsent}/").Dir($"{hostAbsent}/lib/")
            .Symlink("lib", $"/{hostAbsent}/lib")
            .File("lib/libc.so", "elf")
            .Symlink("up", "../../..")
            .File("up/escaped", "still inside")
            .ToTar();

        await Unpack(tar);

        Assert.Equal("elf", File.ReadAllText(_box[$"{hostAbsent}/lib/libc.so"]));
        Assert.Equal("still inside", File.ReadAllText(_box["escaped"]));
        Assert.Null(TryLstat(Path.Combine(_box.Root, "escaped")));
        _box.AssertOutsideUnchanged();
    }

    [Theory]
    [InlineData("/etc/shadow")]
    [InlineData("etc/shadow")]
    [InlineData("../../outside/victim")]
    [InlineData("../../../../../../etc/shadow")]
    public async Task UnpackAsync_RefusesHardlink_WhenTargetIsOutsideRoot(string target)
    {
        var tar = new LayerTar().HardLink("stolen", target).ToTar();

        var ex = await Assert.ThrowsAsync<LayerUnpackException>(() => Unpack(tar));

        Assert.Contains("stolen", ex.Message);
        Assert.Null(TryLstat(_box["stolen"]));
        _box.AssertOutsideUnchanged();
    }

    [Fact]
    public async Task UnpackAsync_RefusesHardlink_WhenTargetGoesThroughSymlinkToOutside()
    {
        var tar = new LayerTar()
            .Symlink("etc", "/etc")
            .Symlink("out", _box.Outside)
            .HardLink("shadow", "etc/shadow")
            .ToTar();
        await Assert.ThrowsAsync<LayerUnpackException>(() => Unpack(tar));
        Assert.Null(TryLstat(_box["shadow"]));

        var tar2 = new LayerTar().Symlink("out", _box.Outside).HardLink("victim", "out/victim").ToTar();
        var target2 = Path.Combine(_box.Root, "second");
        Directory.CreateDirectory(target2);
        await Assert.ThrowsAsync<LayerUnpackException>(() =>
            LayerUnpacker.UnpackAsync(new MemoryStream(tar2), LayerUnpacker.OciLayerTar, target2, LayerUnpackOptions.Default, CancellationToken.None));
        Assert.Null(TryLstat(Path.Combine(target2, "victim")));
        Assert.Equal(1u, Lstat(Path.Combine(_box.Outside, "victim")).Nlink);
        Directory.Delete(target2, recursive: true);
        _box.AssertOutsideUnchanged();
    }

    [Fact]
    public async Task UnpackAsync_LinksTheSymlinkItself_WhenHardlinkTargetIsSymlinkToOutside()
    {
        var victim = Path.Combine(_box.Outside, "victim");
        var tar = new LayerTar().Symlink("s", victim).HardLink("h", "s").ToTar();

        await Unpack(tar);

        var h = Lstat(_box["h"]);
        Assert.Equal(S_IFLNK, h.Type);
        Assert.Equal(Lstat(_box["s"]).Inode, h.Inode);
        Assert.NotEqual(Lstat(victim).Inode, h.Inode);
        Assert.Equal(1u, Lstat(victim).Nlink);
        _box.AssertOutsideUnchanged();
    }

    [Fact]
    public async Task UnpackAsync_ThrowsLimitExceeded_WhenGzipBombExpandsPastLimit()
    {
        var tar = new LayerTar().File("zeros", new string('\0', 16 << 20)).ToTar();
        var bomb = LayerTar.Gzip(tar);
        Assert.True(bomb.Length < 64 << 10, $"bomb is {bomb.Length} bytes");

        var ex = await Assert.ThrowsAsync<LayerLimitExceededException>(() =>
            Unpack(bomb, LayerUnpacker.OciLayerGzip, new LayerUnpackOptions { MaxUncompressedBytes = 1 << 20 }));

        Assert.Contains("MaxUncompressedBytes", ex.Message);
        Assert.Contains("1048576", ex.Message);
        Assert.True((TryLstat(_box["zeros"])?.Size ?? 0) <= 1 << 20);
        _box.AssertOutsideUnchanged();
    }

    [Fact]
    public async Task UnpackAsync_ThrowsLimitExceeded_WhenEntryCountPassesLimit()
    {
        var layer = new LayerTar();
        for (var i = 0; i < 20; i++) layer.File($"f{i}", "x");

        var ex = await Assert.ThrowsAsync<LayerLimitExceededException>(() =>
            Unpack(layer.ToTar(), options: new LayerUnpackOptions { MaxEntries = 10 }));

        Assert.Contains("MaxEntries", ex.Message);
        Assert.Equal(10, Directory.GetFileSystemEntries(_box.Target).Length);
    }

    [Fact]
    public async Task UnpackAsync_ConvertsOciWhiteoutsToOverlayfsOnes()
    {
        var tar = new LayerTar()
            .Dir("etc/")
            .File("etc/.wh.passwd")
            .File(".wh.toplevel")
            .Dir("var/cache/")
            .File("var/cache/.wh..wh..opq")
            .File("var/cache/new", "n")
            .File(".wh..wh.plnk/123")
            .ToTar();

        var result = await Unpack(tar);

        var whiteout = Lstat(_box["etc/passwd"]);
        Assert.Equal((S_IFCHR, 0u, 0u), (whiteout.Type, whiteout.RdevMajor, whiteout.RdevMinor));
        Assert.Equal(S_IFCHR, Lstat(_box["toplevel"]).Type);
        Assert.Equal("y", GetXattr(_box["var/cache"], "trusted.overlay.opaque"));
        Assert.Null(GetXattr(_box["etc"], "trusted.overlay.opaque"));
        Assert.Equal("n", File.ReadAllText(_box["var/cache/new"]));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_box.Target, ".wh.*", SearchOption.AllDirectories));
        Assert.Equal(1, result.SkippedEntries);
    }

    [Fact]
    public async Task UnpackAsync_SetsUserXattrsButIgnoresOverlayXattrs_WhenLayerCarriesXattrs()
    {
        var tar = new LayerTar()
            .Dir("d/", pax: [new("SCHILY.xattr.trusted.overlay.opaque", "y"), new("SCHILY.xattr.user.kind", "dir")])
            .File("d/f", "x", pax: [new("SCHILY.xattr.user.note", "hello"), new("SCHILY.xattr.trusted.overlay.redirect", "/etc")])
            .ToTar();

        var result = await Unpack(tar);

        Assert.Equal("hello", GetXattr(_box["d/f"], "user.note"));
        Assert.Equal("dir", GetXattr(_box["d"], "user.kind"));
        Assert.Null(GetXattr(_box["d"], "trusted.overlay.opaque"));
        Assert.Null(GetXattr(_box["d/f"], "trusted.overlay.redirect"));
        Assert.Equal(2, result.SkippedEntries);
    }

    [Fact]
    public async Task UnpackAsync_ReplacesEarlierEntries_WhenLaterEntriesReuseTheName()
    {
        var tar = new LayerTar()
            .Dir("x/").File("x/inner", "1")
            .File("x", "now a file")
            .File("y", "file first")
            .Dir("y/")
            .Dir("z/", mode: 0x1C0).File("z/keep", "k")
            .Dir("z/", mode: 0x1ED)
            .ToTar();

        await Unpack(tar);

        Assert.Equal("now a file", File.ReadAllText(_box["x"]));
        Assert.Equal(S_IFDIR, Lstat(_box["y"]).Type);
        Assert.Equal("k", File.ReadAllText(_box["z/keep"]));
        Assert.Equal(0x1EDu, Lstat(_box["z"]).Permissions);
    }

    [Theory]
    [InlineData("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "non-distributable")]
    [InlineData("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "non-distributable")]
    [InlineData("application/vnd.oci.image.layer.v1.tar+gzip+encrypted", "encrypted")]
    [InlineData("application/vnd.oci.image.layer.v1.tar+bzip2", "not supported")]
    [InlineData("application/json", "not supported")]
    public async Task UnpackAsync_ThrowsNotSupported_WhenMediaTypeIsNotAnUnpackableLayer(string mediaType, string expected)
    {
        var ex = await Assert.ThrowsAsync<UnsupportedLayerMediaTypeException>(() => Unpack(new LayerTar().File("a").ToTar(), mediaType));

        Assert.Contains(mediaType, ex.Message);
        Assert.Contains(expected, ex.Message);
        Assert.IsAssignableFrom<NotSupportedException>(ex);
        Assert.False(LayerUnpacker.IsSupportedMediaType(mediaType));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_box.Target));
    }

    [Fact]
    public async Task UnpackAsync_SaysBlobIsCompressed_WhenPlainTarMediaTypeHoldsGzip()
    {
        var gz = LayerTar.Gzip(new LayerTar().File("a", "1").ToTar());

        var ex = await Assert.ThrowsAsync<LayerUnpackException>(() => Unpack(gz, LayerUnpacker.OciLayerTar));

        Assert.Contains("gzip-compressed", ex.Message);
        Assert.Contains(LayerUnpacker.OciLayerTar, ex.Message);
    }

    [Fact]
    public async Task UnpackAsync_ThrowsLayerUnpackException_WhenGzipStreamIsTruncated()
    {
        var gz = LayerTar.Gzip(new LayerTar().File("a", new string('q', 200_000)).File("b", "2").ToTar());

        await Assert.ThrowsAsync<LayerUnpackException>(() => Unpack(gz[..(gz.Length / 2)], LayerUnpacker.OciLayerGzip));
    }

    [Fact]
    public async Task UnpackAsync_Stops_WhenCancelled()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            LayerUnpacker.UnpackAsync(new MemoryStream(new LayerTar().File("a").ToTar()), LayerUnpacker.OciLayerTar, _box.Target,
                LayerUnpackOptions.Default, cts.Token));
    }
}
