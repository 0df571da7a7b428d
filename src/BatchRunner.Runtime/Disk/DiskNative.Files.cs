using System.Runtime.InteropServices;

namespace BatchRunner.Runtime.Disk;

/// <summary>The *at() calls, sparse-file calls (SEEK_DATA, hole punching) and FITRIM that moving outputs off a volume needs.</summary>
internal static unsafe partial class DiskNative
{
    public const int O_RDONLY = 0, O_WRONLY = 1, O_CREAT = 0x40, O_EXCL = 0x80, O_NONBLOCK = 0x800;
    public const int AT_FDCWD = -100, AT_SYMLINK_NOFOLLOW = 0x100, AT_EMPTY_PATH = 0x1000;
    public const uint S_IFMT = 0xF000, S_IFIFO = 0x1000, S_IFCHR = 0x2000, S_IFDIR = 0x4000, S_IFBLK = 0x6000,
        S_IFREG = 0x8000, S_IFLNK = 0xA000, S_IFSOCK = 0xC000;
    private const int SEEK_DATA = 3, SEEK_HOLE = 4;
    private const int FALLOC_FL_KEEP_SIZE = 1, FALLOC_FL_PUNCH_HOLE = 2;
    private const nuint FITRIM = 0xC0185879; // _IOWR('X', 121, struct fstrim_range)

    private static readonly bool IsArm = RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm;
    /// <summary>0x10000 on x86-64, 0x4000 on arm64.</summary>
    public static readonly int O_DIRECTORY = IsArm ? 0x4000 : 0x10000;
    /// <summary>0x20000 on x86-64, 0x8000 on arm64.</summary>
    public static readonly int O_NOFOLLOW = IsArm ? 0x8000 : 0x20000;

    /// <summary>The statx fields read here (statx has one layout on every architecture).</summary>
    public readonly record struct FileStatus(uint Mode, uint Uid, uint Gid, ulong Inode, long Size, uint Nlink,
        long MtimeSeconds, uint MtimeNanoseconds)
    {
        public uint Type => Mode & S_IFMT;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Timespec { public long Seconds; public long Nanoseconds; }

    [StructLayout(LayoutKind.Sequential)]
    private struct FstrimRange { public ulong Start, Length, MinLength; }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int openat(int dirfd, string path, int flags, uint mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkdirat(int dirfd, string path, uint mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int linkat(int olddirfd, string oldpath, int newdirfd, string newpath, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fchown(int fd, uint uid, uint gid);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fchmod(int fd, uint mode);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int futimens(int fd, Timespec* times);

    [LibraryImport("libc", SetLastError = true)]
    public static partial long lseek(int fd, long offset, int whence);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fallocate(int fd, int mode, long offset, long length);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int ftruncate(int fd, long length);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint pread(int fd, byte* buffer, nuint count, long offset);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint pwrite(int fd, byte* buffer, nuint count, long offset);

    public static int OpenAt(int dirfd, string path, int flags, uint mode = 0) => openat(dirfd, path, flags | O_CLOEXEC, mode);

    /// <summary>lstat-like statx of <paramref name="path"/> relative to <paramref name="dirfd"/> (an empty path: the fd itself).</summary>
    public static bool TryStat(int dirfd, string path, out FileStatus status)
    {
        byte* b = stackalloc byte[256];
        var flags = AT_SYMLINK_NOFOLLOW | (path.Length == 0 ? AT_EMPTY_PATH : 0);
        if (statx(dirfd, path, flags, 0x7ff, b) != 0) { status = default; return false; }
        status = new FileStatus(*(ushort*)(b + 28), *(uint*)(b + 20), *(uint*)(b + 24), *(ulong*)(b + 32), *(long*)(b + 40),
            *(uint*)(b + 16), *(long*)(b + 112), *(uint*)(b + 120));
        return true;
    }

    public static int SetTimes(int fd, long seconds, uint nanoseconds)
    {
        var times = stackalloc Timespec[2];
        times[0] = times[1] = new Timespec { Seconds = seconds, Nanoseconds = nanoseconds };
        return futimens(fd, times);
    }

    /// <summary>The next data at or after <paramref name="offset"/>, or -1 at the end (ENXIO: only a hole is left).</summary>
    public static long NextData(int fd, long offset) => lseek(fd, offset, SEEK_DATA);

    /// <summary>The next hole at or after <paramref name="offset"/> (the end of the file counts as one).</summary>
    public static long NextHole(int fd, long offset) => lseek(fd, offset, SEEK_HOLE);

    /// <summary>Frees the blocks of a byte range (the file keeps its size).</summary>
    public static int PunchHole(int fd, long offset, long length) => fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);

    /// <summary>FITRIM: discards the filesystem's free blocks, which a loop device passes on as holes in its image.</summary>
    public static int Trim(int fd)
    {
        var range = new FstrimRange { Start = 0, Length = ulong.MaxValue, MinLength = 0 };
        return ioctl(fd, FITRIM, &range);
    }
}
