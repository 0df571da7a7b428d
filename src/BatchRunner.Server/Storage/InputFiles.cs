using SharpCompress.Archives;
using SharpCompress.Common;
using SharpCompress.Readers;

namespace BatchRunner.Server.Storage;

/// <summary>A submission's input could not be accepted; <see cref="TooLarge"/> distinguishes 413 from 400.</summary>
public sealed class InputRejectedException(string field, string message, bool tooLarge = false) : Exception(message)
{
    public string Field { get; } = field;
    public bool TooLarge { get; } = tooLarge;
}

/// <summary>
/// Receives one submission's input files into a private staging directory: plain files by their
/// (sanitised) name, archives unpacked. Nothing outside the staging directory is ever written: entry
/// names are checked (relative, no "..", no control characters), files are created new (a name twice is
/// an error, never an overwrite), symbolic links are made last and only when they point inside the
/// inputs (so nothing is written through one), and bytes and entries are counted against the limits.
/// Disposal removes the staging directory unless <see cref="CommitTo"/> moved it into place.
/// </summary>
public sealed class InputFiles : IDisposable
{
    private readonly long _maxBytes;
    private readonly int _maxEntries;
    private long _bytes;
    private int _entries;

    public InputFiles(string stagingRoot, long maxBytes, int maxEntries)
    {
        Directory.CreateDirectory(stagingRoot);
        Dir = Path.Combine(stagingRoot, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Dir);
        File.SetUnixFileMode(Dir, (UnixFileMode)0b111_101_101);
        _maxBytes = maxBytes;
        _maxEntries = maxEntries;
    }

    /// <summary>The staging directory (the future /inputs).</summary>
    public string Dir { get; private set; }
    public bool IsEmpty => _entries == 0;
    public bool Committed { get; private set; }

    /// <summary>Stores one uploaded file under its base name.</summary>
    public async Task AddFileAsync(string field, string? fileName, Stream content, CancellationToken ct)
    {
        var name = Path.GetFileName((fileName ?? "").Replace('\\', '/'));
        if (WhyBadName(name) is { } why) throw new InputRejectedException(field, $"file name \"{fileName}\": {why}");
        Count(field);
        await WriteNewFileAsync(field, Path.Combine(Dir, name), content, ct);
    }

    /// <summary>Unpacks one archive (zip, tar, tar.gz, tar.xz, 7z) into the inputs; on any bad entry the
    /// whole submission is refused (the caller disposes, removing everything staged).</summary>
    public async Task AddArchiveAsync(string field, string? fileName, Stream content, CancellationToken ct)
    {
        // zip and 7z need random access: spool to a file in the staging root (counted against the limit).
        var spool = Path.Combine(Path.GetDirectoryName(Dir)!, Path.GetFileName(Dir) + ".upload");
        try
        {
            await using (var f = new FileStream(spool, FileMode.CreateNew, FileAccess.Write))
                await CopyLimitedAsync(field, content, f, ct, countTowardsInputs: false);
            try
            {
                await using var input = File.OpenRead(spool);
                await UnpackAsync(field, fileName ?? "", input, ct);
            }
            catch (Exception e) when (e is not InputRejectedException and not OperationCanceledException)
            {
                throw new InputRejectedException(field, $"archive \"{fileName}\" could not be read: {e.Message}");
            }
        }
        finally
        {
            File.Delete(spool);
        }
    }

    private enum ArchiveKind { Unknown, Zip, SevenZip, Tar, TarGz, TarXz }

    /// <summary>By content (magic bytes), not by name: a misnamed archive is still read right.</summary>
    private static ArchiveKind Sniff(FileStream input)
    {
        var head = new byte[512];
        var n = input.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        input.Position = 0;
        ReadOnlySpan<byte> h = head.AsSpan(0, n);
        if (h.StartsWith("PK\x03\x04"u8) || h.StartsWith("PK\x05\x06"u8)) return ArchiveKind.Zip;
        if (h.StartsWith((ReadOnlySpan<byte>)[0x37, 0x7A, 0xBC, 0xAF, 0x27, 0x1C])) return ArchiveKind.SevenZip;
        if (h.StartsWith((ReadOnlySpan<byte>)[0x1F, 0x8B])) return ArchiveKind.TarGz;
        if (h.StartsWith((ReadOnlySpan<byte>)[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00])) return ArchiveKind.TarXz;
        if (n >= 262 && h.Slice(257, 5).SequenceEqual("ustar"u8)) return ArchiveKind.Tar;
        return ArchiveKind.Unknown;
    }

