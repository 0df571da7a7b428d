using Microsoft.Win32.SafeHandles;
using static BatchRunner.Native.Libc;

namespace BatchRunner.Runtime.Disk;

/// <summary>
/// Moves what a job left in its /outputs (on its volume) to the host's job directory, once the job's processes are
/// gone, keeping only what is safe for the host to hold and what the job paid for.
/// </summary>
/// <remarks>
/// Guarantees:
/// <list type="bullet">
/// <item>Only directories and regular files arrive. Setuid and setgid bits are removed (and named in the report);
/// symlinks, device nodes, FIFOs and sockets are not copied (and named). Everything is created fresh by this process
/// below the target with openat/mkdirat on directory descriptors, O_EXCL and O_NOFOLLOW, so no name the job chose can
/// lead elsewhere.</item>
/// <item>The host holds no more than the job's volume held: holes stay holes (a 1 TiB sparse file stays sparse), hard
/// links stay links (a thousand links to one file are one file), and source blocks are punched out as they are copied,
/// <paramref name="releaseFreedSpace"/> handing them back to the host every <see cref="ReleaseEveryBytes"/>: moving
/// a volume's worth of outputs needs about that much more, not the volume's size again.</item>
/// <item>Owners, permissions (less setuid/setgid) and modification times are kept, so outputs look as they did in
/// the job; extended attributes are not. Directories deeper than <see cref="MaxDepth"/> are not copied (and named).</item>
/// </list>
/// The source must not change while this runs: its container has exited and been deleted.
/// </remarks>
public static class OutputsTransfer
{
    public const int MaxDepth = 128;
    public const long ReleaseEveryBytes = 64L << 20;
    private const int BufferBytes = 1 << 20;

