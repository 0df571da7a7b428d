using System.Diagnostics;
using BatchRunner.Runtime.Disk;
using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests.Disk;

/// <summary>Real sparse ext4 images on real loop devices (the tests run as root); each test removes what it made.</summary>
public sealed class LoopDiskVolumeFacts : IAsyncLifetime
{
    private const long MiB = 1L << 20;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "br-disk-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly LoopDiskVolumes _volumes = new();
    private readonly List<IDiskVolume> _made = [];

    public Task InitializeAsync()
    {
        Directory.CreateDirectory(_dir);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        foreach (var v in _made) await v.DisposeAsync();
        DiskTestHost.Unmount(Path.Combine(_dir, LoopDiskVolumes.MountDirName));
        // Volumes a test made in directories of its own under this one, left mounted by a failed assertion.
        foreach (var sub in Directory.EnumerateDirectories(_dir)) DiskTestHost.Unmount(Path.Combine(sub, LoopDiskVolumes.MountDirName));
        LoopDiskVolumes.RemoveLeftovers(_dir);
        Directory.Delete(_dir, recursive: true);
    }

    private async Task<IDiskVolume> Create(long limitBytes, string? dir = null)
    {
        var v = await _volumes.CreateAsync(dir ?? _dir, limitBytes, CancellationToken.None);
        _made.Add(v);
        return v;
    }

    [Theory]
    [InlineData(1L << 20)]
    [InlineData(100L << 20)]
    [InlineData(3L << 30)]
    [InlineData(1L << 40)]
    [InlineData(12_345_678L)]
    public async Task CreateAsync_GivesWritersTheLimitPlusHeadroom_WhateverTheLimit(long limitBytes)
    {
        var v = await Create(limitBytes);

        var usage = v.ReadUsage();
        var granted = DiskImageSizing.RoundUpToBlock(limitBytes);
        Assert.Equal(granted, v.LimitBytes);
        Assert.Equal(granted + DiskImageSizing.DefaultHeadroomBytes, usage.AvailableBytes);
        Assert.Equal(0, usage.UsedBytes);
        Assert.False(usage.OverLimit);
        // Sparse: an empty volume costs the host only its metadata, whatever its size.
        var image = Path.Combine(_dir, LoopDiskVolumes.ImageFileName);
        Assert.Equal(DiskImageSizing.ImageBytes(limitBytes, DiskImageSizing.DefaultHeadroomBytes), new FileInfo(image).Length);
        Assert.InRange(DiskTestHost.AllocatedBytes(image), 0, 64 * MiB);
        Assert.True(DiskTestHost.IsMounted(v.Path));
    }

    private const long ExtentMetadataSlackBytes = 64 * 1024;

    [Fact]
    public async Task Writes_FailWithEnospcAndUsageIsOverLimit_WhenAJobWritesPastItsLimitAndHeadroom()
    {
        var v = await Create(32 * MiB);

        var file = Path.Combine(v.Path, "big");
        var written = 0L;
        var e = await Assert.ThrowsAsync<IOException>(async () =>
        {
            await using var f = File.Create(file);
            var chunk = new byte[MiB];
            // Twice what writers may take (the limit and its headroom): ENOSPC comes before the end.
            for (var i = 0; i < 2 * (32 * MiB + DiskImageSizing.DefaultHeadroomBytes) / MiB; i++) { await f.WriteAsync(chunk); written += chunk.Length; }
            await f.FlushAsync();
        });

        Assert.Contains("No space left on device", e.Message);
        var usage = v.ReadUsage();
        Assert.True(usage.OverLimit);
        // What the file's data took, plus the blocks ext4 allocates for it besides: an extent tree block once a file has
        // more than four extents (seen once in a full run on a busy machine: 4 KiB over).
        Assert.InRange(usage.UsedBytes, 32 * MiB + 1, 32 * MiB + DiskImageSizing.DefaultHeadroomBytes + ExtentMetadataSlackBytes);
        // The host holds no more than the grant, its headroom and the filesystem's own metadata.
        Assert.InRange(DiskTestHost.AllocatedBytes(Path.Combine(_dir, LoopDiskVolumes.ImageFileName)), 32 * MiB, 32 * MiB + DiskImageSizing.DefaultHeadroomBytes + 4 * MiB);
    }

