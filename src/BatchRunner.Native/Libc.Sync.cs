using System.Runtime.InteropServices;

namespace BatchRunner.Native;

// Flushing to stable storage: .NET's FileStream.Flush(true) fsyncs a file, but nothing in the BCL opens a
// directory or syncs a whole filesystem (Oci's content store publishes blobs, layers and records with them).
internal static partial class Libc
{
    [LibraryImport("libc", SetLastError = true)]
    public static partial int fsync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int syncfs(int fd);
}