    /// <param name="source">The job's outputs directory on its volume (emptied by the move).</param>
    /// <param name="target">Where they go: a directory that does not exist yet, or is empty.</param>
    /// <param name="releaseFreedSpace">Returns the blocks punched out of the source to the host (<see cref="IDiskVolume.ReleaseFreedSpace"/>).</param>
    /// <exception cref="IOException">Reading or writing failed (the host's disk is full, say); what was moved so far stays.</exception>
    public static OutputsTransferReport Move(string source, string target, Action? releaseFreedSpace = null, CancellationToken ct = default)
    {
        var run = new Transfer(releaseFreedSpace, ct);
        var src = openat(AT_FDCWD, source, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        if (src < 0)
        {
            if (Errno != ENOENT) throw new IOException($"cannot open outputs {source}: {Describe(Errno)}");
            Directory.CreateDirectory(target);
            return run.Report();
        }
        try
        {
            if (mkdirat(AT_FDCWD, target, 0b111_000_000) != 0 && Errno != EEXIST)
                throw new IOException($"cannot create {target}: {Describe(Errno)}");
            var dst = openat(AT_FDCWD, target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
            if (dst < 0) throw new IOException($"cannot open {target}: {Describe(Errno)}");
            try
            {
                if (Directory.EnumerateFileSystemEntries(FdPath(dst)).Any()) throw new IOException($"outputs target {target} is not empty");
                run.Root = dst;
                run.CopyDirectory(src, dst, "", depth: 0);
                if (!TryStat(src, "", out var st)) throw new IOException($"cannot stat outputs {source}: {Describe(Errno)}");
                run.ApplyAttributes(dst, st, "");
            }
            finally { close(dst); }
        }
        finally
        {
            close(src);
            run.ReturnBuffer();
        }
        run.ReleaseNow();
        return run.Report();
    }

    private static string FdPath(int fd) => $"/proc/self/fd/{fd}";

    private sealed class Transfer(Action? releaseFreedSpace, CancellationToken ct)
    {
        private readonly List<string> _stripped = [];
        private readonly List<NotKeptEntry> _notKept = [];
        private readonly Dictionary<ulong, string> _linked = [];
        // Rented when the first file's data is copied, returned by Move: most jobs write no outputs, and a new 1 MiB buffer
        // per job was a large-object heap allocation each time.
        private byte[]? _rented;
        private byte[] Buffer => _rented ??= System.Buffers.ArrayPool<byte>.Shared.Rent(BufferBytes);

        public void ReturnBuffer()
        {
            if (_rented is { } b) System.Buffers.ArrayPool<byte>.Shared.Return(b);
            _rented = null;
        }
        private long _files, _bytes, _punchedSinceRelease;
        public int Root { get; set; } = -1;

        public OutputsTransferReport Report() => new(_files, _bytes, _stripped, _notKept);

        public void CopyDirectory(int src, int dst, string prefix, int depth)
        {
            // Names only (never followed): opendir through the descriptor's /proc link reads the directory we hold.
            foreach (var name in Directory.EnumerateFileSystemEntries(FdPath(src)).Select(Path.GetFileName).OrderBy(n => n, StringComparer.Ordinal))
            {
                ct.ThrowIfCancellationRequested();
                var rel = prefix + name!;
                if (!TryStat(src, name!, out var st)) { _notKept.Add(new(rel, "unreadable")); continue; }
                switch (st.Type)
                {
                    case S_IFDIR when depth + 1 >= MaxDepth:
                        _notKept.Add(new(rel, $"directory deeper than {MaxDepth} levels"));
                        break;
                    case S_IFDIR:
                        CopySubdirectory(src, dst, name!, rel, st, depth);
                        break;
                    case S_IFREG:
                        CopyFile(src, dst, name!, rel, st);
                        break;
                    default:
                        _notKept.Add(new(rel, KindOf(st.Type)));
                        break;
                }
            }
        }

        private void CopySubdirectory(int src, int dst, string name, string rel, FileStatus st, int depth)
        {
            if (mkdirat(dst, name, 0b111_000_000) != 0) throw new IOException($"cannot create outputs directory {rel}: {Describe(Errno)}");
            var s = openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
            if (s < 0) { _notKept.Add(new(rel, "unreadable")); return; }
            try
            {
                var d = openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
                if (d < 0) throw new IOException($"cannot open outputs directory {rel}: {Describe(Errno)}");
                try
                {
                    CopyDirectory(s, d, rel + "/", depth + 1);
                    // Last: creating the children would otherwise bump the directory's mtime again.
                    ApplyAttributes(d, st, rel);
                }
                finally { close(d); }
            }
            finally { close(s); }
        }

        private void CopyFile(int srcDir, int dstDir, string name, string rel, FileStatus st)
        {
            if (st.Nlink > 1 && _linked.TryGetValue(st.Inode, out var first))
            {
                // Paths under the target are ours (no symlinks there), so resolving one from the root is safe.
                if (linkat(Root, first, dstDir, name, 0) == 0) { _files++; return; }
                _notKept.Add(new(rel, $"hard link to {first} ({Describe(Errno)})"));
                return;
            }
            // O_NONBLOCK: should the entry have become a FIFO after the stat, opening it must not wait for a writer.
            // Read-write to punch copied blocks out; read-only still copies (the volume is then freed at the end).
            var s = openat(srcDir, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0);
            if (s < 0) s = openat(srcDir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0);
            if (s < 0) { _notKept.Add(new(rel, "unreadable")); return; }
            using var source = new SafeFileHandle(s, ownsHandle: true);
            if (!TryStat(s, "", out var opened) || opened.Type != S_IFREG || opened.Inode != st.Inode)
            {
                _notKept.Add(new(rel, KindOf(opened.Type)));
                return;
            }
            var d = openat(dstDir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0b110_000_000);
            if (d < 0) throw new IOException($"cannot create output {rel}: {Describe(Errno)}");
            using var target = new SafeFileHandle(d, ownsHandle: true);
            CopyData(s, d, opened.Size, rel);
            if (ftruncate(d, opened.Size) != 0) throw new IOException($"cannot size output {rel}: {Describe(Errno)}");
            ApplyAttributes(d, opened, rel);
            _files++;
            if (st.Nlink > 1) _linked[st.Inode] = rel;
        }

        /// <summary>Copies the data extents only (SEEK_DATA/SEEK_HOLE), punching each out of the source once copied.</summary>
        private void CopyData(int src, int dst, long size, string rel)
        {
            foreach (var (data, hole) in SparseFile.DataRanges(src, size))
            {
                for (var at = data; at < hole;)
                {
                    ct.ThrowIfCancellationRequested();
                    var read = pread(src, Buffer.AsSpan(0, (int)Math.Min(BufferBytes, hole - at)), at);
                    if (read < 0) throw new IOException($"cannot read output {rel}: {Describe(Errno)}");
                    if (read == 0) break;
                    for (var done = 0; done < read;)
                    {
                        var wrote = pwrite(dst, Buffer.AsSpan(done, (int)read - done), at + done);
                        if (wrote < 0) throw new IOException($"cannot write output {rel}: {Describe(Errno)}");
                        done += (int)wrote;
                    }
                    PunchOut(src, at, read);
                    at += read;
                    _bytes += read;
                }
            }
        }

        private void PunchOut(int src, long offset, long length)
        {
            // Best effort: a filesystem without hole punching only means the volume is freed at the end instead.
            if (PunchHole(src, offset, length) != 0) return;
            _punchedSinceRelease += length;
            if (_punchedSinceRelease >= ReleaseEveryBytes) ReleaseNow();
        }

        public void ReleaseNow()
        {
            if (_punchedSinceRelease == 0) return;
            _punchedSinceRelease = 0;
            releaseFreedSpace?.Invoke();
        }

        public void ApplyAttributes(int fd, FileStatus st, string rel)
        {
            const uint setuidSetgid = 0b110_000_000_000;
            var mode = st.Mode & 0b111_111_111_111 & ~setuidSetgid;
            if ((st.Mode & setuidSetgid) != 0) _stripped.Add(rel.Length == 0 ? "." : rel);
            // Owner first: chown clears setuid/setgid, and must not undo the mode set after it.
            if (fchown(fd, st.Uid, st.Gid) != 0) throw new IOException($"cannot chown output {rel}: {Describe(Errno)}");
            if (fchmod(fd, mode) != 0) throw new IOException($"cannot chmod output {rel}: {Describe(Errno)}");
            SetTimes(fd, st.MtimeSeconds, st.MtimeNanoseconds);
        }

        private static string KindOf(uint type) => type switch
        {
            S_IFLNK => "symbolic link",
            S_IFCHR => "character device",
            S_IFBLK => "block device",
            S_IFIFO => "FIFO",
            S_IFSOCK => "socket",
            _ => "not a regular file",
        };
    }
}

/// <summary>An entry of /outputs that was not copied to the host, and what it was.</summary>
public sealed record NotKeptEntry(string Path, string Kind);

/// <summary>What <see cref="OutputsTransfer.Move"/> did.</summary>
public sealed record OutputsTransferReport(long Files, long Bytes, IReadOnlyList<string> SetuidStripped, IReadOnlyList<NotKeptEntry> NotKept)
{
    private const int Named = 5;

    /// <summary>One sentence for the job's message, or null when everything arrived as it was.</summary>
    public string? Describe()
    {
        var parts = new List<string>();
        if (SetuidStripped.Count > 0) parts.Add($"setuid/setgid bits removed from {List(SetuidStripped)}");
        if (NotKept.Count > 0) parts.Add($"not kept (only regular files and directories are): {List(NotKept.Select(n => $"{n.Path} ({n.Kind})").ToList())}");
        return parts.Count == 0 ? null : "outputs: " + string.Join("; ", parts);
    }

    private static string List(IReadOnlyList<string> items) =>
        string.Join(", ", items.Take(Named)) + (items.Count > Named ? $" and {items.Count - Named} more" : "");
}