    [Fact]
    public async Task ReformatImageAsync_MakesAUsedImageTheSameBytesAsANewOne_InTheSameFile()
    {
        string Dir(string name) => Directory.CreateDirectory(Path.Combine(_dir, name)).FullName;
        string Image(string dir) => Path.Combine(dir, LoopDiskVolumes.ImageFileName);
        var (used, fresh) = (Dir("used"), Dir("fresh"));
        await _volumes.FormatImageAsync(used, 64 * MiB, CancellationToken.None);
        await _volumes.FormatImageAsync(fresh, 64 * MiB, CancellationToken.None);
        var volume = (LoopDiskVolume)_volumes.MountImage(used, 64 * MiB);
        // A job's worth of writes: data in many ranges, directories, a file deleted again, inodes in use.
        var marker = System.Text.Encoding.UTF8.GetBytes("job data 4c1d");
        for (var i = 0; i < 40; i++)
        {
            var dir = Directory.CreateDirectory(Path.Combine(volume.Path, $"d{i % 7}", $"e{i}")).FullName;
            await File.WriteAllBytesAsync(Path.Combine(dir, "f"), [.. Enumerable.Repeat(marker, 1000 + i * 300).SelectMany(b => b)]);
        }
        File.Delete(Path.Combine(volume.Path, "d0", "e0", "f"));
        var inode = DiskTestHost.Stat(Image(used)).Inode;
        Assert.True(await volume.ReleaseKeepingImageAsync());

        await _volumes.ReformatImageAsync(used, 64 * MiB, volume.LoopName, TimeSpan.FromSeconds(10), CancellationToken.None);

        // The same file, now byte for byte a new copy, holding no more of the host's disk than one (but the block of its
        // extent tree, a file of more than four extents has: its data ranges are laid out otherwise than a copy's).
        Assert.Equal(inode, DiskTestHost.Stat(Image(used)).Inode);
        Assert.True(File.ReadAllBytes(Image(used)).AsSpan().SequenceEqual(File.ReadAllBytes(Image(fresh))));
        Assert.InRange(DiskTestHost.AllocatedBytes(Image(used)), DiskTestHost.AllocatedBytes(Image(fresh)),
            DiskTestHost.AllocatedBytes(Image(fresh)) + ExtentMetadataSlackBytes);
        var again = _volumes.MountImage(used, 64 * MiB);
        _made.Add(again);
        Assert.Equal(["lost+found"], Directory.EnumerateFileSystemEntries(again.Path).Select(Path.GetFileName));
        Assert.Equal(0, again.ReadUsage().UsedBytes);
    }

