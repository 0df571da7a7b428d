using BatchRunner.Oci.Layers;
using BatchRunner.Oci.Snapshots;
using BatchRunner.Oci.Tests.Layers;
using static BatchRunner.Oci.Tests.Layers.TestFs;

namespace BatchRunner.Oci.Tests;

/// <summary>Real overlayfs mounts (the tests run as root), over layers produced by the real unpacker.</summary>
public sealed class OverlaySnapshotterFacts : IDisposable
{
    private readonly Sandbox _box = new();
    private readonly OverlaySnapshotter _snapshotter = new();

    public void Dispose() => _box.Dispose();

    private async Task<string> Layer(string name, LayerTar tar)
    {
        var dir = Path.Combine(_box.Root, "layers", name);
        Directory.CreateDirectory(dir);
        await LayerUnpacker.UnpackAsync(new MemoryStream(LayerTar.Gzip(tar.ToTar())), LayerUnpacker.OciLayerGzip, dir,
            LayerUnpackOptions.Default, CancellationToken.None);
        return dir;
    }

    private Task<string[]> TwoLayers() => Task.WhenAll(
        Layer("base", new LayerTar()
            .Dir("etc/").File("etc/passwd", "root:x:0:0").File("etc/hostname", "base").File("etc/keep", "keep")
            .Dir("var/").Dir("var/cache/").File("var/cache/old", "stale")),
        Layer("top", new LayerTar()
            .Dir("etc/").File("etc/.wh.passwd").File("etc/hostname", "top")
            .Dir("var/").Dir("var/cache/").File("var/cache/.wh..wh..opq").File("var/cache/fresh", "new")));

    [Fact]
    public async Task MountAsync_HidesWhitedOutFilesAndStacksTopFirst_WhenUpperLayerHasWhiteouts()
    {
        var layers = await TwoLayers();
        var work = Path.Combine(_box.Root, "job1");

        await using var mount = await _snapshotter.MountAsync(layers, work, CancellationToken.None);

        var rootfs = mount.RootfsPath;
        Assert.Equal(Path.Combine(work, "rootfs"), rootfs);
        Assert.True(IsMounted(rootfs));
        Assert.False(File.Exists(Path.Combine(rootfs, "etc/passwd")));
        Assert.Equal("top", File.ReadAllText(Path.Combine(rootfs, "etc/hostname")));
        Assert.Equal("keep", File.ReadAllText(Path.Combine(rootfs, "etc/keep")));
        Assert.Equal(["fresh"], Directory.GetFileSystemEntries(Path.Combine(rootfs, "var/cache")).Select(Path.GetFileName));
    }

    [Fact]
    public async Task MountAsync_PutsWritesAndDeletionsInUpperOnly_WhenContainerChangesRootfs()
    {
        var layers = await TwoLayers();
        var before = Snapshot(Path.Combine(_box.Root, "layers"));

        await using var mount = await _snapshotter.MountAsync(layers, Path.Combine(_box.Root, "job"), CancellationToken.None);
        await File.WriteAllTextAsync(Path.Combine(mount.RootfsPath, "etc/keep"), "changed");
        await File.WriteAllTextAsync(Path.Combine(mount.RootfsPath, "new"), "n");
        File.Delete(Path.Combine(mount.RootfsPath, "etc/hostname"));

        Assert.Equal("changed", File.ReadAllText(Path.Combine(mount.UpperPath, "etc/keep")));
        Assert.Equal("n", File.ReadAllText(Path.Combine(mount.UpperPath, "new")));
        var whiteout = Lstat(Path.Combine(mount.UpperPath, "etc/hostname"));
        Assert.Equal((S_IFCHR, 0u, 0u), (whiteout.Type, whiteout.RdevMajor, whiteout.RdevMinor));
        Assert.Equal(before, Snapshot(Path.Combine(_box.Root, "layers")));
    }

    [Fact]
    public async Task DisposeAsync_UnmountsAndRemovesItsDirectoriesOnce_WhenCalledTwice()
    {
        var layers = await TwoLayers();
        var work = Path.Combine(_box.Root, "job");
        var mount = await _snapshotter.MountAsync(layers, work, CancellationToken.None);
        await File.WriteAllTextAsync(Path.Combine(mount.RootfsPath, "scratch"), "x");
        var layerFiles = Snapshot(Path.Combine(_box.Root, "layers"));

        await mount.DisposeAsync();
        await mount.DisposeAsync();

        Assert.False(IsMounted(mount.RootfsPath));
        Assert.True(Directory.Exists(work));
        Assert.Empty(Directory.EnumerateFileSystemEntries(work));
        Assert.Equal(layerFiles, Snapshot(Path.Combine(_box.Root, "layers")));
    }

