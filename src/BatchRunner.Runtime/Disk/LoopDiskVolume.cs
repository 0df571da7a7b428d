using Microsoft.Extensions.Logging;
using static BatchRunner.Native.Libc;

namespace BatchRunner.Runtime.Disk;

/// <summary>One mounted job filesystem made by <see cref="LoopDiskVolumes"/>.</summary>
/// <remarks>
/// Dispose unmounts (retrying while busy, typically a container process that has not quite exited, then detaching
/// lazily), and deletes the image and the mount point only once the mount point is verified to be a plain directory
/// again: deleting through a live mount would delete the job's files instead. The loop device unbinds itself
/// when the filesystem's last user goes.
/// </remarks>
internal sealed partial class LoopDiskVolume : IDiskVolume
{
    private static readonly TimeSpan BusyRetry = TimeSpan.FromSeconds(2);
    private readonly string _image;
    private readonly long _baselineUsedBytes;
    private readonly ulong _fsId;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _disposeLock = new(1, 1);
    private bool _disposed;
    /// <summary>The empty filesystem's free inodes, read when it was mounted: what <see cref="IsEmpty"/> and
    /// <see cref="InodesInUse"/> count from.</summary>
    private readonly long _baselineFreeInodes;

    /// <summary>Of a filesystem just mounted, empty.</summary>
    public LoopDiskVolume(string mountPoint, string image, string loopName, long limitBytes, long baselineUsedBytes, ILogger logger)
    {
        Path = mountPoint;
        _image = image;
        LoopName = loopName;
        LimitBytes = limitBytes;
        _baselineUsedBytes = baselineUsedBytes;
        _logger = logger;
        if (!TryStatVfs(mountPoint, out var fs)) throw new IOException($"statvfs {mountPoint} failed: {Describe(Errno)}");
        _fsId = fs.FsId;
        _baselineFreeInodes = fs.FreeInodes;
    }

    private LoopDiskVolume(LoopDiskVolume moved, string dir)
    {
        Path = System.IO.Path.Combine(dir, LoopDiskVolumes.MountDirName);
        _image = System.IO.Path.Combine(dir, LoopDiskVolumes.ImageFileName);
        LoopName = moved.LoopName;
        LimitBytes = moved.LimitBytes;
        _baselineUsedBytes = moved._baselineUsedBytes;
        _baselineFreeInodes = moved._baselineFreeInodes;
        _fsId = moved._fsId;
        _logger = moved._logger;
    }

    /// <summary>
    /// The same mounted filesystem after its directory (the one holding the image and the mount point) was renamed to
    /// <paramref name="dir"/>: the volume returned owns it from here on, and this one is spent (as if disposed, without
    /// touching the filesystem).
    /// </summary>
    internal LoopDiskVolume MovedTo(string dir)
    {
        _disposeLock.Wait();
        try
        {
            if (_disposed) throw new InvalidOperationException($"disk volume {Path} was released already");
            _disposed = true;
            return new LoopDiskVolume(this, dir);
        }
        finally { _disposeLock.Release(); }
    }

    /// <summary>Files the filesystem holds beyond the empty one's, by a reading of <see cref="ReadUsage"/>.</summary>
    internal long InodesInUse(DiskUsage usage) => _baselineFreeInodes - usage.FreeInodes;

    /// <summary>Uses exactly the blocks and inodes it did when it was mounted, empty.</summary>
    internal bool IsEmpty => TryStatVfs(Path, out var fs) && fs.FsId == _fsId && fs.UsedBytes == _baselineUsedBytes && fs.FreeInodes == _baselineFreeInodes;

    public string Path { get; }
    public long LimitBytes { get; }
    /// <summary>The loop device its image was bound to ("loop7"), which unbinds itself once the filesystem is gone.</summary>
    internal string LoopName { get; }

    public DiskUsage ReadUsage()
    {
        // The fsid tells this filesystem from the one below the mount point: never report the host's disk as the job's.
        if (_disposed || !TryStatVfs(Path, out var fs) || fs.FsId != _fsId)
            throw new InvalidOperationException($"disk volume {Path} is not mounted");
        return new DiskUsage(Math.Max(0, fs.UsedBytes - _baselineUsedBytes), LimitBytes, fs.AvailableBytes, fs.FreeInodes);
    }

