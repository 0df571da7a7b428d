namespace BatchRunner.Runtime.Disk;

/// <summary>
/// How big a job's ext4 image must be for the job to get its limit. The rule, for a limit L (rounded up to 4 KiB):
/// <list type="bullet">
/// <item>writers may take A = L + headroom. The headroom (32 MiB by default) is why exceeding the limit is not
/// missed: a writer that meets ENOSPC has used more than L plus the slack for ext4's preallocations
/// (<see cref="PreallocationSlackBytes"/>, 16 MiB), whatever the size of its last write (a refused write can
/// leave up to about 2 MiB unused), and stays past L for as long as writing the headroom takes, longer than the
/// usage sampler's interval near the limit (<see cref="DiskUsageWatch"/>);</item>
/// <item>the image is A plus what ext4 keeps for itself: its inode tables (256 bytes per 16 KiB of image, 1/64),
/// bitmaps, group descriptors and superblock copies (a fraction of a percent), and the clusters the kernel holds back
/// for metadata it must always be able to allocate (at most 16 MiB), and a 4 MiB journal (<see cref="JournalBytes"/>:
/// not for crashes, the image is thrown away after one, but so that a filesystem can be emptied and used again while
/// mounted; see <see cref="PooledDiskVolumes"/>). No blocks reserved for root (<c>-m 0</c>);</item>
/// <item>once mounted, whatever the image has beyond A is added to those held-back clusters
/// (<c>/sys/fs/ext4/loopN/reserved_clusters</c>), so writers get exactly A.</item>
/// </list>
/// The image is sparse: the host's disk holds only the blocks written, at most A plus the metadata of the files.
/// </summary>
public static class DiskImageSizing
{
    public const long BlockBytes = 4096;
    public const long DefaultHeadroomBytes = 32L << 20;
    /// <summary>How far past its limit a disk's usage may read before the job counts as over it: what ext4 preallocates
    /// for files being written (<see cref="DiskUsage.OverLimit"/>). Well below the headroom, so a writer that meets
    /// ENOSPC is always over.</summary>
    public const long PreallocationSlackBytes = 16L << 20;

    /// <summary>The kernel holds back min(2%, 4096 clusters) of an ext4 filesystem for metadata.</summary>
    private const long KernelReserveBytes = 4096 * BlockBytes;
    /// <summary>The journal mkfs.ext4 makes (<c>-J size=4</c>, its least: 1024 blocks).</summary>
    public const long JournalBytes = 4L << 20;
    /// <summary>Group descriptors, bitmaps, superblock copies, the root and lost+found directories: measured well under
    /// 0.1% plus a few blocks; 0.2% and 4 MiB leave room for other e2fsprogs versions.</summary>
    private const long FixedMetadataBytes = 4L << 20;

    public static long RoundUpToBlock(long bytes) => checked((bytes + BlockBytes - 1) / BlockBytes * BlockBytes);

    /// <summary>What writers may take: the limit rounded up to a block, plus the headroom.</summary>
    public static long WritableBytes(long limitBytes, long headroomBytes) => checked(RoundUpToBlock(limitBytes) + headroomBytes);

    /// <summary>The image's apparent size for <paramref name="limitBytes"/>, a whole number of MiB.</summary>
    public static long ImageBytes(long limitBytes, long headroomBytes)
    {
        var needed = (double)WritableBytes(limitBytes, headroomBytes) + KernelReserveBytes + FixedMetadataBytes + JournalBytes;
        // The inode tables and the other per-group metadata grow with the image itself, not with what it must hold.
        var image = needed / (1 - 1.0 / 64 - 0.002);
        const long mib = 1L << 20;
        return checked(((long)Math.Ceiling(image) + mib - 1) / mib * mib);
    }
}
