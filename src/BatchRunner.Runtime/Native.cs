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

    [LibraryImport("libc", SetLastError = true)]
    public static partial int kill(int pid, int sig);

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

    public static int NoFollowFlag =>
        RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? O_NOFOLLOW_ARM64 : O_NOFOLLOW;
}
