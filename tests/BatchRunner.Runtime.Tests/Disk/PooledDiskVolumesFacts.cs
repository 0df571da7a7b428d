using BatchRunner.Runtime;
using BatchRunner.Runtime.Disk;
using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests.Disk;

/// <summary>Job disks made ahead, on real loop devices (the tests run as root); each test removes what it made.</summary>
public sealed class PooledDiskVolumesFacts : IAsyncLifetime
{
    private const long LimitBytes = 64L << 20;
    private const string Prefix = "br-test-pool-";
    private readonly string _root = Path.Combine(Path.GetTempPath(), "br-pool-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly LoopDiskVolumes _maker = new();

    public Task InitializeAsync()
    {
        Directory.CreateDirectory(Path.Combine(_root, "job"));
        return Task.CompletedTask;
    }

    public Task DisposeAsync()
    {
        foreach (var dir in Directory.GetDirectories(_root))
        {
            DiskTestHost.Unmount(Path.Combine(dir, LoopDiskVolumes.MountDirName));
            LoopDiskVolumes.RemoveLeftovers(dir);
        }
        Directory.Delete(_root, recursive: true);
        return Task.CompletedTask;
    }

    private string[] PoolDirs() => Directory.GetDirectories(_root, Prefix + "*");

    [Fact]
    public async Task CreateAsync_HandsOutADiskFormattedAhead_InTheJobsDirectory_WithTheSameLimitAsOneMadeOnDemand()
    {
        await using var pool = new PooledDiskVolumes(_maker, _root, Prefix, LimitBytes, size: 1);
        var job = Path.Combine(_root, "job");
        var job2 = Directory.CreateDirectory(Path.Combine(_root, "job2")).FullName;
        // The first request starts the pool; its own disk is made on demand in the job's directory.
        var first = await pool.CreateAsync(job, LimitBytes, CancellationToken.None);
        await pool.FilledAsync();
        Assert.Equal(1, pool.Ready);
        Assert.Equal(Path.Combine(job, LoopDiskVolumes.MountDirName), first.Path);
        // A waiting image is only a file: not mounted, bound to no loop device.
        var poolDir = Assert.Single(PoolDirs());
        Assert.True(File.Exists(Path.Combine(poolDir, LoopDiskVolumes.ImageFileName)));
        Assert.Empty(DiskTestHost.LoopsBackedUnder(poolDir));

        var second = await pool.CreateAsync(job2, LimitBytes, CancellationToken.None);
        // Where an on-demand disk is: the job's own directory, image and mount point.
        Assert.Equal(Path.Combine(job2, LoopDiskVolumes.MountDirName), second.Path);
        Assert.True(File.Exists(Path.Combine(job2, LoopDiskVolumes.ImageFileName)));
        Assert.True(DiskTestHost.IsMounted(second.Path));
        Assert.False(Directory.Exists(poolDir));
        Assert.Equal(first.ReadUsage(), second.ReadUsage());
        Assert.Equal(first.LimitBytes, second.LimitBytes);

        await second.DisposeAsync();
        // The job's disposal removes its disk; the pool then formats the next one.
        Assert.False(DiskTestHost.IsMounted(Path.Combine(job2, LoopDiskVolumes.MountDirName)));
        Assert.False(File.Exists(Path.Combine(job2, LoopDiskVolumes.ImageFileName)));
        await Poll.UntilAsync(() => Task.FromResult(DiskTestHost.LoopsBackedUnder(job2)), l => l.Count == 0, TimeSpan.FromSeconds(10), "loop device unbound");
        await pool.FilledAsync();
        Assert.Equal(1, pool.Ready);
        await first.DisposeAsync();
    }

    [Fact]
    public async Task ADisksDirectory_IsRenamedIntoPlace_AndRecycledWhenReleased_WithTheJobsDataGone()
    {
        await using var pool = new PooledDiskVolumes(_maker, _root, Prefix, LimitBytes, size: 1);
        await using (await pool.CreateAsync(Path.Combine(_root, "job"), LimitBytes, CancellationToken.None)) { }
        await pool.FilledAsync();
        var waiting = Assert.Single(PoolDirs());
        var inode = Inode(waiting);

        // The job's directory does not exist yet: the pool's is renamed to it, image and mount point in it.
        var job = Path.Combine(_root, "job-a");
        var disk = await pool.CreateAsync(job, LimitBytes, CancellationToken.None);
        Assert.Equal(Path.Combine(job, LoopDiskVolumes.MountDirName), disk.Path);
        Assert.Empty(PoolDirs());
        Assert.Equal(inode, Inode(job));
        var imageInode = Inode(Path.Combine(job, LoopDiskVolumes.ImageFileName));
        Directory.CreateDirectory(Path.Combine(disk.Path, "deep", "er"));
        await File.WriteAllTextAsync(Path.Combine(disk.Path, "deep", "er", "secret.txt"), string.Concat(Enumerable.Repeat(Secret, 4096)));

        await disk.DisposeAsync();

        // Released cleanly: the directory went back to the pool with the image, which the pool empties in place: the same
        // file (no inode freed and made on the data disk), a clean empty filesystem, not one byte of the job's data in it.
        Assert.False(Directory.Exists(job));
        // The unmount unbinds the loop device (autoclear), which the kernel may finish a moment after umount returns.
        await Poll.UntilAsync(() => Task.FromResult(DiskTestHost.LoopsBackedUnder(_root)), l => l.Count == 0, TimeSpan.FromSeconds(10), "loop device unbound");
        await pool.FilledAsync();
        var again = Assert.Single(PoolDirs());
        Assert.Equal(inode, Inode(again));
        var image = Path.Combine(again, LoopDiskVolumes.ImageFileName);
        Assert.Equal(imageInode, Inode(image));
        await AssertEmptyFilesystemAsync(image);
        await using var next = await pool.CreateAsync(Path.Combine(_root, "job-b"), LimitBytes, CancellationToken.None);
        Assert.Equal(["lost+found"], Directory.EnumerateFileSystemEntries(next.Path).Select(Path.GetFileName));
        Assert.Equal(0, next.ReadUsage().UsedBytes);
    }

    [Fact]
    public async Task AUsedImageWhoseFilesystemStillLivesElsewhere_IsNotWrittenOver_ANewImageIsMadeInstead()
    {
        await using var pool = new PooledDiskVolumes(_maker, _root, Prefix, LimitBytes, size: 1);
        await using (await pool.CreateAsync(Path.Combine(_root, "job"), LimitBytes, CancellationToken.None)) { }
        await pool.FilledAsync();
        var disk = await pool.CreateAsync(Path.Combine(_root, "job-a"), LimitBytes, CancellationToken.None);
        var imageInode = Inode(Path.Combine(_root, "job-a", LoopDiskVolumes.ImageFileName));
        await File.WriteAllTextAsync(Path.Combine(disk.Path, "kept.txt"), Secret);
        // What a container's mount namespace that is still going away does: a second mount of the job's filesystem, which
        // outlives the volume's own unmount, and with it the loop device and the filesystem's writes to the image.
        var held = Directory.CreateDirectory(Path.Combine(_root, "held")).FullName;
        DiskTestHost.Run("mount", "--bind", disk.Path, held);
        try
        {
            var released = System.Diagnostics.Stopwatch.StartNew();
            await disk.DisposeAsync();
            await pool.FilledAsync();

            // The pool waited for the device (ReuseWait), then made a new image: another file, clean and empty.
            Assert.True(released.Elapsed >= PooledDiskVolumes.ReuseWait, $"the pool made its image after {released.Elapsed.TotalMilliseconds:0} ms");
            var image = Path.Combine(Assert.Single(PoolDirs()), LoopDiskVolumes.ImageFileName);
            Assert.NotEqual(imageInode, Inode(image));
            await AssertEmptyFilesystemAsync(image);
            // And the old filesystem, still mounted there, is whole.
            await File.WriteAllTextAsync(Path.Combine(held, "later.txt"), "written after the release");
            Assert.Equal(Secret, await File.ReadAllTextAsync(Path.Combine(held, "kept.txt")));
            await using var next = await pool.CreateAsync(Path.Combine(_root, "job-b"), LimitBytes, CancellationToken.None);
            Assert.Equal(["lost+found"], Directory.EnumerateFileSystemEntries(next.Path).Select(Path.GetFileName));
        }
        finally { DiskTestHost.Unmount(held); }
        await Poll.UntilAsync(() => Task.FromResult(DiskTestHost.LoopsBackedUnder(_root).Count), n => n == 0, TimeSpan.FromSeconds(10),
            "the old loop device to go with its last mount");
    }

    private const string Secret = "the job's data, 7f3a9c";

    /// <summary>A clean ext4 by e2fsck's full check, with nothing in it but what mkfs makes, and no byte of
    /// <see cref="Secret"/> anywhere in the file.</summary>
    private static async Task AssertEmptyFilesystemAsync(string image)
    {
        var fsck = await Command.RunAsync(new[] { "/usr/sbin/e2fsck", "/sbin/e2fsck" }.First(File.Exists), ["-fn", image],
            TimeSpan.FromSeconds(60), CancellationToken.None);
        Assert.True(fsck.Ok, fsck.Message);
        var listing = await Command.RunAsync(new[] { "/usr/sbin/debugfs", "/sbin/debugfs" }.First(File.Exists), ["-R", "ls -l /", image],
            TimeSpan.FromSeconds(60), CancellationToken.None);
        Assert.DoesNotContain("secret", listing.Stdout);
        Assert.DoesNotContain("deep", listing.Stdout);
        var bytes = await File.ReadAllBytesAsync(image);
        Assert.Equal(-1, bytes.AsSpan().IndexOf(System.Text.Encoding.UTF8.GetBytes(Secret)));
    }

    [Fact]
    public async Task ADiskMadeOnDemand_OfThePoolsLimit_ComesBackToThePoolToo()
    {
        await using var pool = new PooledDiskVolumes(_maker, _root, Prefix, LimitBytes, size: 1);
        // The first request finds the pool empty: its disk is made on demand, in a directory the maker makes.
        var job = Path.Combine(_root, "job-on-demand");
        var onDemand = await pool.CreateAsync(job, LimitBytes, CancellationToken.None);
        var inode = Inode(job);
        await pool.FilledAsync();
        await using var pooled = await pool.CreateAsync(Path.Combine(_root, "job-pooled"), LimitBytes, CancellationToken.None);
        Assert.Empty(PoolDirs());

        await onDemand.DisposeAsync();

        // The pool was short: the on-demand disk's directory came back, and the next image is formatted in it.
        Assert.False(Directory.Exists(job));
        await pool.FilledAsync();
        Assert.Equal(1, pool.Ready);
        Assert.Equal(inode, Inode(Assert.Single(PoolDirs())));
    }

    [Fact]
    public async Task AReleasedDisk_IsKeptToEmptyAgain_EvenWhenTheFormattedOnesWaitingAreEnough()
    {
        await using var pool = new PooledDiskVolumes(_maker, _root, Prefix, LimitBytes, size: 1);
        var first = await pool.CreateAsync(Path.Combine(_root, "job"), LimitBytes, CancellationToken.None);
        await pool.FilledAsync();
        var a = await pool.CreateAsync(Path.Combine(_root, "job-a"), LimitBytes, CancellationToken.None);
        var aImage = Inode(Path.Combine(_root, "job-a", LoopDiskVolumes.ImageFileName));
        // The first disk comes back and is emptied into the one image waiting.
        await first.DisposeAsync();
        await pool.FilledAsync();
        Assert.Equal(1, pool.Ready);

        await a.DisposeAsync();

        // One image waits already, yet A's is kept, not deleted: the next refill empties it in place, the same file.
        Assert.Equal(2, PoolDirs().Length);
        var b = await pool.CreateAsync(Path.Combine(_root, "job-b"), LimitBytes, CancellationToken.None);
        await b.DisposeAsync();
        await pool.FilledAsync();
        // B's image went (a spare was kept already); A's was emptied into the one waiting.
        Assert.Equal(1, pool.Ready);
        var image = Path.Combine(Assert.Single(PoolDirs()), LoopDiskVolumes.ImageFileName);
        Assert.Equal(aImage, Inode(image));
        await AssertEmptyFilesystemAsync(image);
    }

    private static readonly string[] TopDirectories = ["outputs", "upper", "work"];

    private static PooledDiskVolumes KeepingMounted(string root, int size = 1) =>
        new(new LoopDiskVolumes(new LoopDiskOptions { Directories = TopDirectories }), root, Prefix, LimitBytes, size, keepMounted: new KeepMounted(["outputs", "upper"]));

    [Fact]
    public async Task AReleasedDisk_IsEmptiedWhileMounted_AndHandedOutAgain_WithNothingOfItsJobLeft()
    {
        await using var pool = KeepingMounted(_root);
        var outside = Directory.CreateDirectory(Path.Combine(_root, "outside")).FullName;
        await File.WriteAllTextAsync(Path.Combine(outside, "keep.txt"), "not the job's");
        var jobA = Path.Combine(_root, "job-a");
        var disk = await pool.CreateAsync(jobA, LimitBytes, CancellationToken.None);
        var loop = Assert.Single(DiskTestHost.LoopsBackedUnder(jobA));
        // What a job may leave: a tree with its data, links out of its disk, its root directory's mode changed.
        var upper = Path.Combine(disk.Path, "upper");
        Directory.CreateDirectory(Path.Combine(upper, "deep", "er"));
        await File.WriteAllTextAsync(Path.Combine(upper, "deep", "er", "secret.txt"), Secret);
        // More than TrimAboveBytes: its blocks go back to the host.
        await File.WriteAllBytesAsync(Path.Combine(upper, "deep", "big.bin"), Enumerable.Repeat((byte)7, 4 << 20).ToArray());
        File.CreateSymbolicLink(Path.Combine(upper, "to-outside"), outside);
        File.CreateSymbolicLink(Path.Combine(disk.Path, "outputs", "escape.txt"), Path.Combine(outside, "keep.txt"));
        DiskTestHost.MakeFifo(Path.Combine(upper, "fifo"));
        File.SetUnixFileMode(upper, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        DiskTestHost.Chown(Path.Combine(disk.Path, "outputs"), 1000, 1000);
        Directory.CreateDirectory(Path.Combine(disk.Path, "work", "work"));
        // (A mark on a directory no job reaches, which emptying keeps.)
        File.SetUnixFileMode(Path.Combine(disk.Path, "work"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        Assert.True(disk.ReadUsage().UsedBytes > 0);

        await disk.DisposeAsync();

        // The job's directory went at once; the disk waits, still mounted on the same loop device, emptied.
        Assert.False(Directory.Exists(jobA));
        await pool.FilledAsync();
        Assert.Equal(1, pool.Mounted);
        // (Beside it, the image the pool formatted ahead at its first request, unmounted.)
        Assert.Single(PoolDirs(), d => DiskTestHost.IsMounted(Path.Combine(d, LoopDiskVolumes.MountDirName)));

        var jobB = Path.Combine(_root, "job-b");
        await using var next = await pool.CreateAsync(jobB, LimitBytes, CancellationToken.None);
        Assert.Equal(0, pool.Mounted);
        Assert.Equal(Path.Combine(jobB, LoopDiskVolumes.MountDirName), next.Path);
        Assert.Equal(loop, Assert.Single(DiskTestHost.LoopsBackedUnder(jobB)));
        Assert.Equal(["lost+found", .. TopDirectories], Directory.EnumerateFileSystemEntries(next.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        foreach (var name in TopDirectories)
        {
            var dir = Path.Combine(next.Path, name);
            Assert.Empty(Directory.EnumerateFileSystemEntries(dir));
            Assert.Equal(name == "work" ? (UnixFileMode)0x1C0 /* 0700 */ : (UnixFileMode)0x1ED /* 0755 */, File.GetUnixFileMode(dir));
            Assert.Equal(0u, DiskTestHost.Stat(dir).Uid);
            Assert.Equal(0u, DiskTestHost.Stat(dir).Gid);
        }
        Assert.Equal(0, next.ReadUsage().UsedBytes);
        Assert.Equal(LimitBytes, next.LimitBytes);
        // The directories a job reaches (outputs, upper) are new, root's and 0755 whatever the job made of them; the others
        // were only emptied (work keeps its mark). Links were deleted, not followed.
        Assert.Equal("not the job's", await File.ReadAllTextAsync(Path.Combine(outside, "keep.txt")));
        // The blocks of what the job wrote were given back to the host (a journal commit, then FITRIM punching them out of the image).
        Assert.InRange(DiskTestHost.AllocatedBytes(Path.Combine(jobB, LoopDiskVolumes.ImageFileName)), 0, 2L << 20);
    }

    [Fact]
    public async Task ADiskWithAMountLeftOnIt_IsNeverEmptiedThrough_ItIsReleasedAsBefore()
    {
        await using var pool = KeepingMounted(_root);
        var disk = await pool.CreateAsync(Path.Combine(_root, "job-a"), LimitBytes, CancellationToken.None);
        // A root filesystem's overlay that was not unmounted: here a bind of a directory outside the disk.
        var source = Directory.CreateDirectory(Path.Combine(_root, "source")).FullName;
        await File.WriteAllTextAsync(Path.Combine(source, "keep.txt"), "not the job's");
        DiskTestHost.Run("mount", "--bind", source, Path.Combine(disk.Path, "upper"));

        await disk.DisposeAsync();
        await pool.FilledAsync();

        // Not kept mounted; unmounted (lazily, being busy), and nothing deleted through the mount.
        Assert.Equal(0, pool.Mounted);
        Assert.Equal("not the job's", await File.ReadAllTextAsync(Path.Combine(source, "keep.txt")));
        Assert.All(PoolDirs(), d => Assert.False(DiskTestHost.IsMounted(Path.Combine(d, LoopDiskVolumes.MountDirName))));
    }

    [Fact]
    public async Task ADiskStillHeldElsewhere_IsNotHandedOutAgain_ItIsUnmountedAndANewImageMade()
    {
        await using var pool = KeepingMounted(_root);
        var jobA = Path.Combine(_root, "job-a");
        var disk = await pool.CreateAsync(jobA, LimitBytes, CancellationToken.None);
        var loop = Assert.Single(DiskTestHost.LoopsBackedUnder(jobA));
        await File.WriteAllTextAsync(Path.Combine(disk.Path, "outputs", "kept.txt"), Secret);
        // What a container's mount namespace still going away does: its /outputs, a bind of the disk's, outlives the release.
        var held = Directory.CreateDirectory(Path.Combine(_root, "held")).FullName;
        DiskTestHost.Run("mount", "--bind", Path.Combine(disk.Path, "outputs"), held);
        try
        {
            var released = System.Diagnostics.Stopwatch.StartNew();
            await disk.DisposeAsync();
            await pool.FilledAsync();

            // Emptied, but the old /outputs still held its inode: after ReuseWait the disk was unmounted instead.
            Assert.True(released.Elapsed >= PooledDiskVolumes.ReuseWait, $"given up after {released.Elapsed.TotalMilliseconds:0} ms");
            Assert.Equal(0, pool.Mounted);
            var jobB = Path.Combine(_root, "job-b");
            await using var next = await pool.CreateAsync(jobB, LimitBytes, CancellationToken.None);
            // A new image (the old one stays bound to its device, deleted, while the old filesystem lives).
            Assert.Contains(DiskTestHost.LoopsBackedUnder(jobB), l => l != loop);
            Assert.Equal(["lost+found", .. TopDirectories], Directory.EnumerateFileSystemEntries(next.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
            Assert.Equal(0, next.ReadUsage().UsedBytes);
        }
        finally { DiskTestHost.Unmount(held); }
    }

    [Fact]
    public async Task DisposeAsync_UnmountsAndRemovesTheDisksKeptMounted()
    {
        var pool = KeepingMounted(_root, size: 2);
        var a = await pool.CreateAsync(Path.Combine(_root, "job-a"), LimitBytes, CancellationToken.None);
        var b = await pool.CreateAsync(Path.Combine(_root, "job-b"), LimitBytes, CancellationToken.None);
        await a.DisposeAsync();
        await b.DisposeAsync();
        await pool.FilledAsync();
        Assert.Equal(2, pool.Mounted);

        await pool.DisposeAsync();

        Assert.Empty(PoolDirs());
        Assert.DoesNotContain(File.ReadAllLines("/proc/self/mountinfo"), l => l.Contains(_root));
        await Poll.UntilAsync(() => Task.FromResult(DiskTestHost.LoopsBackedUnder(_root).Count), n => n == 0, TimeSpan.FromSeconds(10), "loop devices unbound");
    }

    private static ulong Inode(string path) =>
        BatchRunner.Native.Libc.TryStat(BatchRunner.Native.Libc.AT_FDCWD, path, out var st) ? st.Inode : throw new IOException($"stat {path}");

    [Fact]
    public async Task CreateAsync_MakesTheDiskOnDemand_WhenTheLimitIsNotThePools()
    {
        await using var pool = new PooledDiskVolumes(_maker, _root, Prefix, LimitBytes, size: 1);
        var job = Path.Combine(_root, "job");
        await using (await pool.CreateAsync(job, LimitBytes, CancellationToken.None)) { }
        await pool.FilledAsync();

        await using var other = await pool.CreateAsync(job, 2 * LimitBytes, CancellationToken.None);

        Assert.Equal(Path.Combine(job, LoopDiskVolumes.MountDirName), other.Path);
        Assert.Equal(2 * LimitBytes, other.LimitBytes);
        Assert.Equal(1, pool.Ready);
    }

    [Fact]
    public async Task DisposeAsync_RemovesTheWaitingImagesAndTheirDirectories()
    {
        var pool = new PooledDiskVolumes(_maker, _root, Prefix, LimitBytes, size: 2);
        await using (await pool.CreateAsync(Path.Combine(_root, "job"), LimitBytes, CancellationToken.None)) { }
        await pool.FilledAsync();
        Assert.Equal(2, PoolDirs().Length);

        await pool.DisposeAsync();

        Assert.Empty(PoolDirs());
        Assert.Empty(DiskTestHost.LoopsBackedUnder(_root));
    }
}