    /// <summary>The directories a job's disk needs at its top (LoopDiskOptions.Directories) are in every new filesystem:
    /// the one mkfs.ext4 made, a copy of it (the template) and an image made empty again after a job; empty, root's, 0755,
    /// and counted in the empty filesystem's usage, not the job's.</summary>
    [Fact]
    public async Task Directories_AreInEveryNewFilesystem_MadeOrCopied_EmptyAndUncounted()
    {
        string[] names = ["outputs", "rootfs", "upper", "work"];
        var volumes = new LoopDiskVolumes(new LoopDiskOptions { Directories = names });
        var made = Path.Combine(_dir, "made");
        var copied = Path.Combine(_dir, "copied");
        Directory.CreateDirectory(made);
        Directory.CreateDirectory(copied);
        var first = await volumes.CreateAsync(made, 64 * MiB, CancellationToken.None);
        _made.Add(first);
        var second = (LoopDiskVolume)await volumes.CreateAsync(copied, 64 * MiB, CancellationToken.None);
        foreach (var v in new[] { first, second })
        {
            Assert.Equal(["lost+found", .. names], Directory.EnumerateFileSystemEntries(v.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
            foreach (var name in names)
            {
                var dir = Path.Combine(v.Path, name);
                Assert.Empty(Directory.EnumerateFileSystemEntries(dir));
                Assert.Equal((UnixFileMode)0x1ED /* 0755 */, File.GetUnixFileMode(dir));
                Assert.Equal(0u, DiskTestHost.Stat(dir).Uid);
            }
            Assert.Equal(0, v.ReadUsage().UsedBytes);
        }

        // A job's files in them; the image made empty again holds the directories, empty.
        File.WriteAllText(Path.Combine(second.Path, "outputs", "result.txt"), "job data");
        Directory.CreateDirectory(Path.Combine(second.Path, "upper", "etc"));
        Assert.True(await second.ReleaseKeepingImageAsync());
        await volumes.ReformatImageAsync(copied, 64 * MiB, second.LoopName, TimeSpan.FromSeconds(10), CancellationToken.None);
        var again = volumes.MountImage(copied, 64 * MiB);
        _made.Add(again);
        Assert.Equal(["lost+found", .. names], Directory.EnumerateFileSystemEntries(again.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.All(names, name => Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(again.Path, name))));
        Assert.Equal(0, again.ReadUsage().UsedBytes);
    }

    [Fact]
    public async Task ANewFilesystem_HasTheSmallestJournal_AndStillGivesWritersTheLimit()
    {
        var volume = await new LoopDiskVolumes().CreateAsync(_dir, 64 * MiB, CancellationToken.None);
        _made.Add(volume);
        // Read from the image: the journal (a disk emptied in place relies on it, PooledDiskVolumes) and its size.
        var header = DiskTestHost.Run(new[] { "/usr/sbin/dumpe2fs", "/sbin/dumpe2fs" }.First(File.Exists), "-h", Path.Combine(_dir, LoopDiskVolumes.ImageFileName));
        Assert.Contains("has_journal", header);
        Assert.Matches(@"Total journal size:\s+4096k", header);
        Assert.Equal(0, volume.ReadUsage().UsedBytes);
        Assert.Equal(DiskImageSizing.WritableBytes(64 * MiB, DiskImageSizing.DefaultHeadroomBytes), volume.ReadUsage().AvailableBytes);
    }

    [Theory]
    [InlineData("a/b")]
    [InlineData("..")]
    [InlineData("lost+found")]
    [InlineData("")]
    public async Task Directories_RefusesANameThatIsNotOneNewDirectory(string name)
    {
        var volumes = new LoopDiskVolumes(new LoopDiskOptions { Directories = [name] });
        await Assert.ThrowsAsync<ArgumentException>(() => volumes.CreateAsync(_dir, 64 * MiB, CancellationToken.None));
        Assert.False(File.Exists(Path.Combine(_dir, LoopDiskVolumes.ImageFileName)));
    }

    [Fact]
    public void TemplateOutside_IsWhatTheRangesLeaveOfARange()
    {
        var template = new EmptyImageTemplates.Template(100, [(10, new byte[10]), (30, new byte[5]), (50, new byte[20])], 35);
        Assert.Equal([(0L, 10L), (20L, 30L), (35L, 50L), (70L, 100L)], template.Outside(0, 100));
        Assert.Equal([(22L, 30L), (35L, 40L)], template.Outside(22, 40));
        Assert.Empty(template.Outside(12, 18));
        Assert.Equal([(70L, 80L)], template.Outside(55, 80));
        Assert.Equal([(1L, 5L)], template.Outside(1, 5));
        Assert.Equal([(20L, 25L)], template.Outside(15, 25));
    }

    [Fact]
    public async Task FormatImageAsync_CopiesTheFirstEmptyImageOfASize_InsteadOfRunningMkfsAgain()
    {
        // mkfs.ext4 behind a wrapper that counts its runs.
        var runs = Path.Combine(_dir, "mkfs-runs");
        var wrapper = Path.Combine(_dir, "mkfs-counting");
        var mkfs = new[] { "/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4" }.First(File.Exists);
        await File.WriteAllTextAsync(wrapper, $"#!/bin/sh\necho run >> '{runs}'\nexec {mkfs} \"$@\"\n");
        File.SetUnixFileMode(wrapper, (UnixFileMode)0b111_101_101);
        var volumes = new LoopDiskVolumes(new LoopDiskOptions { MkfsPath = wrapper });
        string Dir(string name) => Directory.CreateDirectory(Path.Combine(_dir, name)).FullName;
        var (first, copy, other) = (Dir("first"), Dir("copy"), Dir("other"));

        await volumes.FormatImageAsync(first, 64 * MiB, CancellationToken.None);
        await volumes.FormatImageAsync(copy, 64 * MiB, CancellationToken.None);
        await volumes.FormatImageAsync(other, 96 * MiB, CancellationToken.None);

        // One mkfs per size: the second image of 64 MiB is the first one's bytes, holes where it has holes.
        Assert.Equal(2, File.ReadAllLines(runs).Length);
        string Image(string dir) => Path.Combine(dir, LoopDiskVolumes.ImageFileName);
        Assert.True(File.ReadAllBytes(Image(first)).AsSpan().SequenceEqual(File.ReadAllBytes(Image(copy))));
        // No more of the host's disk than the first: mkfs's zeroed ranges (allocated, unwritten) are holes in the copy.
        Assert.InRange(DiskTestHost.AllocatedBytes(Image(copy)), 1, DiskTestHost.AllocatedBytes(Image(first)));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Image(copy)));
        // A clean filesystem by e2fsck's full check, and a volume like any other once mounted.
        var fsck = await Command.RunAsync(new[] { "/usr/sbin/e2fsck", "/sbin/e2fsck" }.First(File.Exists), ["-fn", Image(copy)],
            TimeSpan.FromSeconds(60), CancellationToken.None);
        Assert.True(fsck.Ok, fsck.Message);
        var volume = volumes.MountImage(copy, 64 * MiB);
        _made.Add(volume);
        Assert.Equal(0, volume.ReadUsage().UsedBytes);
        Assert.Equal(64 * MiB + DiskImageSizing.DefaultHeadroomBytes, volume.ReadUsage().AvailableBytes);
        await File.WriteAllBytesAsync(Path.Combine(volume.Path, "ten"), new byte[10 * MiB]);
        Assert.InRange(volume.ReadUsage().UsedBytes, 10 * MiB, 10 * MiB + 64 * 1024);
    }

