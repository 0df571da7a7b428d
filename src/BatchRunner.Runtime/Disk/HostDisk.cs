using BatchRunner.Native;

namespace BatchRunner.Runtime.Disk;

/// <summary>The size of a filesystem and what an unprivileged writer (the embedded PostgreSQL, a job's volume) may still take.</summary>
public readonly record struct FilesystemSpace(long TotalBytes, long AvailableBytes);

/// <summary>How full the host's filesystems are (statvfs), for the free-space reserve.</summary>
public static class HostDisk
{
    /// <exception cref="IOException">statvfs failed; the message names the path.</exception>
    public static FilesystemSpace Read(string path) =>
        Libc.TryStatVfs(path, out var fs) ? new FilesystemSpace(fs.TotalBytes, fs.AvailableBytes)
            : throw new IOException($"statvfs {path} failed: {Libc.Describe(Libc.Errno)}");
}
