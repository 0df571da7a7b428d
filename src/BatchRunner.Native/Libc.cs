using System.Runtime.InteropServices;

namespace BatchRunner.Oci.Layers;

/// <summary>
/// The *at() family and mount calls the unpacker and snapshotter need. Own imports rather than Tmds.LibC because
/// that lacks setxattr, statx and openat2. Constants are the asm-generic values shared by x86-64 and arm64,
/// the two architectures BatchRunner runs on.
/// </summary>
internal static unsafe partial class Libc
{
    public const int O_RDONLY = 0, O_WRONLY = 1, O_CREAT = 0x40, O_EXCL = 0x80, O_NOCTTY = 0x100;
    public const int O_DIRECTORY = 0x10000, O_NOFOLLOW = 0x20000, O_CLOEXEC = 0x80000, O_PATH = 0x200000;
    public const int AT_FDCWD = -100, AT_SYMLINK_NOFOLLOW = 0x100, AT_REMOVEDIR = 0x200;
    public const uint S_IFMT = 0xF000, S_IFIFO = 0x1000, S_IFCHR = 0x2000, S_IFDIR = 0x4000, S_IFBLK = 0x6000,
        S_IFREG = 0x8000, S_IFLNK = 0xA000;
    public const int ENOENT = 2, EINTR = 4, EBADF = 9, EBUSY = 16, EEXIST = 17, ENOTDIR = 20, EISDIR = 21, EINVAL = 22,
        ENODATA = 61, ELOOP = 40, EOPNOTSUPP = 95, ENOSYS = 38, E2BIG = 7, EXDEV = 18, EPERM = 1;
    public const int MNT_DETACH = 2, UMOUNT_NOFOLLOW = 8;
    public const ulong RESOLVE_NO_MAGICLINKS = 0x02, RESOLVE_IN_ROOT = 0x10;
    private const long SYS_openat2 = 437; // same number on x86-64 and arm64 (added after the syscall tables unified)

    [StructLayout(LayoutKind.Sequential)]
    public struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;

        public static Timespec From(DateTimeOffset t)
        {
            var ticks = t.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
            var seconds = Math.DivRem(ticks, TimeSpan.TicksPerSecond, out var rem);
            if (rem < 0) { seconds--; rem += TimeSpan.TicksPerSecond; }
            return new Timespec { Seconds = seconds, Nanoseconds = rem * 100 };
        }
    }

    /// <summary>The fields of struct statx we read; statx has one layout on every architecture, unlike struct stat.</summary>
    public readonly record struct FileStatus(uint Mode, uint Uid, uint Gid, ulong Inode, long Size, uint Nlink,
        uint RdevMajor, uint RdevMinor, uint DevMajor, uint DevMinor, long MtimeSeconds, uint MtimeNanoseconds)
    {
        public uint Type => Mode & S_IFMT;
        public bool IsDirectory => Type == S_IFDIR;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct OpenHow { public ulong Flags; public ulong Mode; public ulong Resolve; }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int openat(int dirfd, string path, int flags, uint mode);

    [LibraryImport("libc", SetLastError = true)]
    private static partial long syscall(long number, int dirfd, byte* path, OpenHow* how, nuint size);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkdirat(int dirfd, string path, uint mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int symlinkat(string target, int newdirfd, string linkpath);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int linkat(int olddirfd, string oldpath, int newdirfd, string newpath, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mknodat(int dirfd, string path, uint mode, ulong dev);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int fchownat(int dirfd, string path, uint uid, uint gid, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int fchmodat(int dirfd, string path, uint mode, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fchown(int fd, uint uid, uint gid);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fchmod(int fd, uint mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int utimensat(int dirfd, string path, Timespec* times, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int futimens(int fd, Timespec* times);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int unlinkat(int dirfd, string path, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int fsetxattr(int fd, string name, byte* value, nuint size, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint write(int fd, byte* buffer, nuint count);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mount(string source, string target, string fstype, ulong flags, string? data);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial byte* realpath(string path, byte* resolved);

    [LibraryImport("libc")]
    private static partial void free(void* p);

    public static int Errno => Marshal.GetLastPInvokeError();

    public static string ErrorText(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    /// <summary>openat2(2): the kernel resolves <paramref name="path"/> as if <paramref name="rootFd"/> were "/",
    /// so neither "..", absolute symlinks nor relative symlinks can leave it. Returns -1 and sets errno on failure.</summary>
    public static int OpenInRoot(int rootFd, string path, int flags)
    {
        var how = new OpenHow { Flags = (ulong)flags, Resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
        var bytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
            return (int)syscall(SYS_openat2, rootFd, p, &how, (nuint)sizeof(OpenHow));
    }

    /// <summary>lstat-like (never follows a trailing symlink). Returns false with errno set when the call fails.</summary>
    public static bool TryStat(int dirfd, string path, out FileStatus status, bool followTrailingSymlink = false)
    {
        const uint STATX_BASIC_STATS = 0x7ff;
        const int AT_EMPTY_PATH = 0x1000;
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

    public static string? RealPath(string path)
    {
        var p = realpath(path, null);
        if (p == null) return null;
        try { return Marshal.PtrToStringUTF8((nint)p); }
        finally { free(p); }
    }

    /// <summary>glibc's makedev(): the dev_t encoding with 12+20 major bits and 8+24 minor bits.</summary>
    public static ulong MakeDev(uint major, uint minor) =>
        ((ulong)(major & 0xfffff000) << 32) | ((ulong)(major & 0xfff) << 8) |
        ((ulong)(minor & 0xffffff00) << 12) | (minor & 0xff);
}
