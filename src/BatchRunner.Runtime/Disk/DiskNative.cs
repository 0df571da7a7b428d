using System.Runtime.InteropServices;

namespace BatchRunner.Runtime.Disk;

/// <summary>
/// The libc calls behind a job's size-limited filesystem: loop devices (ioctl on /dev/loop-control and
/// /dev/loopN), statvfs, mount and umount. Constants are the asm-generic values x86-64 and arm64 share.
/// </summary>
internal static unsafe partial class DiskNative
{
    public const int O_RDWR = 2, O_CLOEXEC = 0x80000;
    public const int EEXIST = 17, ENOSPC = 28;
    public const int ENOENT = 2, ENXIO = 6, EBUSY = 16, EINVAL = 22;
    public const ulong MS_NOSUID = 2, MS_NODEV = 4, MS_NOATIME = 1024;
    public const int MNT_DETACH = 2, UMOUNT_NOFOLLOW = 8;

    // <linux/loop.h>
    private const nuint LOOP_CLR_FD = 0x4C01, LOOP_SET_STATUS64 = 0x4C04, LOOP_GET_STATUS64 = 0x4C05, LOOP_CONFIGURE = 0x4C0A,
        LOOP_CTL_GET_FREE = 0x4C82;
    public const uint LO_FLAGS_AUTOCLEAR = 4, LO_FLAGS_DIRECT_IO = 16;

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

    /// <summary>struct loop_info64 (232 bytes): only lo_flags (byte 52) is read or changed here.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 232)]
    private struct LoopInfo64
    {
        [FieldOffset(52)] public uint Flags;
    }

    /// <summary>glibc's struct statvfs on 64-bit Linux (x86-64 and arm64 alike): 112 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct StatVfs
    {
        public ulong Bsize, Frsize, Blocks, Bfree, Bavail, Files, Ffree, Favail, Fsid, Flag, Namemax;
        public fixed int Spare[6];
    }

    /// <summary>What statvfs says, in bytes and inodes. <see cref="UsedBytes"/> is the blocks in use (allocated or
    /// reserved for delayed allocation); <see cref="AvailableBytes"/> what an unprivileged writer may still take.</summary>
    public readonly record struct FsFigures(long TotalBytes, long UsedBytes, long AvailableBytes, long FreeBlocks, long BlockSize,
        long FreeInodes, ulong FsId);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int ioctl(int fd, nuint request, nint arg);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int ioctl(int fd, nuint request, void* arg);

    [LibraryImport("libc", EntryPoint = "statvfs", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statvfs(string path, StatVfs* buf);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mount(string source, string target, string fstype, ulong flags, string? data);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);

    public static int Errno => Marshal.GetLastPInvokeError();

    public static string Describe(int errno) => $"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";

    public static int Open(string path, int flags) => open(path, flags | O_CLOEXEC);

    /// <summary>LOOP_CTL_GET_FREE: the number of a loop device that is free now (the kernel creates one if none is).</summary>
    public static int GetFreeLoop(int controlFd) => ioctl(controlFd, LOOP_CTL_GET_FREE, 0);

    /// <summary>LOOP_CONFIGURE (Linux 5.8): binds <paramref name="backingFd"/> to the loop device in one call, with
    /// 4096-byte logical blocks and the given LO_FLAGS_*. Returns 0, or -1 with errno (EBUSY: someone else took it).</summary>
    public static int Configure(int loopFd, int backingFd, uint flags, string fileName)
    {
        var config = new LoopConfig { Fd = (uint)backingFd, BlockSize = 4096, Flags = flags };
        var name = System.Text.Encoding.UTF8.GetBytes(fileName);
        var length = Math.Min(name.Length, 63);
        for (var i = 0; i < length; i++) config.FileName[i] = name[name.Length - length + i]; // the tail names it best
        return ioctl(loopFd, LOOP_CONFIGURE, &config);
    }

    /// <summary>LOOP_CLR_FD: unbinds the loop device (EBUSY while mounted or open elsewhere).</summary>
    public static int Clear(int loopFd) => ioctl(loopFd, LOOP_CLR_FD, 0);

    /// <summary>Sets LO_FLAGS_AUTOCLEAR on a bound loop device, so that it unbinds itself once its last user closes it.</summary>
    public static int SetAutoclear(int loopFd)
    {
        var info = new LoopInfo64();
        if (ioctl(loopFd, LOOP_GET_STATUS64, &info) != 0) return -1;
        info.Flags |= LO_FLAGS_AUTOCLEAR;
        return ioctl(loopFd, LOOP_SET_STATUS64, &info);
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

    /// <summary>The device (major, minor) a path lives on, without following a trailing symlink; null if it cannot be read.</summary>
    public static (uint Major, uint Minor)? DeviceOf(string path)
    {
        const int AT_FDCWD = -100, AT_SYMLINK_NOFOLLOW = 0x100;
        byte* buf = stackalloc byte[256];
        if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, 0x7ff, buf) != 0) return null;
        return (*(uint*)(buf + 136), *(uint*)(buf + 140));
    }
}
