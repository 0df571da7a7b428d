namespace BatchRunner.Oci.Store;

/// <summary>
/// Removes an unpacked layer tree whatever its modes: layers carry read-only directories (0555, 0000) that stop
/// even their owner from deleting the entries inside unless they are made writable first.
/// </summary>
/// <remarks>
/// Symlinks are removed, never followed: a layer's <c>etc -&gt; /etc</c> must not make the host's files
/// candidates for chmod or deletion. Directories are made u+rwx only when a first plain attempt fails, so the
/// common case (root, ordinary modes) costs one recursive delete. Files with the immutable or append-only
/// attribute (which no image layer can set) would still fail, with the path in the exception.
/// </remarks>
internal static class TreeRemover
{
    public static void Remove(string path)
    {
        try
        {
            Directory.Delete(path, recursive: true);
            return;
        }
        catch (DirectoryNotFoundException) { return; }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException) { /* make it writable below */ }

        MakeDirectoriesWritable(new DirectoryInfo(path));
        try { Directory.Delete(path, recursive: true); }
        catch (DirectoryNotFoundException) { }
    }

    private static void MakeDirectoriesWritable(DirectoryInfo root)
    {
        var pending = new Stack<DirectoryInfo>();
        pending.Push(root);
        while (pending.TryPop(out var dir))
        {
            // lstat-based: a symlink to a directory reports ReparsePoint and is skipped.
            if ((dir.Attributes & FileAttributes.ReparsePoint) != 0) continue;
            try
            {
                var mode = dir.UnixFileMode;
                const UnixFileMode rwx = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
                if ((mode & rwx) != rwx && OperatingSystem.IsLinux()) dir.UnixFileMode = mode | rwx;
                foreach (var child in dir.EnumerateDirectories("*", new EnumerationOptions { AttributesToSkip = 0, IgnoreInaccessible = false }))
                    pending.Push(child);
            }
            catch (DirectoryNotFoundException) { }
        }
    }
}
