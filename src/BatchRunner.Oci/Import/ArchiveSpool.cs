using System.Formats.Tar;
using System.IO.Compression;
using BatchRunner.Oci.Registry;
using BatchRunner.Oci.Store;

namespace BatchRunner.Oci.Import;

/// <summary>
/// One pass over an image archive (OCI layout or <c>docker save</c>, plain, gzip or zstd): small metadata files
/// are kept in memory, every other file is spooled to the content store's temp directory with its sha256.
/// </summary>
/// <remarks>
/// The archive is untrusted and read as a stream, so its order does not matter (docker save writes manifest.json
/// last) and it is never held in memory. Entry names are only ever looked up, never used as paths; still, any
/// absolute name or ".." component refuses the whole archive, since no tool writes one into an image archive.
/// Files named <c>blobs/sha256/&lt;hex&gt;</c> are checked against their name as they are spooled.
/// </remarks>
internal sealed class ArchiveSpool : IDisposable
{
    private static readonly HashSet<string> MetadataNames = new(StringComparer.Ordinal) { "oci-layout", "index.json", "manifest.json", "repositories" };
    private const int MaxLinkHops = 8;

    private readonly Dictionary<string, BlobIngest> _files = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _links = new(StringComparer.Ordinal);
    private readonly Dictionary<string, byte[]> _metadata = new(StringComparer.Ordinal);

    private ArchiveSpool() { }

    public IReadOnlyDictionary<string, byte[]> Metadata => _metadata;

    /// <summary>The spooled file with this archive name, following links; null when absent.</summary>
    public BlobIngest? File(string name)
    {
        for (var hop = 0; hop <= MaxLinkHops; hop++)
        {
            if (_files.TryGetValue(name, out var ingest)) return ingest;
            if (!_links.TryGetValue(name, out var target)) return null;
            name = target;
        }
        return null;
    }

    /// <summary>The spooled blob of an OCI layout (<c>blobs/sha256/&lt;hex&gt;</c>), already verified against its name.</summary>
    public BlobIngest? Blob(string digest) => Digests.IsValid(digest) ? File("blobs/sha256/" + Digests.Hex(digest)) : null;

    public async Task<byte[]> ReadSmallAsync(BlobIngest ingest, string what, int maxBytes, CancellationToken ct)
    {
        if (ingest.Size > maxBytes)
            throw new ImageImportException($"{what} is {ingest.Size} bytes, more than the {maxBytes} bytes allowed for metadata");
        return await System.IO.File.ReadAllBytesAsync(ingest.TempPath, ct);
    }

    public void Dispose()
    {
        foreach (var f in _files.Values) f.Dispose();
        _files.Clear();
    }

    public static async Task<ArchiveSpool> ReadAsync(Stream archive, ContentStore content, ImageImportLimits limits, CancellationToken ct)
    {
        var spool = new ArchiveSpool();
        try
        {
            await spool.FillAsync(archive, content, limits, ct);
            return spool;
        }
        catch
        {
            spool.Dispose();
            throw;
        }
    }