    public void ReleaseFreedSpace()
    {
        // FITRIM discards the free blocks; the loop device turns discards into holes punched in the image file. The
        // journal frees a deleted file's blocks only once the transaction that deleted it commits: syncfs commits it now.
        var fd = open(Path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return;
        try
        {
            if (syncfs(fd) != 0) LogTrimFailed(_logger, Path, "syncfs: " + Describe(Errno));
            if (Trim(fd) != 0) LogTrimFailed(_logger, Path, Describe(Errno));
        }
        finally { close(fd); }
    }

    public async ValueTask DisposeAsync() => await ReleaseAsync(keepImage: false).ConfigureAwait(false);

    /// <summary>
    /// As <see cref="DisposeAsync"/>, but when the unmount was clean the image and the empty mount point stay, for
    /// <see cref="PooledDiskVolumes"/> to make an empty filesystem in again (<see cref="LoopDiskVolumes.ReformatImageAsync"/>,
    /// which waits until <see cref="LoopName"/> no longer holds the image: the filesystem can outlive this unmount in a
    /// container's mount namespace that is still going away, and writes to the image until then).
    /// </summary>
    /// <returns>True when the image and mount point stayed; false when the volume was removed as by
    /// <see cref="DisposeAsync"/> (it had to be detached lazily, or was disposed already).</returns>
    internal async ValueTask<bool> ReleaseKeepingImageAsync() => await ReleaseAsync(keepImage: true).ConfigureAwait(false);

    private async ValueTask<bool> ReleaseAsync(bool keepImage)
    {
        await _disposeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_disposed) return false;
            var deadline = DateTime.UtcNow + BusyRetry;
            var clean = true;
            while (!UnmountNow(Path))
            {
                if (DateTime.UtcNow < deadline) { await Task.Delay(50).ConfigureAwait(false); continue; }
                if (umount2(Path, MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && Errno is not (EINVAL or ENOENT))
                    throw new IOException($"cannot detach disk volume {Path}: {Describe(Errno)}");
                LogDetached(_logger, Path);
                clean = false;
                break;
            }
            if (IsMounted(Path))
                throw new IOException($"disk volume {Path} is still mounted after unmounting; its image was left in place");
            var kept = keepImage && clean && File.Exists(_image) && Directory.Exists(Path) && !Directory.EnumerateFileSystemEntries(Path).Any();
            if (!kept)
            {
                if (File.Exists(_image)) File.Delete(_image);
                if (Directory.Exists(Path)) Directory.Delete(Path);
            }
            _disposed = true;
            return kept;
        }
        finally { _disposeLock.Release(); }
    }

    /// <returns>True when nothing is mounted there any more; false while busy.</returns>
    /// <exception cref="IOException">umount failed otherwise.</exception>
    internal static bool UnmountNow(string mountPoint)
    {
        // A mount stacked on another needs one umount each; bounded so a mount that keeps coming back cannot spin.
        for (var i = 0; i < 16; i++)
        {
            if (umount2(mountPoint, UMOUNT_NOFOLLOW) == 0) continue;
            var errno = Errno;
            if (errno is EINVAL or ENOENT) return true;
            if (errno == EBUSY) return false;
            throw new IOException($"cannot unmount disk volume {mountPoint}: {Describe(errno)}");
        }
        return !IsMounted(mountPoint);
    }

    /// <summary>A mount point is on another device than its parent directory.</summary>
    internal static bool IsMounted(string mountPoint)
    {
        var here = DeviceOf(mountPoint);
        return here is not null && here != DeviceOf(System.IO.Path.GetDirectoryName(mountPoint)!);
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Disk volume {MountPoint}: FITRIM failed: {Error}")]
    private static partial void LogTrimFailed(ILogger logger, string mountPoint, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Disk volume {MountPoint} stayed busy; detached it lazily")]
    private static partial void LogDetached(ILogger logger, string mountPoint);
}
