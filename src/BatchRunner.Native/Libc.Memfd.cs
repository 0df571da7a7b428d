using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace BatchRunner.Native;

/// <summary>Sealed in-memory copies of a program (memfd_create(2), fcntl(2) file seals), for the runtime's launcher.</summary>
internal static unsafe partial class Libc
{
    private const uint MFD_CLOEXEC = 0x1, MFD_ALLOW_SEALING = 0x2, MFD_EXEC = 0x10;
    public const int F_ADD_SEALS = 1033, F_GET_SEALS = 1034;
    public const int F_SEAL_SEAL = 0x1, F_SEAL_SHRINK = 0x2, F_SEAL_GROW = 0x4, F_SEAL_WRITE = 0x8;
    /// <summary>Every seal that makes a memfd's contents immutable for good: no write, no resize, no unsealing.</summary>
    public const int ImmutableSeals = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int memfd_create(string name, uint flags);

    /// <summary>
    /// A close-on-exec memfd holding the contents of the regular file <paramref name="path"/>, sealed with
    /// <see cref="ImmutableSeals"/>, so that nothing (this process included) can change it any more; and the status of
    /// the file it was copied from (taken from the open file, so it describes exactly what was copied). The memfd is
    /// executable: Linux 6.3+ is asked for that explicitly (MFD_EXEC), older kernels make every memfd so.
    /// </summary>
    /// <exception cref="IOException">The file could not be read, or the kernel has no sealable memfds.</exception>
    public static SafeFileHandle SealedCopy(string path, string name, out FileStatus source)
    {
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        if (!TryStat((int)file.DangerousGetHandle(), "", out source) || !source.IsRegularFile)
            throw new IOException($"{path} is not a regular file");
        var fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
        if (fd < 0 && Errno == EINVAL) fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING); // before Linux 6.3
        if (fd < 0) throw new IOException($"memfd_create failed: errno {Errno}");
        var copy = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            var buffer = new byte[1 << 20];
            long offset = 0;
            for (int n; (n = RandomAccess.Read(file, buffer, offset)) > 0; offset += n)
                RandomAccess.Write(copy, buffer.AsSpan(0, n), offset);
            if (offset != source.Size) throw new IOException($"{path} changed while it was copied ({offset} of {source.Size} bytes)");
            if (fcntl(fd, F_ADD_SEALS, ImmutableSeals) != 0) throw new IOException($"sealing the copy of {path} failed: errno {Errno}");
            return copy;
        }
        catch
        {
            copy.Dispose();
            throw;
        }
    }

    /// <summary>The seals of memfd <paramref name="fd"/> (<see cref="F_SEAL_SEAL"/> and the rest), or -1 with errno set.</summary>
    public static int Seals(int fd) => fcntl(fd, F_GET_SEALS, 0);
}
