using BatchRunner.Native;

namespace BatchRunner.Runtime;

/// <summary>
/// Host file operations the server performs around a container: the ownership of a job's /outputs, and
/// whether a file a job left is a plain file. Here, beside the runtime that mounts those directories, so
/// that the server makes no libc calls of its own.
/// </summary>
public static class HostFiles
{
    /// <summary>Gives <paramref name="path"/> to <paramref name="uid"/>:<paramref name="gid"/> (chown(2): a symlink is
    /// followed), so that a job's user can write the directory the server made for it.</summary>
    /// <exception cref="IOException">chown failed; the message names the path, the ids and errno.</exception>
    public static void Chown(string path, uint uid, uint gid)
    {
        if (Libc.chown(path, uid, gid) != 0)
        {
            var errno = Libc.Errno;
            throw new IOException($"chown {path} to {uid}:{gid} failed: {Libc.ErrorText(errno)} (errno {errno})");
        }
    }

    /// <summary>Makes <paramref name="destination"/> a hard link to <paramref name="source"/> (which is not followed if a
    /// symlink). False when they are on different file systems or linking is not permitted there (the caller copies).</summary>
    /// <exception cref="IOException">Any other failure, naming both paths and errno.</exception>
    public static bool TryHardLink(string source, string destination)
    {
        if (Libc.linkat(Libc.AT_FDCWD, source, Libc.AT_FDCWD, destination, 0) == 0) return true;
        var errno = Libc.Errno;
        if (errno is Libc.EXDEV or Libc.EPERM or Libc.EOPNOTSUPP) return false;
        throw new IOException($"link {source} to {destination} failed: {Libc.ErrorText(errno)} (errno {errno})");
    }

    /// <summary>The first directory above <paramref name="path"/> that host user <paramref name="uid"/>:<paramref name="gid"/>
    /// (no supplementary groups) may not search, by its owner/group/other execute bits; null: none. For users that
    /// must reach a path through the data directory: a user namespace's root (runc mounts from inside it), the
    /// embedded PostgreSQL's user.</summary>
    public static (string Dir, uint Mode, uint Uid, uint Gid)? FirstUnsearchableAncestor(string path, uint uid, uint gid)
    {
        for (var dir = Path.GetDirectoryName(Path.GetFullPath(path)); !string.IsNullOrEmpty(dir); dir = Path.GetDirectoryName(dir))
        {
            // A missing directory is the caller's error to report.
            if (!Libc.TryStat(Libc.AT_FDCWD, dir, out var st, followTrailingSymlink: true)) continue;
            var mode = st.Mode & 0xFFF;
            var x = st.Uid == uid ? 0b001_000_000u : st.Gid == gid ? 0b000_001_000u : 0b000_000_001u;
            if ((mode & x) == 0) return (dir, mode, st.Uid, st.Gid);
        }
        return null;
    }

    /// <summary>True when <paramref name="path"/> itself (lstat: a symlink is not followed) is a regular file;
    /// false for symlinks, directories, FIFOs, sockets, devices and missing paths.</summary>
    public static bool IsRegularFile(string path) =>
        Libc.TryStat(Libc.AT_FDCWD, path, out var st) && st.IsRegularFile;

    /// <summary>
    /// Opens the regular file <paramref name="relativePath"/> beneath <paramref name="dir"/> for reading, resolved by
    /// the kernel (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): no symlink anywhere on the path, the last
    /// component included, and no ".." out of <paramref name="dir"/>, so what a job planted in its outputs after they
    /// were listed (a symlink to /etc/shadow, a directory swapped for a link) is refused, not followed. Null when
    /// there is no such regular file (missing, a link on the way, a directory, FIFO, socket or device).
    /// </summary>
    public static FileStream? OpenRegularFileBeneath(string dir, string relativePath)
    {
        var dirFd = Libc.open(dir, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC);
        if (dirFd < 0) return null;
        int fd;
        try
        {
            // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
            fd = Libc.OpenBeneath(dirFd, relativePath, Libc.O_RDONLY | Libc.O_CLOEXEC | Libc.O_NOCTTY | Libc.O_NONBLOCK);
        }
        finally { Libc.close(dirFd); }
        if (fd < 0) return null;
        var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        if (!Libc.TryStat(fd, "", out var st) || !st.IsRegularFile)
        {
            handle.Dispose();
            return null;
        }
        return new FileStream(handle, FileAccess.Read, 1 << 16);
    }
}
