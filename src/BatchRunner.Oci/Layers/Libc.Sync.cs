using System.Runtime.InteropServices;

namespace BatchRunner.Oci.Layers;

// Flushing to stable storage: .NET's FileStream.Flush(true) fsyncs a file, but nothing in the BCL opens a
// directory or syncs a whole filesystem.
internal static partial class Libc
{
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fsync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int syncfs(int fd);
}