    [Fact]
    public async Task ADiscardedScratch_IsMountedVolatile_AndDisposalOnlyUnmounts_LeavingItsDirectoriesToTheirOwner()
    {
        var layers = await TwoLayers();
        var work = Path.Combine(_box.Root, "job");
        var layerFiles = Snapshot(Path.Combine(_box.Root, "layers"));
        var mount = await _snapshotter.MountAsync(layers, work, scratchDiscarded: true, CancellationToken.None);
        await File.WriteAllTextAsync(Path.Combine(mount.RootfsPath, "scratch"), "x");
        // The kernel's options for this mount (its super options, the last field of mountinfo): "volatile" (shown as
        // "fsync=volatile" since Linux 6.6) skips the overlay's syncs of an upper directory that is thrown away.
        Assert.Contains(SuperOptions(mount.RootfsPath), o => o is "volatile" or "fsync=volatile");

        await mount.DisposeAsync();
        await mount.DisposeAsync();

        Assert.False(IsMounted(mount.RootfsPath));
        // Nothing deleted: the upper directory keeps the container's write, for the owner's discard of the whole filesystem.
        Assert.Equal("x", File.ReadAllText(Path.Combine(work, "upper", "scratch")));
        Assert.True(Directory.Exists(mount.RootfsPath));
        Assert.Empty(Directory.EnumerateFileSystemEntries(mount.RootfsPath));
        Assert.Equal(layerFiles, Snapshot(Path.Combine(_box.Root, "layers")));
    }

    [Fact]
    public async Task AKeptScratch_IsNotVolatile()
    {
        var layers = await TwoLayers();
        await using var mount = await _snapshotter.MountAsync(layers, Path.Combine(_box.Root, "job"), CancellationToken.None);
        Assert.DoesNotContain(SuperOptions(mount.RootfsPath), o => o is "volatile" or "fsync=volatile");
    }

    private static string[] SuperOptions(string mountPoint) =>
        File.ReadLines("/proc/self/mountinfo").Single(l => l.Split(' ')[4] == mountPoint).Split(' ')[^1].Split(',');

    [Fact]
    public async Task DisposeAsync_RemovesSubmountsFirst_WhenSomethingIsMountedInsideRootfs()
    {
        var layers = await TwoLayers();
        var mount = await _snapshotter.MountAsync(layers, Path.Combine(_box.Root, "job"), CancellationToken.None);
        var inner = Path.Combine(mount.RootfsPath, "var/cache");
        Run("mount", "-t", "tmpfs", "tmpfs", inner);

        await mount.DisposeAsync();

        Assert.False(IsMounted(inner));
        Assert.False(IsMounted(mount.RootfsPath));
        Assert.False(Directory.Exists(mount.RootfsPath));
    }

    [Fact]
    public async Task MountAsync_FailsWithClearMessage_WhenMountOptionsExceedOnePage()
    {
        var layer = await Layer("l", new LayerTar().File("a"));
        var lowers = Enumerable.Repeat(layer, 4096 / layer.Length + 1).ToList();
        var work = Path.Combine(_box.Root, "job");

        var ex = await Assert.ThrowsAsync<IOException>(() => _snapshotter.MountAsync(lowers, work, CancellationToken.None));

        Assert.Contains("over the kernel's limit", ex.Message);
        Assert.False(Directory.Exists(Path.Combine(work, "rootfs")));
    }

    [Theory]
    [InlineData("/tmp/a:b")]
    [InlineData("/tmp/a,b")]
    [InlineData("relative/dir")]
    public async Task MountAsync_RejectsLayerPath_WhenOverlayOptionsCannotCarryIt(string lower)
    {
        await Assert.ThrowsAsync<ArgumentException>(() => _snapshotter.MountAsync([lower], Path.Combine(_box.Root, "job"), CancellationToken.None));
    }

    [Fact]
    public async Task UnmountAllUnder_UnmountsLeftoversDeepestFirst_ButNotTheDirectoryItself()
    {
        var dir = Path.Combine(_box.Root, "data");
        Directory.CreateDirectory(dir);
        Run("mount", "-t", "tmpfs", "tmpfs", dir);
        var a = Path.Combine(dir, "a");
        var nested = Path.Combine(a, "nested dir");
        Directory.CreateDirectory(a);
        Run("mount", "-t", "tmpfs", "tmpfs", a);
        Run("mount", "-t", "tmpfs", "tmpfs", a); // stacked on the same path
        Directory.CreateDirectory(nested);
        Run("mount", "-t", "tmpfs", "tmpfs", nested);
        var layers = await TwoLayers();
        // An orphan: the process that owned this mount "crashed" without disposing it.
        _ = await _snapshotter.MountAsync(layers, Path.Combine(dir, "job"), CancellationToken.None);
        var rootfs = Path.Combine(dir, "job", "rootfs");

        var unmounted = MountCleanup.UnmountAllUnder(dir);

        Assert.True(unmounted.ToList().IndexOf(nested) < unmounted.ToList().IndexOf(a), string.Join(", ", unmounted));
        Assert.Contains(rootfs, unmounted);
        Assert.Equal(2, unmounted.Count(p => p == a));
        Assert.False(IsMounted(a) || IsMounted(nested) || IsMounted(rootfs));
        Assert.True(IsMounted(dir));
        Assert.Empty(MountCleanup.UnmountAllUnder(dir));
        Run("umount", dir);
    }
}
