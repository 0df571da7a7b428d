using System.Runtime.InteropServices;

namespace BatchRunner.Native;

/// <summary>FIFOs and non-blocking reads for the log relay (Runtime's LogRelay).</summary>
internal static unsafe partial class Libc
{
    public const int EAGAIN = 11;
    public const short POLLIN = 0x1, POLLERR = 0x8, POLLHUP = 0x10, POLLNVAL = 0x20;
    private const int F_SETPIPE_SZ = 1031;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkfifo(string path, uint mode);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int poll(PollFd* fds, nuint count, int timeoutMs);

    /// <summary>poll(2) over <paramref name="fds"/>; returns the number of ready entries, 0 on timeout, -1 with errno set.</summary>
    public static int Poll(Span<PollFd> fds, int timeoutMs)
    {
        fixed (PollFd* p = fds) return poll(p, (nuint)fds.Length, timeoutMs);
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint read(int fd, byte* buffer, nuint count);

    /// <summary>read(2) into <paramref name="buffer"/>; returns the bytes read, 0 at end of file, -1 with errno set.</summary>
    public static nint Read(int fd, Span<byte> buffer)
    {
        fixed (byte* p = buffer) return read(fd, p, (nuint)buffer.Length);
    }

    /// <summary>Sets a pipe's capacity (rounded up to pages by the kernel); returns the new size or -1.</summary>
    public static int SetPipeSize(int fd, int bytes) => fcntl(fd, F_SETPIPE_SZ, bytes);
}
