namespace BatchRunner.Runtime;

/// <summary>
/// Makes size-limited filesystems: one per job attempt, holding everything the job writes on the host (its
/// writable root layer and /outputs), so that the kernel refuses writes past the limit with ENOSPC.
/// </summary>
public interface IDiskVolumes
{
    /// <summary>Creates a filesystem of which a job may fill <paramref name="limitBytes"/> (rounded up to 4 KiB),
    /// mounted at <c>DIR/disk</c>, its image <c>DIR/disk.img</c> (also when its image was formatted ahead:
    /// <see cref="Disk.PooledDiskVolumes"/>).</summary>
    /// <param name="dir">The caller's directory for it, on the filesystem the job's data should use: an empty one, or a
    /// path where nothing exists yet (its parent must), which is then made (a pooled disk's directory is moved there).
    /// On failure what was made is removed.</param>
    /// <exception cref="IOException">The filesystem could not be made; the message says why. Nothing is left behind.</exception>
    Task<IDiskVolume> CreateAsync(string dir, long limitBytes, CancellationToken ct);
}

/// <summary>
/// A mounted size-limited filesystem. Disposing it unmounts it (the loop device under it unbinds itself) and deletes its
/// image and mount point: it is the one owner of those. Idempotent; may be retried after it failed.
/// </summary>
public interface IDiskVolume : IAsyncDisposable
{
    /// <summary>The mount point: where the caller makes the overlay's upper and work directories and /outputs.</summary>
    string Path { get; }

    /// <summary>What the job was granted: using more than this is exceeding the limit.</summary>
    long LimitBytes { get; }

    /// <summary>Space in use now (data, directories, the metadata of the files), counted from the empty filesystem.</summary>
    /// <exception cref="InvalidOperationException">The volume is not mounted (any more).</exception>
    DiskUsage ReadUsage();

    /// <summary>Hands the blocks freed inside the volume (files deleted, holes punched) back to the host's disk now,
    /// rather than when the volume goes. Best effort.</summary>
    void ReleaseFreedSpace();
}

/// <summary>One reading of a volume.</summary>
/// <param name="UsedBytes">Blocks in use, including those reserved for writes not yet flushed.</param>
/// <param name="LimitBytes">The grant.</param>
/// <param name="AvailableBytes">What writers may still take before ENOSPC (the grant plus a little headroom, less what is used).</param>
/// <param name="FreeInodes">Files that may still be created; none left also means ENOSPC.</param>
public readonly record struct DiskUsage(long UsedBytes, long LimitBytes, long AvailableBytes, long FreeInodes)
{
    /// <summary>The job used more than it was granted (by more than <see cref="Disk.DiskImageSizing.PreallocationSlackBytes"/>),
    /// or ran out of inodes: it exceeded its disk limit.</summary>
    /// <remarks>ext4 counts as used the blocks it preallocates beyond a file being written (a stream's next extent, up to
    /// 8 MiB a file), for as long as the file's inode stays in memory: a job that wrote 60 MiB of a 64 MiB disk read 67 MiB
    /// in one test run, 62 MiB in most of 15 runs by hand. The kernel gives them up before it refuses a write, so they are
    /// no use of the job's; the slack keeps them from failing a job that stayed within its limit.</remarks>
    public bool OverLimit => UsedBytes > LimitBytes + Disk.DiskImageSizing.PreallocationSlackBytes || FreeInodes <= 0;
}
