using System.Formats.Tar;
using System.IO.Compression;

namespace BatchRunner.Oci.Layers;

/// <summary>
/// Unpacks one image layer (an untrusted tar changeset) into an empty directory that becomes an overlayfs lower
/// directory: OCI whiteouts are converted to overlayfs ones as they are read.
/// </summary>
/// <remarks>
/// Guarantees, whatever the layer contains: nothing is created, changed or linked outside <c>targetDir</c>;
/// symlinks in the layer are never followed out of it (parents are opened with O_NOFOLLOW, or resolved by the
/// kernel with RESOLVE_IN_ROOT when a layer writes through its own symlink); the decompressed size and the entry
/// count are bounded. The DiffID is computed from the same single pass, so the caller can verify it against the
/// image config before publishing the directory.
/// </remarks>
public static class LayerUnpacker
{
    public const string OciLayerTar = "application/vnd.oci.image.layer.v1.tar";
    public const string OciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    public const string OciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
    public const string DockerLayerTar = "application/vnd.docker.image.rootfs.diff.tar";
    public const string DockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    public const string DockerLayerZstd = "application/vnd.docker.image.rootfs.diff.tar.zstd";

    private enum Compression { None, Gzip, Zstd }

    public static bool IsSupportedMediaType(string mediaType) => TryGetCompression(mediaType, out _, out _);

    public static Task<LayerUnpackResult> UnpackAsync(Stream blob, string mediaType, string targetDir, LayerUnpackOptions options, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(blob);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(targetDir);
        if (!TryGetCompression(mediaType, out var compression, out var why))
            throw new UnsupportedLayerMediaTypeException(mediaType, why!);
        if (!Directory.Exists(targetDir))
            throw new DirectoryNotFoundException($"layer target directory {targetDir} does not exist");
        // Decompression and the syscalls are all blocking: a thread of its own per layer (plus its read-ahead
        // thread), not a thread-pool thread that a blocking read could starve the pool of, nor an async chain of small reads.
        return Task.Factory.StartNew(() => Unpack(blob, mediaType, compression, targetDir, options, ct), ct,
            TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    private static bool TryGetCompression(string? mediaType, out Compression compression, out string? why)
    {
        compression = Compression.None;
        why = null;
        switch (mediaType)
        {
            case OciLayerTar or DockerLayerTar: return true;
            case OciLayerGzip or DockerLayerGzip: compression = Compression.Gzip; return true;
            case OciLayerZstd or DockerLayerZstd: compression = Compression.Zstd; return true;
        }
        if (string.IsNullOrEmpty(mediaType))
            why = "layer has no media type";
        else if (mediaType.StartsWith("application/vnd.oci.image.layer.nondistributable.", StringComparison.Ordinal) ||
                 mediaType == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")
            why = $"layer media type {mediaType} is a non-distributable (foreign) layer, which is not supported";
        else if (mediaType.Contains("+encrypted", StringComparison.Ordinal))
            why = $"layer media type {mediaType} is an encrypted layer, which is not supported";
        else
            why = $"layer media type {mediaType} is not supported (expected a tar, tar+gzip or tar+zstd image layer)";
        return false;
    }

    private static LayerUnpackResult Unpack(Stream blob, string mediaType, Compression compression, string targetDir, LayerUnpackOptions options, CancellationToken ct)
    {
        using Stream? decompressed = compression switch
        {
            Compression.Gzip => new GZipStream(blob, CompressionMode.Decompress, leaveOpen: true),
            Compression.Zstd => new ZstdSharp.DecompressionStream(blob, leaveOpen: true),
            _ => null,
        };
        using var digesting = new DigestingReadStream(decompressed ?? blob, options.MaxUncompressedBytes);
        long entries = 0;
        long skipped;
        try
        {
            // Decompressing and hashing run one chunk ahead on a second thread while this one parses the tar and
            // writes the files; disposing it joins that thread, so the digest below is final.
            using var ahead = new ReadAheadStream(digesting);
            // Tar headers are read 512 bytes at a time; the buffer turns those into few reads of the read-ahead, while
            // file data (read in 1 MiB chunks) bypasses it.
            using var buffered = new BufferedStream(new EndOfArchiveStream(ahead), 64 * 1024);
            using var writer = new TreeWriter(targetDir, options);
            using var reader = new TarReader(buffered, leaveOpen: true);
            while (reader.GetNextEntry(copyData: false) is { } entry)
            {
                ct.ThrowIfCancellationRequested();
                if (++entries > options.MaxEntries)
                    throw new LayerLimitExceededException(
                        $"layer has more than {options.MaxEntries} entries (MaxEntries); refusing to unpack it");
                writer.Write(entry, ct);
            }
            writer.FinishDirectoryTimes();
            while (buffered.Read(writer.Buffer) > 0) { }
            skipped = writer.SkippedEntries;
        }
        catch (Exception ex) when (ex is InvalidDataException or FormatException or EndOfStreamException or ZstdSharp.ZstdException
                                   && ex is not LayerUnpackException)
        {
            throw new LayerUnpackException(DescribeCorruption(mediaType, compression, digesting, ex), ex);
        }
        return new LayerUnpackResult(digesting.DiffId(), digesting.BytesRead, entries, skipped);
    }

    private static string DescribeCorruption(string mediaType, Compression compression, DigestingReadStream digesting, Exception ex)
    {
        var head = digesting.Head;
        var hint = compression == Compression.None && head.Length >= 2 && head[0] == 0x1f && head[1] == 0x8b
            ? " (the blob is gzip-compressed but its media type says uncompressed tar)"
            : compression == Compression.None && head.Length >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd
                ? " (the blob is zstd-compressed but its media type says uncompressed tar)"
                : "";
        return $"layer ({mediaType}) is corrupt after {digesting.BytesRead} uncompressed bytes: {ex.Message}{hint}";
    }
}
