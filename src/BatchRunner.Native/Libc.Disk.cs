using System.Runtime.InteropServices;

namespace BatchRunner.Native;

/// <summary>
/// The calls behind a job's size-limited filesystem (Runtime/Disk): loop devices (ioctls on /dev/loop-control and
/// /dev/loopN), statvfs, FITRIM, and the sparse-file calls (SEEK_DATA/SEEK_HOLE, hole punching) with which outputs
/// are moved off it.
/// </summary>
internal static unsafe partial class Libc
{
    public const int O_RDWR = 2;
    public const int ENXIO = 6, EACCES = 13, ENOSPC = 28;
    public const uint S_IFSOCK = 0xC000;
    public const ulong MS_NOSUID = 2, MS_NODEV = 4, MS_NOEXEC = 8, MS_NOATIME = 1024;

    // <linux/loop.h>
    private const nuint LOOP_CLR_FD = 0x4C01, LOOP_SET_STATUS64 = 0x4C04, LOOP_GET_STATUS64 = 0x4C05, LOOP_CONFIGURE = 0x4C0A,
        LOOP_CTL_GET_FREE = 0x4C82;
    public const uint LO_FLAGS_AUTOCLEAR = 4, LO_FLAGS_DIRECT_IO = 16;
    private const nuint FITRIM = 0xC0185879; // _IOWR('X', 121, struct fstrim_range)
    private const int SEEK_DATA = 3, SEEK_HOLE = 4;
    private const int FALLOC_FL_KEEP_SIZE = 1, FALLOC_FL_PUNCH_HOLE = 2;

    /// <summary>struct loop_config: the backing file's fd, the logical block size, then struct loop_info64 (whose
    /// lo_flags is at byte 52, lo_file_name at 56) and reserved space; 304 bytes in all.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 304)]
    private struct LoopConfig
    {
        [FieldOffset(0)] public uint Fd;
        [FieldOffset(4)] public uint BlockSize;
        [FieldOffset(8 + 52)] public uint Flags;
        [FieldOffset(8 + 56)] public fixed byte FileName[64];
    }

    /// <summary>struct loop_info64 (232 bytes): lo_device and lo_inode (the backing file's, bytes 0 and 8) are read, only
    /// lo_flags (byte 52) is changed here.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 232)]
    private struct LoopInfo64
    {
        [FieldOffset(0)] public ulong Device;
        [FieldOffset(8)] public ulong Inode;
        [FieldOffset(52)] public uint Flags;
    }

