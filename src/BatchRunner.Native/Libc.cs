using System.Runtime.InteropServices;

namespace BatchRunner.Native;

/// <summary>
/// The libc calls BatchRunner makes that .NET does not expose: the *at() family, openat2, statx, xattrs and
/// mounts for the layer unpacker and the snapshotter (Oci), process and file calls for the runtime driver
/// (Runtime). One place, so that a constant is defined once and right for each architecture.
/// </summary>
/// <remarks>
/// Buffers are passed as spans (pinned by the marshaller), so callers need no unsafe code. Most constants are
/// the asm-generic values x86-64 and arm64 share; <see cref="O_DIRECTORY"/> and <see cref="O_NOFOLLOW"/> are
/// not (arm64 has its own), and are chosen at run time. Every call sets errno (<see cref="Errno"/>) on failure.
/// </remarks>
internal static unsafe partial class Libc
{
    public const int O_RDONLY = 0, O_WRONLY = 1, O_CREAT = 0x40, O_EXCL = 0x80, O_NOCTTY = 0x100, O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000, O_PATH = 0x200000;

    private static readonly bool IsArm = RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm;
    /// <summary>0x10000 on x86-64, 0x4000 on arm64 (where 0x10000 means O_DIRECT).</summary>
    public static readonly int O_DIRECTORY = IsArm ? 0x4000 : 0x10000;
    /// <summary>0x20000 on x86-64, 0x8000 on arm64 (where 0x20000 means O_LARGEFILE).</summary>
    public static readonly int O_NOFOLLOW = IsArm ? 0x8000 : 0x20000;

    public const int AT_FDCWD = -100, AT_SYMLINK_NOFOLLOW = 0x100, AT_REMOVEDIR = 0x200, AT_EMPTY_PATH = 0x1000;
    public const uint S_IFMT = 0xF000, S_IFIFO = 0x1000, S_IFCHR = 0x2000, S_IFDIR = 0x4000, S_IFBLK = 0x6000,
        S_IFREG = 0x8000, S_IFLNK = 0xA000;
    public const int EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, E2BIG = 7, EBADF = 9, ECHILD = 10, EBUSY = 16, EEXIST = 17,
        EXDEV = 18, ENOTDIR = 20, EISDIR = 21, EINVAL = 22, ENOSYS = 38, ELOOP = 40, ENODATA = 61, EOPNOTSUPP = 95;
    public const int MNT_DETACH = 2, UMOUNT_NOFOLLOW = 8;
    public const int SIGKILL = 9;
    private const ulong RESOLVE_NO_MAGICLINKS = 0x02, RESOLVE_NO_SYMLINKS = 0x04, RESOLVE_BENEATH = 0x08, RESOLVE_IN_ROOT = 0x10;
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

    [StructLayout(LayoutKind.Sequential)]
    private struct OpenHow { public ulong Flags; public ulong Mode; public ulong Resolve; }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int openat(int dirfd, string path, int flags, uint mode);

    [LibraryImport("libc", SetLastError = true)]
    private static partial long syscall(long number, int dirfd, byte* path, OpenHow* how, nuint size);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    /// <summary>
    /// The text of a small file (a cgroup's or /proc's counters), read with open, read until end of file, and close: four
    /// calls, where <see cref="File.ReadAllText(string)"/> also asks the size and takes and drops an advisory lock.
    /// Null when it cannot be opened or read (gone, not permitted), never a partial text.
    /// </summary>
    public static string? ReadSmallFile(string path)
    {
        var fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return null;
        byte[]? rented = null;
        try
        {
            Span<byte> buffer = stackalloc byte[4096];
            var used = 0;
            while (true)
            {
                if (used == buffer.Length)
                {
                    var bigger = System.Buffers.ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
                    buffer.CopyTo(bigger);
                    if (rented is not null) System.Buffers.ArrayPool<byte>.Shared.Return(rented);
                    rented = bigger;
                    buffer = bigger;
                }
                var n = Read(fd, buffer[used..]);
                if (n < 0)
                {
                    if (Errno == EINTR) continue;
                    return null;
                }
                if (n == 0) return System.Text.Encoding.UTF8.GetString(buffer[..used]);
                used += (int)n;
            }
        }
        finally
        {
            close(fd);
            if (rented is not null) System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkdirat(int dirfd, string path, uint mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int symlinkat(string target, int newdirfd, string linkpath);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int linkat(int olddirfd, string oldpath, int newdirfd, string newpath, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mknodat(int dirfd, string path, uint mode, ulong dev);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chown(string path, uint uid, uint gid);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int fchownat(int dirfd, string path, uint uid, uint gid, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int fchmodat(int dirfd, string path, uint mode, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fchown(int fd, uint uid, uint gid);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fchmod(int fd, uint mode);

    /// <param name="times">Access and modification time, in that order.</param>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int utimensat(int dirfd, string path, ReadOnlySpan<Timespec> times, int flags);

    /// <param name="times">Access and modification time, in that order.</param>
    [LibraryImport("libc", SetLastError = true)]
    public static partial int futimens(int fd, ReadOnlySpan<Timespec> times);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int unlinkat(int dirfd, string path, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int fsetxattr(int fd, string name, ReadOnlySpan<byte> value, nuint size, int flags);

    public static int fsetxattr(int fd, string name, ReadOnlySpan<byte> value) => fsetxattr(fd, name, value, (nuint)value.Length, 0);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint write(int fd, ReadOnlySpan<byte> buffer, nuint count);

    /// <summary>write(2) of the whole span; returns the bytes written or -1.</summary>
    public static nint write(int fd, ReadOnlySpan<byte> buffer) => write(fd, buffer, (nuint)buffer.Length);

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

    /// <summary>openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: <paramref name="path"/> must lie beneath
    /// <paramref name="dirFd"/> and no component of it, the last included, may be a symlink (ELOOP otherwise; ".."
    /// that would leave the directory: EXDEV). Returns -1 and sets errno on failure.</summary>
    public static int OpenBeneath(int dirFd, string path, int flags)
    {
        var how = new OpenHow { Flags = (ulong)flags, Resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
        var bytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
            return (int)syscall(SYS_openat2, dirFd, p, &how, (nuint)sizeof(OpenHow));
    }

    /// <summary>openat2(2): the kernel resolves <paramref name="path"/> as if <paramref name="rootFd"/> were "/",
    /// so neither "..", absolute symlinks nor relative symlinks can leave it. Returns -1 and sets errno on failure.</summary>
    public static int OpenInRoot(int rootFd, string path, int flags, uint mode = 0)
    {
        var how = new OpenHow { Flags = (ulong)flags, Mode = mode, Resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
        var bytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
            return (int)syscall(SYS_openat2, rootFd, p, &how, (nuint)sizeof(OpenHow));
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
