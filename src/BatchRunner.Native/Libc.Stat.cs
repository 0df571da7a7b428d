using System.Runtime.InteropServices;

namespace BatchRunner.Native;

internal static unsafe partial class Libc
{
    /// <summary>The fields of struct statx we read; statx has one layout on every architecture, unlike struct stat.</summary>
    public readonly record struct FileStatus(uint Mode, uint Uid, uint Gid, ulong Inode, long Size, uint Nlink,
        uint RdevMajor, uint RdevMinor, uint DevMajor, uint DevMinor, long MtimeSeconds, uint MtimeNanoseconds)
    {
        public uint Type => Mode & S_IFMT;
        public bool IsDirectory => Type == S_IFDIR;
        public bool IsRegularFile => Type == S_IFREG;
        /// <summary>"c", "b", or null for anything that is not a device node.</summary>
        public string? DeviceType => Type switch { S_IFCHR => "c", S_IFBLK => "b", _ => null };
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);

    /// <summary>
    /// statx(2) of <paramref name="path"/> relative to <paramref name="dirfd"/> (<see cref="AT_FDCWD"/>: the working
    /// directory; an empty path: <paramref name="dirfd"/> itself). Like lstat, a trailing symlink is not followed
    /// unless <paramref name="followTrailingSymlink"/>. Returns false with errno set when the call fails.
    /// </summary>
    public static bool TryStat(int dirfd, string path, out FileStatus status, bool followTrailingSymlink = false)
    {
        const uint STATX_BASIC_STATS = 0x7ff;
        var flags = followTrailingSymlink ? 0 : AT_SYMLINK_NOFOLLOW;
        if (path.Length == 0) flags |= AT_EMPTY_PATH;
        byte* buf = stackalloc byte[256];
        if (statx(dirfd, path, flags, STATX_BASIC_STATS, buf) != 0) { status = default; return false; }
        status = new FileStatus(
            Mode: *(ushort*)(buf + 28),
            Uid: *(uint*)(buf + 20),
            Gid: *(uint*)(buf + 24),
            Inode: *(ulong*)(buf + 32),
            Size: *(long*)(buf + 40),
            Nlink: *(uint*)(buf + 16),
            RdevMajor: *(uint*)(buf + 128),
            RdevMinor: *(uint*)(buf + 132),
            DevMajor: *(uint*)(buf + 136),
            DevMinor: *(uint*)(buf + 140),
            MtimeSeconds: *(long*)(buf + 112),
            MtimeNanoseconds: *(uint*)(buf + 120));
        return true;
    }

    /// <summary>True when the open file <paramref name="fd"/> is a regular file (not a device, FIFO, socket or directory).</summary>
    public static bool IsRegularFile(int fd) =>
        TryStat(fd, "", out var st) ? st.IsRegularFile : throw new IOException($"statx failed: errno {Errno}");

    /// <summary>
    /// Makes sure the regular file <paramref name="relativePath"/> ("etc/hosts") exists in <paramref name="root"/>,
    /// creating it (mode 0644, and a missing first-level directory, 0755) as this process. Every path is
    /// resolved with openat2(RESOLVE_IN_ROOT): a symlink the image planted cannot lead outside the root.
    /// Returns false (nothing created) when it cannot be done, e.g. the image has a directory there.
    /// </summary>
    public static bool EnsureFileInRoot(string root, string relativePath)
    {
        var rootFd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (rootFd < 0) return false;
        try
        {
            var slash = relativePath.IndexOf('/');
            if (slash > 0) mkdirat(rootFd, relativePath[..slash], 0b111_101_101); // EEXIST is fine; anything else shows below
            var fd = OpenInRoot(rootFd, relativePath, O_WRONLY | O_CREAT | O_CLOEXEC, 0b110_100_100);
            if (fd < 0) return false;
            close(fd);
            return true;
        }
        finally { close(rootFd); }
    }
}
