using System.Runtime.InteropServices;

namespace BatchRunner.Native;

internal static unsafe partial class Libc
{
    private const int PR_SET_CHILD_SUBREAPER = 36;
    private const int P_PID = 1, WNOHANG = 1, WEXITED = 4, WNOWAIT = 0x01000000;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int kill(int pid, int sig);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fcntl(int fd, int cmd, int arg);

    public const int F_GETFD = 1, F_SETFD = 2, FD_CLOEXEC = 1;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int waitpid(int pid, out int status, int options);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int waitid(int idtype, int id, byte* infop, int options);

    private const long SYS_pidfd_open = 434; // same number on x86-64 and arm64 (after the syscall tables unified)
    private const int EFD_NONBLOCK = 0x800, EFD_CLOEXEC = 0x80000;

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long syscall_pidfd_open(long number, int pid, uint flags);

    /// <summary>A pidfd of <paramref name="pid"/>: close-on-exec, readable (poll) once the process has exited, also while it is
    /// an unreaped zombie. -1 with errno set where the kernel has none (ENOSYS before Linux 5.3) or the process is gone.</summary>
    public static int PidfdOpen(int pid) => (int)syscall_pidfd_open(SYS_pidfd_open, pid, 0);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int eventfd(uint initval, int flags);

    /// <summary>A non-blocking, close-on-exec eventfd (a counter that wakes a poll), or -1 with errno set.</summary>
    public static int EventFd() => eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

    /// <summary>Adds one to an eventfd's counter: a poll on it returns.</summary>
    public static void EventFdSignal(int fd)
    {
        ulong one = 1;
        write(fd, new ReadOnlySpan<byte>(&one, sizeof(ulong)), sizeof(ulong));
    }

    /// <summary>Resets an eventfd's counter (non-blocking: nothing to read is not an error).</summary>
    public static void EventFdDrain(int fd)
    {
        ulong value;
        read(fd, (byte*)&value, sizeof(ulong));
    }

    /// <summary>Makes this process the reaper of its orphaned descendants (a container's init once the
    /// runtime's `create` has exited), so their exit status can be collected with <see cref="WaitForExit"/>.</summary>
    public static void BecomeChildSubreaper()
    {
        if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
            throw new IOException($"prctl(PR_SET_CHILD_SUBREAPER) failed: errno {Errno}");
    }

    /// <summary>Blocks until child <paramref name="pid"/> has exited, without reaping it: the pid stays
    /// ours (a zombie) until <see cref="WaitForExit"/>, so a signal sent before then cannot hit another process.</summary>
    public static void WaitUntilExited(int pid)
    {
        byte* info = stackalloc byte[128];
        while (waitid(P_PID, pid, info, WEXITED | WNOWAIT) != 0)
        {
            var errno = Errno;
            if (errno == ECHILD)
                throw new IOException($"the container's init (pid {pid}) is not a child of this process: was it started by another process, or is this process not a child subreaper?");
            if (errno != EINTR) throw new IOException($"waitid({pid}) failed: errno {errno}");
        }
    }

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
            var errno = Errno;
            if (r < 0 && errno == EINTR) continue;
            throw new IOException($"waitpid({pid}) failed: errno {errno}");
        }
    }
}