    private async Task UnpackAsync(string field, string fileName, FileStream input, CancellationToken ct)
    {
        var links = new List<(string Path, string Target, string Key)>();
        switch (Sniff(input))
        {
            case ArchiveKind.Zip or ArchiveKind.SevenZip:
                // SharpCompress: zip (deflate, deflate64, bzip2, lzma, zstd entries) and 7z.
                using (var archive = ArchiveFactory.OpenArchive(input, new ReaderOptions { LeaveStreamOpen = true }))
                {
                    foreach (var entry in archive.Entries)
                    {
                        ct.ThrowIfCancellationRequested();
                        await AddEntryAsync(field, fileName, entry, () => entry.OpenEntryStream(), links, ct);
                    }
                }
                break;
            case ArchiveKind.Tar:
                await AddTarAsync(field, fileName, input, links, ct);
                break;
            case ArchiveKind.TarGz:
                await using (var gz = new System.IO.Compression.GZipStream(input, System.IO.Compression.CompressionMode.Decompress, leaveOpen: true))
                    await AddTarAsync(field, fileName, gz, links, ct);
                break;
            case ArchiveKind.TarXz:
                await using (var xz = new SharpCompress.Providers.Default.XzCompressionProvider().CreateDecompressStream(input))
                    await AddTarAsync(field, fileName, xz, links, ct);
                break;
            default:
                throw new InputRejectedException(field, $"\"{fileName}\" is not an archive this server unpacks (zip, 7z, tar, tar.gz, tar.xz)");
        }

        // Links last: no later entry can be written through one, and each must stay inside the inputs.
        foreach (var (path, target, key) in links)
        {
            if (target.Length == 0 || target.StartsWith('/') || target.Contains('\0'))
                throw new InputRejectedException(field, $"archive \"{fileName}\": link \"{key}\" → \"{target}\" is absolute or empty; only relative links inside the inputs are allowed");
            var resolved = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(path)!, target));
            if (!IsInside(resolved))
                throw new InputRejectedException(field, $"archive \"{fileName}\": link \"{key}\" → \"{target}\" points outside the inputs");
            if (Path.Exists(path) || new FileInfo(path).LinkTarget is not null)
                throw new InputRejectedException(field, $"archive \"{fileName}\": \"{key}\" appears twice");
            File.CreateSymbolicLink(path, target);
        }
    }

    private async Task AddEntryAsync(string field, string archiveName, IEntry entry, Func<Stream> open, List<(string, string, string)> links, CancellationToken ct)
    {
        var key = entry.Key ?? "";
        var rel = SafeRelativePath(key);
        if (rel is null)
            throw new InputRejectedException(field, $"archive \"{archiveName}\": entry \"{key}\" is absolute or contains \"..\" or control characters; nothing was stored");
        if (entry.IsEncrypted) throw new InputRejectedException(field, $"archive \"{archiveName}\": entry \"{key}\" is encrypted");
        if (rel.Length == 0) return; // "./"
        Count(field);
        var path = Path.Combine(Dir, rel);
        if (entry.IsDirectory)
        {
            CreateDirectories(field, path);
            return;
        }
        CreateDirectories(field, Path.GetDirectoryName(path)!);
        // tar links carry their target; zip marks a symlink by S_IFLNK in the Unix mode (high 16 bits
        // of the external attributes), the target being the entry's content.
        var isZipLink = entry.Attrib is { } attrib && ((attrib >> 16) & 0xF000) == 0xA000;
        if (!string.IsNullOrEmpty(entry.LinkTarget) || isZipLink)
        {
            string target;
            if (isZipLink && string.IsNullOrEmpty(entry.LinkTarget))
            {
                await using var s = open();
                using var r = new StreamReader(s);
                var buf = new char[4097];
                var n = await r.ReadBlockAsync(buf, ct);
                target = new string(buf, 0, Math.Min(n, 4096));
            }
            else target = entry.LinkTarget!;
            links.Add((path, target, key));
            return;
        }
        if (entry.Size > _maxBytes - _bytes) throw TooLarge(field);
        await using var content = open();
        await WriteNewFileAsync(field, path, content, ct);
    }

    /// <summary>
    /// Tar through System.Formats.Tar, which tells entry types apart (SharpCompress shows devices and
    /// FIFOs as empty files): regular files, directories and symbolic links are taken; a hard link becomes
    /// a copy of the file it names (inside the inputs); devices and FIFOs are refused.
    /// </summary>
    private async Task AddTarAsync(string field, string archiveName, Stream tarStream, List<(string, string, string)> links, CancellationToken ct)
    {
        using var reader = new System.Formats.Tar.TarReader(tarStream, leaveOpen: true);
        System.Formats.Tar.TarEntry? e;
        while ((e = await reader.GetNextEntryAsync(copyData: false, ct)) is not null)
        {
            var rel = SafeRelativePath(e.Name);
            if (rel is null)
                throw new InputRejectedException(field, $"archive \"{archiveName}\": entry \"{e.Name}\" is absolute or contains \"..\" or control characters; nothing was stored");
            if (rel.Length == 0) continue;
            var path = Path.Combine(Dir, rel);
            switch (e.EntryType)
            {
                case System.Formats.Tar.TarEntryType.Directory:
                    Count(field);
                    CreateDirectories(field, path);
                    break;
                case System.Formats.Tar.TarEntryType.RegularFile or System.Formats.Tar.TarEntryType.V7RegularFile or System.Formats.Tar.TarEntryType.ContiguousFile:
                    Count(field);
                    CreateDirectories(field, Path.GetDirectoryName(path)!);
                    if (e.Length > _maxBytes - _bytes) throw TooLarge(field);
                    await WriteNewFileAsync(field, path, e.DataStream ?? Stream.Null, ct);
                    break;
                case System.Formats.Tar.TarEntryType.SymbolicLink:
                    Count(field);
                    CreateDirectories(field, Path.GetDirectoryName(path)!);
                    links.Add((path, e.LinkName, e.Name));
                    break;
                case System.Formats.Tar.TarEntryType.HardLink:
                {
                    Count(field);
                    var target = SafeRelativePath(e.LinkName) is { Length: > 0 } t ? Path.Combine(Dir, t) : null;
                    if (target is null || !File.Exists(target) || new FileInfo(target).LinkTarget is not null)
                        throw new InputRejectedException(field, $"archive \"{archiveName}\": hard link \"{e.Name}\" → \"{e.LinkName}\" does not name a file stored before it");
                    CreateDirectories(field, Path.GetDirectoryName(path)!);
                    await using var src = File.OpenRead(target);
                    await WriteNewFileAsync(field, path, src, ct);
                    break;
                }
                case System.Formats.Tar.TarEntryType.GlobalExtendedAttributes or System.Formats.Tar.TarEntryType.ExtendedAttributes:
                    break;
                default:
                    throw new InputRejectedException(field, $"archive \"{archiveName}\": entry \"{e.Name}\" is a {e.EntryType}; only files, directories and links are accepted");
            }
        }
    }

    private void CreateDirectories(string field, string path)
    {
        if (!IsInside(Path.GetFullPath(path)) && Path.GetFullPath(path) != Dir) throw new InputRejectedException(field, $"\"{path}\" lies outside the inputs");
        // Every component must be a real directory we made (links are only created at the end).
        var rel = Path.GetRelativePath(Dir, path);
        var cur = Dir;
        if (rel == ".") return;
        foreach (var part in rel.Split('/'))
        {
            cur = Path.Combine(cur, part);
            if (File.Exists(cur)) throw new InputRejectedException(field, $"\"{rel}\" is both a file and a directory in the inputs");
            if (!Directory.Exists(cur))
            {
                Directory.CreateDirectory(cur);
                File.SetUnixFileMode(cur, (UnixFileMode)0b111_101_101);
            }
        }
    }

    private async Task WriteNewFileAsync(string field, string path, Stream content, CancellationToken ct)
    {
        FileStream f;
        try { f = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 81920, FileOptions.Asynchronous); }
        catch (IOException) when (Path.Exists(path))
        {
            throw new InputRejectedException(field, $"input \"{Path.GetRelativePath(Dir, path)}\" is given twice");
        }
        await using (f) await CopyLimitedAsync(field, content, f, ct, countTowardsInputs: true);
        File.SetUnixFileMode(path, (UnixFileMode)0b110_100_100); // 0644: readable by the job's user, whoever it is
    }

    private async Task CopyLimitedAsync(string field, Stream from, Stream to, CancellationToken ct, bool countTowardsInputs)
    {
        var buffer = new byte[81920];
        long copied = 0;
        int n;
        while ((n = await from.ReadAsync(buffer, ct)) > 0)
        {
            copied += n;
            if ((countTowardsInputs ? _bytes : 0) + copied > _maxBytes) throw TooLarge(field);
            await to.WriteAsync(buffer.AsMemory(0, n), ct);
        }
        if (countTowardsInputs) _bytes += copied;
    }

    private InputRejectedException TooLarge(string field) =>
        new(field, $"inputs exceed this node's limit of {Core.Quantity.Human(_maxBytes)} (MaxInputBytes)", tooLarge: true);

    private void Count(string field)
    {
        if (++_entries > _maxEntries)
            throw new InputRejectedException(field, $"inputs hold more than {_maxEntries} files and directories (MaxInputEntries)");
    }

    private bool IsInside(string fullPath) => fullPath.StartsWith(Dir + "/", StringComparison.Ordinal);

    /// <summary>"a/./b/" → "a/b"; null for absolute paths, ".." segments, NUL or control characters.</summary>
    public static string? SafeRelativePath(string key)
    {
        var k = key.Replace('\\', '/');
        if (k.StartsWith('/') || (k.Length >= 2 && k[1] == ':') || k.Any(char.IsControl)) return null;
        var parts = k.Split('/', StringSplitOptions.RemoveEmptyEntries).Where(p => p != ".").ToList();
        if (parts.Any(p => p == "..")) return null;
        return string.Join('/', parts);
    }

    private static string? WhyBadName(string name) =>
        name.Length == 0 || name is "." or ".." ? "a file part needs a file name"
        : name.Length > 255 ? "longer than 255 characters"
        : name.Any(char.IsControl) ? "contains control characters"
        : null;

    /// <summary>Moves the staged inputs to <paramref name="target"/> (same file system: an atomic rename).</summary>
    public void CommitTo(string target)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        Directory.Move(Dir, target);
        Dir = target;
        Committed = true;
    }

    public void Dispose()
    {
        if (Committed) return;
        try { if (Directory.Exists(Dir)) Directory.Delete(Dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