    private async Task FillAsync(Stream archive, ContentStore content, ImageImportLimits limits, CancellationToken ct)
    {
        var (head, headLength) = await ReadHeadAsync(archive, ct);
        Stream raw = new PrefixedStream(head, headLength, archive);
        Stream? decompressor = null;
        string format;
        if (headLength >= 2 && head[0] == 0x1f && head[1] == 0x8b)
        {
            decompressor = new GZipStream(raw, CompressionMode.Decompress, leaveOpen: true);
            format = "gzip-compressed tar";
        }
        else if (headLength >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd)
        {
            decompressor = new ZstdSharp.DecompressionStream(raw, leaveOpen: true);
            format = "zstd-compressed tar";
        }
        else
        {
            format = "tar";
        }

        await using var _ = decompressor;
        var tarStream = decompressor ?? raw;
        if (decompressor is not null)
        {
            try
            {
                (head, headLength) = await ReadHeadAsync(decompressor, ct);
            }
            catch (Exception e) when (e is InvalidDataException or IOException or ZstdSharp.ZstdException)
            {
                throw new ImageImportException($"the archive is not a valid {format}: {e.Message}", e);
            }
            tarStream = new PrefixedStream(head, headLength, decompressor);
        }
        if (!LooksLikeTar(head.AsSpan(0, headLength)))
            throw new ImageImportException(decompressor is null
                ? "the upload is not an image archive: expected a tar (or gzip/zstd-compressed tar) of an OCI image layout or of docker save"
                : $"the upload is a {format} but what it holds is not a tar archive");

        long entries = 0, bytes = 0;
        var buffer = new byte[1 << 20];
        try
        {
            await using var reader = new TarReader(tarStream, leaveOpen: true);
            while (await reader.GetNextEntryAsync(copyData: false, ct) is { } entry)
            {
                if (++entries > limits.MaxEntries)
                    throw new ImageImportException($"the archive has more than {limits.MaxEntries} entries; refusing it");
                if (entry.EntryType is TarEntryType.GlobalExtendedAttributes) continue;
                var name = NormalizeName(entry.Name);
                switch (entry.EntryType)
                {
                    case TarEntryType.Directory:
                        break;
                    case TarEntryType.SymbolicLink:
                        _links[name] = ResolveLinkTarget(name, entry.LinkName, relativeToEntry: true);
                        _files.Remove(name, out var replacedBySymlink);
                        replacedBySymlink?.Dispose();
                        break;
                    case TarEntryType.HardLink:
                        _links[name] = ResolveLinkTarget(name, entry.LinkName, relativeToEntry: false);
                        _files.Remove(name, out var replacedByLink);
                        replacedByLink?.Dispose();
                        break;
                    case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                        bytes += entry.Length;
                        if (bytes > limits.MaxArchiveBytes)
                            throw new ImageImportException($"the archive's files add up to more than {limits.MaxArchiveBytes} bytes; refusing it");
                        _links.Remove(name);
                        if (MetadataNames.Contains(name))
                            _metadata[name] = await ReadMetadataAsync(name, entry, limits.MaxMetadataBytes, ct);
                        else
                            await SpoolAsync(name, entry, content, buffer, ct);
                        break;
                    default:
                        throw new ImageImportException(
                            $"archive entry \"{entry.Name}\" is a {entry.EntryType}; an image archive holds only files, directories and links");
                }
            }
        }
        catch (Exception e) when (e is InvalidDataException or FormatException or EndOfStreamException or ZstdSharp.ZstdException)
        {
            throw new ImageImportException($"the {format} archive is corrupt or truncated: {e.Message}", e);
        }
    }

    private static async Task<byte[]> ReadMetadataAsync(string name, TarEntry entry, int maxBytes, CancellationToken ct)
    {
        if (entry.Length > maxBytes)
            throw new ImageImportException($"archive file {name} is {entry.Length} bytes, more than the {maxBytes} bytes allowed for metadata");
        var bytes = new byte[entry.Length];
        if (entry.DataStream is { } data) await data.ReadExactlyAsync(bytes, ct);
        return bytes;
    }

    private async Task SpoolAsync(string name, TarEntry entry, ContentStore content, byte[] buffer, CancellationToken ct)
    {
        var ingest = content.BeginIngest();
        try
        {
            if (entry.DataStream is { } data)
            {
                int n;
                while ((n = await data.ReadAsync(buffer, ct)) > 0) await ingest.WriteAsync(buffer.AsMemory(0, n), ct);
            }
            await ingest.CompleteAsync(ct);
            if (ingest.Size != entry.Length)
                throw new ImageImportException($"archive entry {name} is truncated ({ingest.Size} of {entry.Length} bytes)");
            // OCI layouts name blobs by digest: a mismatch is a corrupt or tampered archive, whatever references it.
            if (name.StartsWith("blobs/sha256/", StringComparison.Ordinal))
            {
                var named = Digests.Sha256Prefix + name["blobs/sha256/".Length..];
                if (!Digests.IsValid(named))
                    throw new ImageImportException($"archive entry {name} is not named by a sha256 digest (blobs/sha256/<64 lowercase hex>)");
                if (named != ingest.Digest)
                    throw new ImageImportException($"digest mismatch: blob {named} in the archive hashes to {ingest.Digest}");
            }
        }
        catch
        {
            ingest.Dispose();
            throw;
        }
        if (_files.Remove(name, out var earlier)) earlier.Dispose();
        _files[name] = ingest;
    }

