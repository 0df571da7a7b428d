using BatchRunner.Runtime.Disk;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Tests.Disk;

/// <summary>What the node janitor removes at start (<see cref="RunDirectories.Remove"/>), on real loop devices.</summary>
public sealed class RunDirectoriesFacts : IDisposable
{
    private const string Prefix = "br-janitor-test-";
    private readonly string _root = Directory.CreateTempSubdirectory("br-rundirs-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private IReadOnlyList<string> LoopsBackedUnderRoot() =>
        Directory.EnumerateDirectories("/sys/block", "loop*")
            .Select(b => Path.Combine(b, "loop", "backing_file"))
            .Where(f => File.Exists(f) && File.ReadAllText(f).StartsWith(_root + "/", StringComparison.Ordinal)).ToList();

    [Fact]
    public async Task Remove_RemovesTheImagesAPoolFormattedAhead_WhenTheWorkerDiedWithThem()
    {
        // As the server names them: the node's container prefix, then "disk-pool-".
        var pool = new PooledDiskVolumes(new LoopDiskVolumes(), _root, Prefix + "disk-pool-", 16L << 20, size: 2);
        var job = Directory.CreateDirectory(Path.Combine(_root, "job")).FullName;
        await using (await pool.CreateAsync(job, 16L << 20, CancellationToken.None)) { }
        await pool.FilledAsync();
        Assert.Equal(2, pool.Ready);
        // Waiting images are plain files: not mounted, bound to no loop device.
        Assert.Empty(LoopsBackedUnderRoot());

        // The worker dies: the pool is never disposed. Its next start:
        var removal = RunDirectories.Remove(_root, Prefix);

        Assert.Equal((2, 0), (removal.Dirs, removal.Mounts));
        Assert.Empty(removal.Kept);
        Assert.Empty(Directory.GetDirectories(_root, Prefix + "*"));
        Assert.Empty(LoopsBackedUnderRoot());
    }

    [Fact]
    public async Task Remove_UnmountsAndRemovesTheDisksAPoolKeptMounted_WhenTheWorkerDiedWithThem()
    {
        var pool = new PooledDiskVolumes(new LoopDiskVolumes(), _root, Prefix + "disk-pool-", 16L << 20, size: 1, keepMounted: new KeepMounted([]));
        await using (await pool.CreateAsync(Path.Combine(_root, "job-a"), 16L << 20, CancellationToken.None)) { }
        await pool.FilledAsync();
        Assert.Equal(1, pool.Mounted);

        // The worker dies: the pool is never disposed. Its next start:
        var removal = RunDirectories.Remove(_root, Prefix);

        // The disk kept mounted and the image formatted ahead.
        Assert.Equal((2, 1), (removal.Dirs, removal.Mounts));
        Assert.Empty(removal.Kept);
        Assert.Empty(Directory.GetDirectories(_root, Prefix + "*"));
        Assert.DoesNotContain(File.ReadAllLines("/proc/self/mountinfo"), l => l.Contains(_root));
        // The loop device unbinds itself once its filesystem is gone, a moment after the unmount.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (LoopsBackedUnderRoot().Count > 0 && DateTime.UtcNow < deadline) await Task.Delay(50);
        Assert.Empty(LoopsBackedUnderRoot());
    }
}