    [Fact]
    public async Task CreateAsync_TurnsOffTheBlockAllocatorsBitmapPrefetch()
    {
        var volume = await Create(64 * MiB);

        var fields = File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(' ')).Single(f => f[4] == volume.Path);
        var device = Path.GetFileName(fields[Array.IndexOf(fields, "-", 5) + 2]);
        Assert.StartsWith("loop", device);
        Assert.Equal("0", File.ReadAllText($"/sys/fs/ext4/{device}/mb_prefetch").Trim());
    }

    [Fact]
    public async Task ReadUsage_CountsWhatWasWritten_FromTheEmptyFilesystem()
    {
        var v = await Create(64 * MiB);

        await File.WriteAllBytesAsync(Path.Combine(v.Path, "ten"), new byte[10 * MiB]);
        Directory.CreateDirectory(Path.Combine(v.Path, "d"));

        var usage = v.ReadUsage();
        Assert.InRange(usage.UsedBytes, 10 * MiB, 10 * MiB + 64 * 1024);
        Assert.False(usage.OverLimit);
    }

    [Fact]
    public async Task ReadUsage_IsOverLimit_WhenTheFilesRunOutBeforeTheBytes()
    {
        var v = await Create(1 * MiB);
        var dir = Directory.CreateDirectory(Path.Combine(v.Path, "many")).FullName;

        var e = Assert.Throws<IOException>(() =>
        {
            for (var i = 0; i < 1_000_000; i++) File.Create(Path.Combine(dir, i.ToString())).Dispose();
        });

        Assert.Contains("No space left", e.Message);
        var usage = v.ReadUsage();
        Assert.Equal(0, usage.FreeInodes);
        Assert.True(usage.OverLimit);
    }

    [Fact]
    public async Task DisposeAsync_UnmountsUnbindsAndDeletes_EvenWithFilesInside()
    {
        var v = await Create(16 * MiB);
        await File.WriteAllTextAsync(Path.Combine(v.Path, "f"), "x");
        var device = DiskTestHost.DeviceOf(v.Path);
        Assert.Single(DiskTestHost.LoopsBackedUnder(_dir));

        await v.DisposeAsync();
        await v.DisposeAsync(); // idempotent

        Assert.False(DiskTestHost.IsMounted(Path.Combine(_dir, LoopDiskVolumes.MountDirName)));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir));
        await Poll.UntilAsync(() => Task.FromResult(DiskTestHost.LoopsBackedUnder(_dir)), l => l.Count == 0, TimeSpan.FromSeconds(10), "loop device unbound");
        Assert.Throws<InvalidOperationException>(() => v.ReadUsage());
        Assert.NotNull(device);
    }

    [Fact]
    public async Task CreateAsync_LeavesNothing_WhenMkfsFails()
    {
        var volumes = new LoopDiskVolumes(new LoopDiskOptions { MkfsPath = "/bin/false" });

        var e = await Assert.ThrowsAsync<IOException>(() => volumes.CreateAsync(_dir, 16 * MiB, CancellationToken.None));

        Assert.StartsWith("/bin/false ", e.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir));
        Assert.Empty(DiskTestHost.LoopsBackedUnder(_dir));
    }

    [Fact]
    public async Task CreateAsync_RefusesClearly_WhenMkfsIsMissing()
    {
        var volumes = new LoopDiskVolumes(new LoopDiskOptions { MkfsPath = "mkfs.nosuchfs" });

        var e = await Assert.ThrowsAsync<IOException>(() => volumes.CreateAsync(_dir, 16 * MiB, CancellationToken.None));

        Assert.Equal("mkfs.nosuchfs not found in PATH, /usr/sbin or /sbin: per-job disk limits need e2fsprogs", e.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir));
    }

    [Fact]
    public async Task Volume_HoldsNoSetuidProgramsOrUsableDevices_ForTheHost()
    {
        var v = await Create(16 * MiB);

        var options = DiskTestHost.MountOptions(v.Path);

        Assert.Contains("nosuid", options);
        Assert.Contains("nodev", options);
    }

    [Fact]
    public async Task RemoveLeftovers_UnmountedVolumesLoopDeviceGoes_WhenAWorkerDiedAfterMounting()
    {
        // What a killed worker leaves: the volume mounted, its image, and the loop device under the mount.
        var sub = Directory.CreateDirectory(Path.Combine(_dir, "crashed")).FullName;
        var v = await _volumes.CreateAsync(sub, 16 * MiB, CancellationToken.None);
        await File.WriteAllTextAsync(Path.Combine(v.Path, "f"), "x");

        // The janitor unmounts everything under the run directory first (MountCleanup), then calls RemoveLeftovers.
        DiskTestHost.Unmount(v.Path);
        LoopDiskVolumes.RemoveLeftovers(_dir);

        await Poll.UntilAsync(() => Task.FromResult(DiskTestHost.LoopsBackedUnder(_dir)), l => l.Count == 0, TimeSpan.FromSeconds(10), "loop device unbound");
        Directory.Delete(sub, recursive: true);
    }

    [Fact]
    public async Task RemoveLeftovers_UnbindsALoopDevice_WhenAWorkerDiedBetweenBindingAndMounting()
    {
        // losetup binds without autoclear: the device would stay bound to the image forever.
        var image = Path.Combine(_dir, LoopDiskVolumes.ImageFileName);
        await using (var f = File.Create(image)) f.SetLength(16 * MiB);
        var device = DiskTestHost.Run("losetup", "--find", "--show", image).Trim();
        try
        {
            Assert.Single(DiskTestHost.LoopsBackedUnder(_dir));

            var removed = LoopDiskVolumes.RemoveLeftovers(_dir);

            Assert.Equal([device], removed);
            Assert.Empty(DiskTestHost.LoopsBackedUnder(_dir));
        }
        finally
        {
            if (DiskTestHost.LoopsBackedUnder(_dir).Count > 0) DiskTestHost.Run("losetup", "-d", device);
        }
    }

    [Fact]
    public async Task OutputsTransfer_HandsCopiedBlocksBackToTheHost_AsItMovesThem()
    {
        var v = await Create(512 * MiB);
        var outputs = Directory.CreateDirectory(Path.Combine(v.Path, "outputs")).FullName;
        var data = System.Security.Cryptography.RandomNumberGenerator.GetBytes((int)(200 * MiB));
        await File.WriteAllBytesAsync(Path.Combine(outputs, "model.bin"), data);
        DiskTestHost.Run("sync", "-f", outputs);
        var image = Path.Combine(_dir, LoopDiskVolumes.ImageFileName);
        Assert.InRange(DiskTestHost.AllocatedBytes(image), 200 * MiB, 210 * MiB);
        var imagePeak = 0L;
        var releases = 0;

        var report = OutputsTransfer.Move(outputs, Path.Combine(_dir, "moved"), () =>
        {
            imagePeak = Math.Max(imagePeak, DiskTestHost.AllocatedBytes(image));
            v.ReleaseFreedSpace();
            releases++;
        });

        Assert.Equal(data, await File.ReadAllBytesAsync(Path.Combine(_dir, "moved", "model.bin")));
        Assert.Equal(200 * MiB, report.Bytes);
        Assert.InRange(releases, 3, 4);
        // What the image held shrinks as the copy grows: never the volume's data twice.
        Assert.InRange(DiskTestHost.AllocatedBytes(image), 0, 8 * MiB);
        Assert.InRange(v.ReadUsage().UsedBytes, 0, 1 * MiB);
    }

    [Fact]
    public async Task CreateAsync_TakesTensOfMilliseconds_ForATenGiBLimit()
    {
        var clock = Stopwatch.StartNew();
        var v = await Create(10L << 30);
        var created = clock.Elapsed;
        clock.Restart();
        await v.DisposeAsync();
        var removed = clock.Elapsed;

        // Measured here: about 25 ms to make (mkfs is most of it) and 5 ms to remove; a loose bound for a loaded machine.
        Assert.InRange(created + removed, TimeSpan.Zero, TimeSpan.FromSeconds(3));
    }
}
