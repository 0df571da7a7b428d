using static BatchRunner.Native.Libc;

namespace BatchRunner.Oci.Layers;

/// <summary>
/// Open descriptors for the directories from the layer root down to the last parent used. Tar entries come
/// grouped by directory, so most entries reuse the whole chain and a new sibling costs one openat.
/// </summary>
/// <remarks>
/// Each component is opened with O_NOFOLLOW|O_DIRECTORY, so a symlink planted by the layer is never traversed
/// by accident. When the layer really writes through one of its own symlinks (tar(1) and Docker follow those),
/// the kernel resolves the parent with openat2(RESOLVE_IN_ROOT): the symlink is honoured as if the layer root
/// were "/", so "/etc" or "../../.." still land inside the root. Such a parent must already exist.
/// A descriptor returned by <see cref="Open"/> is borrowed: valid until the next call.
/// </remarks>
internal sealed class DirectoryChain(int rootFd) : IDisposable
{
    private static readonly int DirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    private readonly List<string> _names = [];
    private readonly List<int> _fds = [];
    private int _detachedFd = -1;

    /// <returns>The directory's descriptor, or -1 when <paramref name="create"/> is false and it does not exist.</returns>
    public int Open(ReadOnlySpan<string> dir, bool create, string entryName)
    {
        CloseDetached();
        var common = 0;
        while (common < _names.Count && common < dir.Length && _names[common] == dir[common]) common++;
        Truncate(common);

        var fd = common == 0 ? rootFd : _fds[common - 1];
        for (var i = common; i < dir.Length; i++)
        {
            var child = openat(fd, dir[i], DirFlags, 0);
            if (child < 0 && Errno == ENOENT)
            {
                if (!create) return -1;
                // Parents a layer omits are created as tar(1) does; mode and owner come if the entry shows up later.
                if (mkdirat(fd, dir[i], 0x1ED /* 0755 */) != 0)
                    throw TreeWriter.OsError("create parent directory " + Join(dir, i + 1), entryName, Errno);
                // mkdirat applies the process umask; the layer's content must not depend on it.
                if (fchmodat(fd, dir[i], 0x1ED, 0) != 0)
                    throw TreeWriter.OsError("chmod parent directory " + Join(dir, i + 1), entryName, Errno);
                child = openat(fd, dir[i], DirFlags, 0);
            }
            if (child < 0)
            {
                var errno = Errno;
                if (errno is not (ELOOP or ENOTDIR)) throw TreeWriter.OsError("open directory " + Join(dir, i + 1), entryName, errno);
                return OpenThroughSymlink(dir, i, create, entryName);
            }
            _names.Add(dir[i]);
            _fds.Add(child);
            fd = child;
        }
        return fd;
    }

    private int OpenThroughSymlink(ReadOnlySpan<string> dir, int failedAt, bool create, string entryName)
    {
        var parentFd = failedAt == 0 ? rootFd : _fds[failedAt - 1];
        var component = Join(dir, failedAt + 1);
        if (!TryStat(parentFd, dir[failedAt], out var st) || st.Type != S_IFLNK)
            throw new LayerUnpackException($"entry \"{entryName}\": parent \"{component}\" is not a directory");
        var joined = Join(dir, dir.Length);
        var fd = OpenInRoot(rootFd, joined, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0)
        {
            _detachedFd = fd;
            return fd;
        }
        var errno = Errno;
        if (errno == ENOENT && !create) return -1;
        throw errno switch
        {
            ENOSYS => new LayerUnpackException($"entry \"{entryName}\": parent \"{component}\" is a symlink and this kernel cannot resolve it safely (no openat2)"),
            ENOENT or ENOTDIR or ELOOP => new LayerUnpackException(
                $"entry \"{entryName}\": parent \"{joined}\" goes through the layer's symlink \"{component}\" to a directory that does not exist inside the layer"),
            _ => TreeWriter.OsError("open directory " + joined, entryName, errno),
        };
    }

    /// <summary>An owned descriptor for <paramref name="dir"/>, opened component by component without following symlinks.</summary>
    public static int WalkNoFollow(int rootFd, ReadOnlySpan<string> dir, out int errno)
    {
        errno = 0;
        var fd = rootFd;
        for (var i = 0; i < dir.Length; i++)
        {
            var child = openat(fd, dir[i], DirFlags, 0);
            if (child < 0) errno = Errno;
            if (fd != rootFd) close(fd);
            if (child < 0) return -1;
            fd = child;
        }
        return fd == rootFd ? openat(rootFd, ".", DirFlags, 0) : fd;
    }

    private static string Join(ReadOnlySpan<string> dir, int count) => string.Join('/', dir[..count].ToArray());

    private void Truncate(int keep)
    {
        for (var i = _fds.Count - 1; i >= keep; i--) close(_fds[i]);
        _fds.RemoveRange(keep, _fds.Count - keep);
        _names.RemoveRange(keep, _names.Count - keep);
    }

    private void CloseDetached()
    {
        if (_detachedFd >= 0) close(_detachedFd);
        _detachedFd = -1;
    }

    public void Dispose()
    {
        CloseDetached();
        Truncate(0);
    }
}
