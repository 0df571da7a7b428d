using System.Formats.Tar;
using System.Text;
using static BatchRunner.Native.Libc;

namespace BatchRunner.Oci.Layers;

/// <summary>
/// Materialises tar entries under a root directory, addressing everything relative to directory descriptors
/// so that no path string is ever resolved by the kernel from "/" (which would follow symlinks the layer planted).
/// </summary>
internal sealed class TreeWriter : IDisposable
{
    private const string WhiteoutPrefix = ".wh.";
    private const string WhiteoutMetaPrefix = ".wh..wh.";
    private const string OpaqueMarker = ".wh..wh..opq";

    private readonly LayerUnpackOptions _options;
    private readonly int _rootFd;
    private readonly DirectoryChain _dirs;
    // Directory mtimes are applied last: creating their children would otherwise bump them again.
    private readonly Dictionary<string, Timespec> _directoryTimes = new(StringComparer.Ordinal);

    public TreeWriter(string root, LayerUnpackOptions options)
    {
        _options = options;
        _rootFd = openat(AT_FDCWD, root, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (_rootFd < 0) throw OsError("open layer target " + root, root, Errno);
        _dirs = new DirectoryChain(_rootFd);
    }

    public byte[] Buffer { get; } = new byte[1 << 20];
    public long SkippedEntries { get; private set; }

    public void Write(TarEntry entry, CancellationToken ct)
    {
        if (entry.EntryType == TarEntryType.GlobalExtendedAttributes) return;
        var name = entry.Name;
        var path = SplitPath(name, name, "path");
        // The layer root itself ("./"): its attributes are the upper directory's business, not the layer's.
        if (path.Length == 0) return;

        for (var i = 0; i < path.Length - 1; i++)
            if (path[i].StartsWith(WhiteoutPrefix, StringComparison.Ordinal))
            {
                // Children of AUFS metadata directories (.wh..wh.plnk/...) and of whiteouts carry nothing overlayfs needs.
                SkippedEntries++;
                return;
            }

        var baseName = path[^1];
        var parent = path.AsSpan(0, path.Length - 1);
        if (baseName.StartsWith(WhiteoutPrefix, StringComparison.Ordinal))
        {
            WriteWhiteout(name, parent, baseName);
            return;
        }

        switch (entry.EntryType)
        {
            case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                WriteFile(entry, name, parent, baseName, ct);
                break;
            case TarEntryType.Directory:
                WriteDirectory(entry, name, path, parent, baseName);
                break;
            case TarEntryType.SymbolicLink:
                WriteSymlink(entry, name, parent, baseName);
                break;
            case TarEntryType.HardLink:
                WriteHardLink(entry, name, path, parent, baseName);
                break;
            case TarEntryType.CharacterDevice or TarEntryType.BlockDevice or TarEntryType.Fifo:
                WriteNode(entry, name, parent, baseName);
                break;
            default:
                throw new LayerUnpackException($"entry \"{name}\": unsupported tar entry type {entry.EntryType}");
        }
    }

    private void WriteFile(TarEntry entry, string name, ReadOnlySpan<string> parent, string baseName, CancellationToken ct)
    {
        if (entry is PaxTarEntry pax && pax.ExtendedAttributes.Keys.Any(k => k.StartsWith("GNU.sparse.", StringComparison.Ordinal)))
            throw new LayerUnpackException($"entry \"{name}\": GNU sparse files are not supported");
        var dirFd = _dirs.Open(parent, create: true, name);
        var flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC;
        var fd = openat(dirFd, baseName, flags, 0x180 /* 0600 until chmod */);
        if (fd < 0 && ReplaceIfExists(dirFd, baseName, name)) fd = openat(dirFd, baseName, flags, 0x180);
        if (fd < 0) throw OsError("create file", name, Errno);
        try
        {
            if (entry.DataStream is { } data)
            {
                int n;
                while ((n = data.Read(Buffer)) > 0)
                {
                    ct.ThrowIfCancellationRequested();
                    WriteAll(fd, Buffer.AsSpan(0, n), name);
                }
            }
            ApplyOwnerModeAndXattrs(fd, entry, name);
            Span<Timespec> times = stackalloc Timespec[2];
            times[0] = times[1] = Timespec.From(entry.ModificationTime);
            if (futimens(fd, times) != 0) throw OsError("set mtime", name, Errno);
        }
        finally { close(fd); }
    }

    private void WriteDirectory(TarEntry entry, string name, string[] path, ReadOnlySpan<string> parent, string baseName)
    {
        var dirFd = _dirs.Open(parent, create: true, name);
        if (mkdirat(dirFd, baseName, 0x1C0 /* 0700 until chmod */) != 0)
        {
            var errno = Errno;
            if (errno != EEXIST) throw OsError("create directory", name, errno);
            var exists = RemoveExisting(dirFd, baseName, name, keepDirectory: true);
            if (!exists && mkdirat(dirFd, baseName, 0x1C0) != 0) throw OsError("create directory", name, Errno);
        }
        var fd = openat(dirFd, baseName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        if (fd < 0) throw OsError("open directory", name, Errno);
        try { ApplyOwnerModeAndXattrs(fd, entry, name); }
        finally { close(fd); }
        _directoryTimes[string.Join('/', path)] = Timespec.From(entry.ModificationTime);
    }

    private void WriteSymlink(TarEntry entry, string name, ReadOnlySpan<string> parent, string baseName)
    {
        // The target is stored verbatim and never resolved here: it only means something inside the container.
        if (string.IsNullOrEmpty(entry.LinkName) || entry.LinkName.Contains('\0'))
            throw new LayerUnpackException($"entry \"{name}\": symlink has an empty or invalid target");
        var dirFd = _dirs.Open(parent, create: true, name);
        if (symlinkat(entry.LinkName, dirFd, baseName) != 0 &&
            (!ReplaceIfExists(dirFd, baseName, name) || symlinkat(entry.LinkName, dirFd, baseName) != 0))
            throw OsError("create symlink", name, Errno);
        ApplyOwnerAndTimesAt(dirFd, baseName, entry, name);
    }

    private void WriteHardLink(TarEntry entry, string name, string[] path, ReadOnlySpan<string> parent, string baseName)
    {
        var target = SplitPath(entry.LinkName, name, "hardlink target");
        if (target.Length == 0) throw new LayerUnpackException($"entry \"{name}\": hardlink target \"{entry.LinkName}\" is the layer root");
        if (target.AsSpan().SequenceEqual(path)) return;

        var dirFd = _dirs.Open(parent, create: true, name);
        // The target's directory is resolved by the kernel with RESOLVE_IN_ROOT, and linkat without
        // AT_SYMLINK_FOLLOW links a symlink itself, never what it points to: the new name can only share an
        // inode that this layer created.
        var targetDirFd = OpenConfined(target.AsSpan(0, target.Length - 1), name, "hardlink target");
        try
        {
            if (linkat(targetDirFd, target[^1], dirFd, baseName, 0) != 0 &&
                (!ReplaceIfExists(dirFd, baseName, name) || linkat(targetDirFd, target[^1], dirFd, baseName, 0) != 0))
            {
                var errno = Errno;
                throw errno switch
                {
                    ENOENT => new LayerUnpackException($"entry \"{name}\": hardlink target \"{entry.LinkName}\" does not exist in the layer"),
                    EPERM => new LayerUnpackException($"entry \"{name}\": hardlink target \"{entry.LinkName}\" is a directory"),
                    _ => OsError("create hardlink", name, errno),
                };
            }
        }
        finally { close(targetDirFd); }
    }

    private void WriteNode(TarEntry entry, string name, ReadOnlySpan<string> parent, string baseName)
    {
        uint type;
        ulong dev = 0;
        switch (entry.EntryType)
        {
            case TarEntryType.Fifo:
                type = S_IFIFO;
                break;
            default:
                if (!_options.AllowDevices) { SkippedEntries++; return; }
                type = entry.EntryType == TarEntryType.CharacterDevice ? S_IFCHR : S_IFBLK;
                var posix = (PosixTarEntry)entry;
                dev = MakeDev((uint)posix.DeviceMajor, (uint)posix.DeviceMinor);
                break;
        }
        var dirFd = _dirs.Open(parent, create: true, name);
        if (mknodat(dirFd, baseName, type | 0x180, dev) != 0 &&
            (!ReplaceIfExists(dirFd, baseName, name) || mknodat(dirFd, baseName, type | 0x180, dev) != 0))
            throw OsError("create " + entry.EntryType, name, Errno);
        if (_options.PreserveOwnership && fchownat(dirFd, baseName, (uint)entry.Uid, (uint)entry.Gid, AT_SYMLINK_NOFOLLOW) != 0)
            throw OsError("chown", name, Errno);
        // fchmodat follows symlinks, but the name was created as a node just above by this single writer.
        if (fchmodat(dirFd, baseName, (uint)entry.Mode, 0) != 0) throw OsError("chmod", name, Errno);
        SetTimesAt(dirFd, baseName, Timespec.From(entry.ModificationTime), name);
    }

    /// <summary>
    /// OCI whiteouts become what overlayfs reads: ".wh.NAME" a 0:0 character device NAME, ".wh..wh..opq" the
    /// trusted.overlay.opaque=y xattr on its directory. Overlay xattrs coming from the layer itself are never set
    /// (see <see cref="IsSettableXattr"/>), so these are their only source.
    /// </summary>
    private void WriteWhiteout(string name, ReadOnlySpan<string> parent, string baseName)
    {
        if (baseName == OpaqueMarker)
        {
            var dirFd = _dirs.Open(parent, create: true, name);
            if (fsetxattr(dirFd, "trusted.overlay.opaque", "y"u8) != 0)
                throw OsError("mark directory opaque (trusted.overlay.opaque; the filesystem must support trusted xattrs)", name, Errno);
            return;
        }
        if (baseName.StartsWith(WhiteoutMetaPrefix, StringComparison.Ordinal))
        {
            SkippedEntries++;
            return;
        }
        var hidden = baseName[WhiteoutPrefix.Length..];
        if (hidden is "" or "." or "..")
            throw new LayerUnpackException($"entry \"{name}\": whiteout names no file");
        var fd = _dirs.Open(parent, create: true, name);
        if (mknodat(fd, hidden, S_IFCHR, 0) != 0 && (!ReplaceIfExists(fd, hidden, name) || mknodat(fd, hidden, S_IFCHR, 0) != 0))
            throw OsError("create whiteout", name, Errno);
    }

    /// <summary>
    /// After a create that failed: when it failed because the name exists (EEXIST), removes what is there and returns
    /// true so the caller creates again; otherwise false with errno kept. Creating first and looking only when
    /// something is in the way saves a stat per entry: in a layer almost every name is new.
    /// </summary>
    private static bool ReplaceIfExists(int dirFd, string baseName, string name)
    {
        // Reading errno changes nothing: a false return leaves it for the caller's error message.
        if (Errno != EEXIST) return false;
        RemoveExisting(dirFd, baseName, name, keepDirectory: false);
        return true;
    }

    /// <summary>Later entries replace earlier ones, as tar(1) does; a directory over a directory merges.</summary>
    /// <returns>Whether a directory was kept.</returns>
    private static bool RemoveExisting(int dirFd, string baseName, string name, bool keepDirectory)
    {
        if (!TryStat(dirFd, baseName, out var st))
        {
            var errno = Errno;
            return errno == ENOENT ? false : throw OsError("stat", name, errno);
        }
        if (st.IsDirectory)
        {
            if (keepDirectory) return true;
            // The magic link names the directory we hold, so the recursive delete stays under it; .NET's
            // recursive delete unlinks symlinks rather than following them.
            Directory.Delete($"/proc/self/fd/{dirFd}/{baseName}", recursive: true);
            return false;
        }
        if (unlinkat(dirFd, baseName, 0) != 0) throw OsError("replace", name, Errno);
        return false;
    }

    private void ApplyOwnerModeAndXattrs(int fd, TarEntry entry, string name)
    {
        // Order matters: chown clears setuid/setgid and file capabilities, so mode and xattrs come after it.
        if (_options.PreserveOwnership && fchown(fd, (uint)entry.Uid, (uint)entry.Gid) != 0) throw OsError("chown", name, Errno);
        if (fchmod(fd, (uint)entry.Mode) != 0) throw OsError("chmod", name, Errno);
        if (entry is PaxTarEntry pax) ApplyXattrs(fd, pax, name);
    }

    private void ApplyXattrs(int fd, PaxTarEntry pax, string name)
    {
        foreach (var (key, text) in pax.ExtendedAttributes)
        {
            string xattr;
            byte[] value;
            if (key.StartsWith("SCHILY.xattr.", StringComparison.Ordinal))
            {
                xattr = key["SCHILY.xattr.".Length..];
                // System.Formats.Tar hands PAX values over as UTF-8 text; a binary value that was not valid
                // UTF-8 came back with U+FFFD and cannot be restored byte for byte, so it is not set at all.
                if (text.Contains('\uFFFD')) { SkippedEntries++; continue; }
                value = Encoding.UTF8.GetBytes(text);
            }
            else if (key.StartsWith("LIBARCHIVE.xattr.", StringComparison.Ordinal))
            {
                xattr = Uri.UnescapeDataString(key["LIBARCHIVE.xattr.".Length..]);
                try { value = Convert.FromBase64String(PadBase64(text)); }
                catch (FormatException) { SkippedEntries++; continue; }
            }
            else continue;

            if (!IsSettableXattr(xattr)) { SkippedEntries++; continue; }
            if (fsetxattr(fd, xattr, value) == 0) continue;
            var errno = Errno;
            if (errno == EOPNOTSUPP) { SkippedEntries++; continue; }
            throw OsError($"set xattr {xattr}", name, errno);
        }
    }

    /// <summary>
    /// user.* and file capabilities are what images legitimately carry. trusted.* (overlay metadata such as
    /// redirects and opaque markers) and LSM labels from an untrusted layer could change how the stack is read.
    /// </summary>
    private static bool IsSettableXattr(string xattr) =>
        xattr.StartsWith("user.", StringComparison.Ordinal) || xattr == "security.capability";

    private static string PadBase64(string s) => (s.Length % 4) switch { 2 => s + "==", 3 => s + "=", _ => s };

    private void ApplyOwnerAndTimesAt(int dirFd, string baseName, TarEntry entry, string name)
    {
        if (_options.PreserveOwnership && fchownat(dirFd, baseName, (uint)entry.Uid, (uint)entry.Gid, AT_SYMLINK_NOFOLLOW) != 0)
            throw OsError("chown", name, Errno);
        SetTimesAt(dirFd, baseName, Timespec.From(entry.ModificationTime), name);
    }

    private static void SetTimesAt(int dirFd, string baseName, Timespec mtime, string name)
    {
        // atime is set to mtime: layers rarely carry it and nothing in a container relies on it.
        Span<Timespec> times = stackalloc Timespec[2];
        times[0] = times[1] = mtime;
        if (utimensat(dirFd, baseName, times, AT_SYMLINK_NOFOLLOW) != 0) throw OsError("set mtime", name, Errno);
    }

    public void FinishDirectoryTimes()
    {
        foreach (var (joined, mtime) in _directoryTimes)
        {
            var path = joined.Split('/');
            var dirFd = _dirs.Open(path.AsSpan(0, path.Length - 1), create: false, joined);
            // A directory that a later entry replaced is gone or is something else now.
            if (dirFd < 0 || !TryStat(dirFd, path[^1], out var st) || !st.IsDirectory) continue;
            SetTimesAt(dirFd, path[^1], mtime, joined);
        }
    }

    private static void WriteAll(int fd, ReadOnlySpan<byte> data, string name)
    {
        var done = 0;
        while (done < data.Length)
        {
            var n = write(fd, data[done..]);
            if (n < 0)
            {
                var errno = Errno;
                if (errno == EINTR) continue;
                throw OsError("write", name, errno);
            }
            done += (int)n;
        }
    }

    /// <summary>Opens a directory of the layer for a one-off use (hardlink targets), resolved inside the root.</summary>
    private int OpenConfined(ReadOnlySpan<string> dir, string name, string role)
    {
        if (dir.Length == 0)
        {
            var dup = openat(_rootFd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
            return dup >= 0 ? dup : throw OsError("open layer root", name, Errno);
        }
        var joined = string.Join('/', dir.ToArray());
        var fd = OpenInRoot(_rootFd, joined, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) return fd;
        var errno = Errno;
        if (errno == ENOSYS)
        {
            // Kernels before 5.6 lack openat2: walk without following anything instead.
            fd = DirectoryChain.WalkNoFollow(_rootFd, dir, out errno);
            if (fd >= 0) return fd;
        }
        throw errno is ENOENT or ENOTDIR or ELOOP
            ? new LayerUnpackException($"entry \"{name}\": {role} directory \"{joined}\" does not exist in the layer")
            : OsError($"open {role} directory", name, errno);
    }

    /// <summary>
    /// Splits a tar path into components, dropping "", "." and a leading "/" and applying ".." lexically.
    /// A path that climbs above the root is refused: no legitimate layer contains one.
    /// </summary>
    internal static string[] SplitPath(string raw, string entryName, string role)
    {
        if (raw.Contains('\0')) throw new LayerUnpackException($"entry \"{entryName}\": {role} contains a NUL byte");
        var parts = new List<string>();
        foreach (var part in raw.Split('/'))
        {
            if (part is "" or ".") continue;
            if (part == "..")
            {
                if (parts.Count == 0)
                    throw new LayerUnpackException($"entry \"{entryName}\": {role} \"{raw}\" points outside the layer root");
                parts.RemoveAt(parts.Count - 1);
                continue;
            }
            parts.Add(part);
        }
        return [.. parts];
    }

    internal static IOException OsError(string operation, string name, int errno) =>
        new($"unpacking layer entry \"{name}\": {operation} failed: {ErrorText(errno)} (errno {errno})");

    public void Dispose()
    {
        _dirs.Dispose();
        close(_rootFd);
    }
}
