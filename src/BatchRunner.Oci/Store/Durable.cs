using static BatchRunner.Native.Libc;

namespace BatchRunner.Oci.Store;

/// <summary>
/// Writes that survive a crash or power loss in the order the store publishes them: content reaches the disk
/// before the rename that makes it visible under its final name, and the rename itself before the store reports
/// success.
/// </summary>
/// <remarks>
/// Without the flush before the rename, a journalling filesystem may commit the rename (metadata) before the data:
/// after a power loss the final name would exist with a zero-length or partly written file, which a
/// digest-addressed store would then serve as if it were verified. Flushing the parent directory after the rename
/// makes the new name itself durable (a pull that returned must not be lost).
/// </remarks>
public static class Durable
{
    /// <summary>fsync(2) of a directory: the entries created, renamed or removed in it are on disk.</summary>
    public static void FlushDirectory(string dir) => OnDirectory(dir, fsync, "fsync of directory");

    /// <summary>
    /// syncfs(2) of the filesystem holding <paramref name="path"/>: every file written there so far is on disk.
    /// One call for a whole unpacked layer instead of an fsync per file (a layer has thousands; each fsync
    /// forces its own journal commit).
    /// </summary>
    public static void SyncFileSystemOf(string path) => OnDirectory(path, syncfs, "syncfs of the filesystem holding");

    private static void OnDirectory(string dir, Func<int, int> call, string what)
    {
        var fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) throw new IOException($"{what} {dir} failed: cannot open it: {ErrorText(Errno)}");
        try
        {
            if (call(fd) != 0) throw new IOException($"{what} {dir} failed: {ErrorText(Errno)}");
        }
        finally { close(fd); }
    }

    /// <summary>Renames <paramref name="from"/> (already flushed) over <paramref name="to"/> and flushes the directory of <paramref name="to"/>.</summary>
    public static void Publish(string from, string to)
    {
        File.Move(from, to, overwrite: true);
        FlushDirectory(Path.GetDirectoryName(to)!);
    }

    /// <summary>Writes <paramref name="content"/> to <paramref name="tempPath"/>, flushes it, then publishes it as <paramref name="path"/>.</summary>
    public static async Task WriteFileAsync(string tempPath, string path, ReadOnlyMemory<byte> content, CancellationToken ct)
    {
        try
        {
            await using (var file = new FileStream(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 4096, FileOptions.Asynchronous))
            {
                await file.WriteAsync(content, ct);
                file.Flush(flushToDisk: true);
            }
            Publish(tempPath, path);
        }
        finally
        {
            File.Delete(tempPath);
        }
    }

    /// <summary>The synchronous <see cref="WriteFileAsync"/>.</summary>
    public static void WriteFile(string tempPath, string path, ReadOnlySpan<byte> content)
    {
        try
        {
            using (var file = new FileStream(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 4096))
            {
                file.Write(content);
                file.Flush(flushToDisk: true);
            }
            Publish(tempPath, path);
        }
        finally
        {
            File.Delete(tempPath);
        }
    }
}