    /// <summary>"./blobs//sha256/x" → "blobs/sha256/x"; refuses absolute names and "..".</summary>
    internal static string NormalizeName(string raw)
    {
        if (raw.Contains('\0'))
            throw new ImageImportException("an archive entry name contains a NUL character; refusing the archive");
        if (raw.StartsWith('/'))
            throw new ImageImportException($"archive entry \"{raw}\" has an absolute path; refusing the archive");
        var parts = new List<string>();
        foreach (var part in raw.Split('/'))
        {
            if (part is "" or ".") continue;
            if (part == "..")
                throw new ImageImportException($"archive entry \"{raw}\" has a \"..\" path component; refusing the archive");
            parts.Add(part);
        }
        return string.Join('/', parts);
    }

    /// <summary>
    /// A link's target as an archive name. docker save writes <c>&lt;id&gt;/layer.tar -&gt; ../&lt;id2&gt;/layer.tar</c>
    /// for layers it already wrote; a target that leaves the archive root or is absolute is refused.
    /// </summary>
    private static string ResolveLinkTarget(string name, string target, bool relativeToEntry)
    {
        if (target.Length == 0 || target.StartsWith('/') || target.Contains('\0'))
            throw new ImageImportException($"archive link \"{name}\" points to \"{target}\", outside the archive; refusing the archive");
        var parts = new List<string>();
        if (relativeToEntry)
        {
            parts.AddRange(name.Split('/'));
            parts.RemoveAt(parts.Count - 1);
        }
        foreach (var part in target.Split('/'))
        {
            if (part is "" or ".") continue;
            if (part == "..")
            {
                if (parts.Count == 0)
                    throw new ImageImportException($"archive link \"{name}\" points to \"{target}\", outside the archive; refusing the archive");
                parts.RemoveAt(parts.Count - 1);
                continue;
            }
            parts.Add(part);
        }
        return string.Join('/', parts);
    }

    private static async Task<(byte[] Head, int Length)> ReadHeadAsync(Stream stream, CancellationToken ct)
    {
        var head = new byte[512];
        var length = await stream.ReadAtLeastAsync(head, head.Length, throwOnEndOfStream: false, ct);
        return (head, length);
    }

    /// <summary>A POSIX/GNU tar header has "ustar" at 257; a v7 one only a valid checksum.</summary>
    private static bool LooksLikeTar(ReadOnlySpan<byte> header)
    {
        if (header.Length < 512) return false;
        if (header.Slice(257, 5).SequenceEqual("ustar"u8)) return true;
        var stored = System.Text.Encoding.ASCII.GetString(header.Slice(148, 8)).Trim(' ', '\0');
        if (stored.Length == 0) return false;
        long expected;
        try { expected = Convert.ToInt64(stored, 8); }
        catch (Exception e) when (e is FormatException or ArgumentException or OverflowException) { return false; }
        long sum = 0;
        for (var i = 0; i < 512; i++) sum += i is >= 148 and < 156 ? (byte)' ' : header[i];
        return sum == expected;
    }
}

/// <summary>Replays the bytes read to sniff a format, then continues with the rest of the stream.</summary>
internal sealed class PrefixedStream(byte[] prefix, int prefixLength, Stream inner) : Layers.ForwardReadStream
{
    private int _position;

    public override int Read(Span<byte> buffer)
    {
        if (_position < prefixLength)
        {
            var n = Math.Min(buffer.Length, prefixLength - _position);
            prefix.AsSpan(_position, n).CopyTo(buffer);
            _position += n;
            return n;
        }
        return inner.Read(buffer);
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
    {
        if (_position < prefixLength) return ValueTask.FromResult(Read(buffer.Span));
        return inner.ReadAsync(buffer, ct);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) =>
        ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();
}