    /// <summary>glibc's struct statvfs on 64-bit Linux (x86-64 and arm64 alike): 112 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct StatVfs
    {
        public ulong Bsize, Frsize, Blocks, Bfree, Bavail, Files, Ffree, Favail, Fsid, Flag, Namemax;
        public fixed int Spare[6];
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct FstrimRange { public ulong Start, Length, MinLength; }

    /// <summary>What statvfs says, in bytes and inodes. <see cref="UsedBytes"/> counts the blocks in use, those reserved
    /// for delayed allocation included; <see cref="AvailableBytes"/> is what an unprivileged writer may still take.</summary>
    public readonly record struct FsFigures(long TotalBytes, long UsedBytes, long AvailableBytes, long FreeBlocks, long BlockSize,
        long FreeInodes, ulong FsId);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int ioctl(int fd, nuint request, nint arg);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int ioctl(int fd, nuint request, void* arg);

    [LibraryImport("libc", EntryPoint = "statvfs", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statvfs(string path, StatVfs* buf);

    [LibraryImport("libc", SetLastError = true)]
    private static partial long lseek(int fd, long offset, int whence);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fallocate(int fd, int mode, long offset, long length);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int ftruncate(int fd, long length);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint pread(int fd, byte* buffer, nuint count, long offset);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint pwrite(int fd, byte* buffer, nuint count, long offset);

    /// <summary>pread(2) into the span; returns the bytes read or -1.</summary>
    public static nint pread(int fd, Span<byte> buffer, long offset)
    {
        fixed (byte* p = buffer) return pread(fd, p, (nuint)buffer.Length, offset);
    }

    /// <summary>pwrite(2) of the span; returns the bytes written (possibly fewer) or -1.</summary>
    public static nint pwrite(int fd, ReadOnlySpan<byte> buffer, long offset)
    {
        fixed (byte* p = buffer) return pwrite(fd, p, (nuint)buffer.Length, offset);
    }

    /// <summary>LOOP_CTL_GET_FREE: the number of a loop device that is free now (the kernel adds one if none is).</summary>
    public static int GetFreeLoop(int controlFd) => ioctl(controlFd, LOOP_CTL_GET_FREE, 0);

    /// <summary>LOOP_CONFIGURE (Linux 5.8): binds <paramref name="backingFd"/> to the loop device in one call, with
    /// 4096-byte logical blocks and the given LO_FLAGS_*. Returns 0, or -1 with errno (EBUSY: someone else took it).</summary>
    public static int ConfigureLoop(int loopFd, int backingFd, uint flags, string fileName)
    {
        var config = new LoopConfig { Fd = (uint)backingFd, BlockSize = 4096, Flags = flags };
        var name = System.Text.Encoding.UTF8.GetBytes(fileName);
        var length = Math.Min(name.Length, 63);
        for (var i = 0; i < length; i++) config.FileName[i] = name[name.Length - length + i]; // the tail names it best
        return ioctl(loopFd, LOOP_CONFIGURE, &config);
    }

    /// <summary>LOOP_CLR_FD: unbinds the loop device (EBUSY while mounted or open elsewhere).</summary>
    public static int ClearLoop(int loopFd) => ioctl(loopFd, LOOP_CLR_FD, 0);

    /// <summary>Sets LO_FLAGS_AUTOCLEAR on a bound loop device, so that it unbinds itself once its last user closes it.</summary>
    public static int SetLoopAutoclear(int loopFd)
    {
        var info = new LoopInfo64();
        if (ioctl(loopFd, LOOP_GET_STATUS64, &info) != 0) return -1;
        info.Flags |= LO_FLAGS_AUTOCLEAR;
        return ioctl(loopFd, LOOP_SET_STATUS64, &info);
    }

    /// <summary>LOOP_GET_STATUS64: the file a loop device is bound to, as the device it is on (in the kernel's
    /// <c>new_encode_dev</c> form: <see cref="EncodeDevice"/>) and its inode. Returns 0, or -1 with errno (ENXIO: the device
    /// is bound to nothing).</summary>
    public static int LoopBacking(int loopFd, out ulong device, out ulong inode)
    {
        var info = new LoopInfo64();
        var rc = ioctl(loopFd, LOOP_GET_STATUS64, &info);
        (device, inode) = rc == 0 ? (info.Device, info.Inode) : (0UL, 0UL);
        return rc;
    }

    /// <summary>A device number as loop_info64's lo_device holds it (the kernel's <c>new_encode_dev</c>).</summary>
    public static ulong EncodeDevice(uint major, uint minor) => (minor & 0xff) | ((ulong)major << 8) | ((ulong)(minor & ~0xffu) << 12);

    /// <summary>FITRIM: discards the filesystem's free blocks (a loop device passes discards on as holes in its image).</summary>
    public static int Trim(int fd)
    {
        var range = new FstrimRange { Start = 0, Length = ulong.MaxValue, MinLength = 0 };
        return ioctl(fd, FITRIM, &range);
    }

    public static bool TryStatVfs(string path, out FsFigures figures)
    {
        StatVfs s;
        if (statvfs(path, &s) != 0) { figures = default; return false; }
        var unit = (long)s.Frsize;
        figures = new FsFigures((long)s.Blocks * unit, (long)(s.Blocks - s.Bfree) * unit, (long)s.Bavail * unit, (long)s.Bfree, unit,
            (long)s.Favail, s.Fsid);
        return true;
    }

    /// <summary>The next data at or after <paramref name="offset"/>, or -1 (ENXIO: only a hole is left up to the end).</summary>
    public static long NextData(int fd, long offset) => lseek(fd, offset, SEEK_DATA);

    /// <summary>The next hole at or after <paramref name="offset"/> (the end of the file counts as one).</summary>
    public static long NextHole(int fd, long offset) => lseek(fd, offset, SEEK_HOLE);

    /// <summary>Frees the blocks of a byte range; the file keeps its size.</summary>
    public static int PunchHole(int fd, long offset, long length) => fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);

    /// <summary>Sets the modification (and access) time of an open file.</summary>
    public static int SetTimes(int fd, long seconds, uint nanoseconds)
    {
        var t = new Timespec { Seconds = seconds, Nanoseconds = nanoseconds };
        return futimens(fd, [t, t]);
    }

    /// <summary>The device (major, minor) a path lives on, without following a trailing symlink; null if it cannot be read.</summary>
    public static (uint Major, uint Minor)? DeviceOf(string path) =>
        TryStat(AT_FDCWD, path, out var st) ? (st.DevMajor, st.DevMinor) : null;

    public static string Describe(int errno) => $"{ErrorText(errno)} (errno {errno})";
}
