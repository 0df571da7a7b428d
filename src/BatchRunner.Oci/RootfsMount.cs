using BatchRunner.Oci.Snapshots;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using static BatchRunner.Native.Libc;

namespace BatchRunner.Oci;

/// <summary>An overlay root filesystem for one container. Disposing unmounts it and removes upper/work/rootfs.</summary>
/// <remarks>
/// Dispose is idempotent and may be retried after it failed. Directories are only deleted once the root is
/// verified unmounted: a recursive delete of a still-mounted root would reach into the shared image layers.
/// </remarks>
public sealed partial class RootfsMount : IRootfs
{
    private static readonly TimeSpan BusyRetry = TimeSpan.FromSeconds(2);
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _disposeLock = new(1, 1);
    private bool _disposed;

    public RootfsMount(string rootfsPath, string workDir) : this(rootfsPath, workDir, NullLogger.Instance) { }

    internal RootfsMount(string rootfsPath, string workDir, ILogger logger)
    {
        RootfsPath = rootfsPath;
        WorkDir = workDir;
        _logger = logger;
    }

    public string RootfsPath { get; }
    public string WorkDir { get; }

    /// <summary>Disposal only unmounts: the directories (and what the container wrote in them) are left to the owner of
    /// <see cref="WorkDir"/>'s filesystem, which discards it whole (a job's disk). Deleting them file by file first was
    /// work thrown away with the disk, and for a job that wrote many files in its root, much of it.</summary>
    public bool KeepsDirectories { get; init; }

    /// <summary>Where the container's writes and whiteouts land.</summary>
    public string UpperPath => Path.Combine(WorkDir, OverlaySnapshotter.UpperDirName);

    public async ValueTask DisposeAsync()
    {
        await _disposeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_disposed) return;
            await UnmountAsync().ConfigureAwait(false);
            if (KeepsDirectories)
            {
                // Unmounted: the loop above ends only when the path is no mount point (EINVAL). Nothing is deleted, so the
                // mount table need not be read to make sure.
                _disposed = true;
                return;
            }
            if (StillMounted())
                throw new IOException($"root filesystem {RootfsPath} is still mounted after unmounting; its directories were left in place");
            foreach (var name in new[] { OverlaySnapshotter.RootfsDirName, OverlaySnapshotter.UpperDirName, OverlaySnapshotter.WorkDirName })
            {
                var dir = Path.Combine(WorkDir, name);
                if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            }
            _disposed = true;
        }
        finally { _disposeLock.Release(); }
    }

    private async Task UnmountAsync()
    {
        var deadline = DateTime.UtcNow + BusyRetry;
        // A bounded number of rounds: stacked mounts need one umount each, EBUSY gets retried until the deadline.
        for (var round = 0; round < 200; round++)
        {
            if (umount2(RootfsPath, UMOUNT_NOFOLLOW) == 0) continue;
            var errno = Errno;
            if (errno is EINVAL or ENOENT) return;
            if (errno != EBUSY) throw new IOException($"cannot unmount {RootfsPath}: {ErrorText(errno)} (errno {errno})");
            // Busy: a mount below it keeps it (one a crashed run left), or a process. The mount table is read only now: it
            // is the kernel's text of every mount on the host, read on every job's unmount before (three times).
            if (MountCleanup.UnmountAllUnder(RootfsPath).Count > 0) continue;
            if (DateTime.UtcNow < deadline)
            {
                // Typically a container process that has not quite exited yet.
                await Task.Delay(50).ConfigureAwait(false);
                continue;
            }
            if (umount2(RootfsPath, MNT_DETACH | UMOUNT_NOFOLLOW) != 0)
            {
                errno = Errno;
                throw new IOException($"cannot detach {RootfsPath}: {ErrorText(errno)} (errno {errno})");
            }
            LogDetached(_logger, RootfsPath);
        }
    }

    /// <summary>Mounted if listed in mountinfo, or if it sits on another device than its parent (catches paths mountinfo spells differently).</summary>
    private bool StillMounted()
    {
        if (!Directory.Exists(RootfsPath)) return false;
        if (MountCleanup.IsMountPoint(RootfsPath)) return true;
        return TryStat(AT_FDCWD, RootfsPath, out var root) && TryStat(AT_FDCWD, WorkDir, out var parent, followTrailingSymlink: true) &&
               (root.DevMajor != parent.DevMajor || root.DevMinor != parent.DevMinor);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Root filesystem {Rootfs} stayed busy; detached it lazily")]
    private static partial void LogDetached(ILogger logger, string rootfs);
}
