using System.Runtime.InteropServices;

namespace BatchRunner.Runtime;

/// <summary>The few libc calls the runtime needs that .NET does not expose.</summary>
internal static partial class Native
{
    public const int SIGKILL = 9;
    public const int ESRCH = 3;

    public const int O_RDONLY = 0;
    public const int O_NONBLOCK = 0x800;   // same value on x86_64 and arm64
    public const int O_NOFOLLOW = 0x20000; // x86_64; arm64 uses 0x8000
    public const int O_NOFOLLOW_ARM64 = 0x8000;
    public const int O_CLOEXEC = 0x80000;

    public const int EINTR = 4;
    public const int ECHILD = 10;
    private const int PR_SET_CHILD_SUBREAPER = 36;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int kill(int pid, int sig);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int waitpid(int pid, out int status, int options);

    /// <summary>Makes this process the reaper of its orphaned descendants (a container's init once the
    /// runtime's `create` has exited), so their exit status can be collected with <see cref="WaitForExit"/>.</summary>
    public static void BecomeChildSubreaper()
    {
        if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
            throw new IOException($"prctl(PR_SET_CHILD_SUBREAPER) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    private const int P_PID = 1;
    private const int WEXITED = 4;
    private const int WNOWAIT = 0x01000000;

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int waitid(int idtype, int id, byte* infop, int options);

    /// <summary>Blocks until child <paramref name="pid"/> has exited, without reaping it: the pid stays
    /// ours (a zombie) until <see cref="WaitForExit"/>, so a signal sent before then cannot hit another process.</summary>
    public static unsafe void WaitUntilExited(int pid)
    {
        byte* info = stackalloc byte[128];
        while (waitid(P_PID, pid, info, WEXITED | WNOWAIT) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno == ECHILD)
                throw new IOException($"the container's init (pid {pid}) is not a child of this process: was it started by another process, or is this process not a child subreaper?");
            if (errno != EINTR) throw new IOException($"waitid({pid}) failed: errno {errno}");
        }
    }

    private const int WNOHANG = 1;

    /// <summary>Reaps child <paramref name="pid"/> if it has exited; never blocks.</summary>
    public static bool TryReap(int pid) => waitpid(pid, out _, WNOHANG) == pid;

    /// <summary>Blocks until child <paramref name="pid"/> exits and reaps it: (exit code, null) or (128+N, N) for signal N.</summary>
    public static (int Code, int? Signal) WaitForExit(int pid)
    {
        while (true)
        {
            var r = waitpid(pid, out var status, 0);
            if (r == pid)
            {
                var sig = status & 0x7f;
                if (sig == 0) return ((status >> 8) & 0xff, null);
                return (128 + sig, sig);
            }
            var errno = Marshal.GetLastPInvokeError();
            if (r < 0 && errno == EINTR) continue;
            throw new IOException($"waitpid({pid}) failed: errno {errno}");
        }
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    private const int AT_EMPTY_PATH = 0x1000;
    private const uint STATX_TYPE = 0x1;
    private const ushort S_IFMT = 0xF000;
    private const ushort S_IFREG = 0x8000;

    // statx has one struct layout on every architecture (unlike struct stat): stx_mode is a u16 at byte 28.
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int statx(int dirfd, string path, int flags, uint mask, byte* buf);

    /// <summary>True when the open file <paramref name="fd"/> is a regular file (not a device, FIFO, socket or directory).</summary>
    public static unsafe bool IsRegularFile(int fd)
    {
        byte* buf = stackalloc byte[256];
        if (statx(fd, "", AT_EMPTY_PATH, STATX_TYPE, buf) != 0)
            throw new IOException($"statx failed: errno {Marshal.GetLastPInvokeError()}");
        var mode = *(ushort*)(buf + 28);
        return (mode & S_IFMT) == S_IFREG;
    }

    private struct OpenHow { public ulong Flags; public ulong Mode; public ulong Resolve; }
    private const long SYS_openat2 = 437; // x86-64 and arm64 alike
    private const ulong RESOLVE_NO_MAGICLINKS = 0x02, RESOLVE_IN_ROOT = 0x10;
    private const int O_WRONLY = 1, O_CREAT = 0x40, O_DIRECTORY = 0x10000;

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial long syscall(long number, int dirfd, byte* path, OpenHow* how, nuint size);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int mkdirat(int dirfd, string path, uint mode);

    private static unsafe int OpenInRoot(int rootFd, string path, int flags, uint mode)
    {
        var how = new OpenHow { Flags = (ulong)flags, Mode = mode, Resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
        var bytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes) return (int)syscall(SYS_openat2, rootFd, p, &how, (nuint)sizeof(OpenHow));
    }

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

    public static int NoFollowFlag =>
        RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? O_NOFOLLOW_ARM64 : O_NOFOLLOW;
}
