using BatchRunner.Runtime.Disk;

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
        Assert.Empty(DiskTestHost.LoopsBackedUnder(job2));
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
        await File.WriteAllTextAsync(Path.Combine(disk.Path, "secret.txt"), "the job's data");

        await disk.DisposeAsync();

        // Released cleanly: the image (the job's data) is gone, the directory went back to the pool, which formats a new
        // image in it.
        Assert.False(Directory.Exists(job));
        Assert.Empty(DiskTestHost.LoopsBackedUnder(_root));
        await pool.FilledAsync();
        var again = Assert.Single(PoolDirs());
        Assert.Equal(inode, Inode(again));
        Assert.True(File.Exists(Path.Combine(again, LoopDiskVolumes.ImageFileName)));
        await using var next = await pool.CreateAsync(Path.Combine(_root, "job-b"), LimitBytes, CancellationToken.None);
        Assert.Empty(Directory.EnumerateFiles(next.Path));
        Assert.Equal(0, next.ReadUsage().UsedBytes);
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
