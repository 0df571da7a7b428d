namespace BatchRunner.Oci.Layers;

public sealed class LayerUnpackOptions
{
    public static LayerUnpackOptions Default { get; } = new();

    /// <summary>Stop when the decompressed tar stream grows past this (a gzip bomb guard).</summary>
    public long MaxUncompressedBytes { get; init; } = 64L << 30;

    /// <summary>Stop when the layer holds more tar entries than this (an inode-exhaustion guard).</summary>
    public long MaxEntries { get; init; } = 1_000_000;

    /// <summary>
    /// Create character and block device nodes. True by default: image layers carry a few (/dev/null in old
    /// base images) and opening one inside a container still needs a devices-cgroup allow rule. When false they
    /// are skipped and counted in <see cref="LayerUnpackResult.SkippedEntries"/>; whiteouts are always created.
    /// </summary>
    public bool AllowDevices { get; init; } = true;

    /// <summary>Apply the entries' uid/gid (needs root). When false, everything belongs to the unpacking user.</summary>
    public bool PreserveOwnership { get; init; } = true;
}

/// <param name="DiffId">"sha256:&lt;hex&gt;" of the uncompressed tar stream: compare with the config's rootfs.diff_ids.</param>
/// <param name="UncompressedBytes">Length of the uncompressed tar stream, end-of-archive padding included.</param>
/// <param name="EntryCount">Tar entries read, whiteouts included.</param>
/// <param name="SkippedEntries">Entries deliberately not materialised: devices when disallowed, AUFS metadata
/// (.wh..wh.* other than the opaque marker), xattrs that cannot be set faithfully.</param>
public sealed record LayerUnpackResult(string DiffId, long UncompressedBytes, long EntryCount, long SkippedEntries);

/// <summary>
/// The layer cannot be unpacked safely or faithfully: a corrupt stream, an entry that would land outside the
/// target, an unsupported entry type. Not transient: the same blob fails the same way.
/// </summary>
public class LayerUnpackException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>A limit of <see cref="LayerUnpackOptions"/> was exceeded.</summary>
public sealed class LayerLimitExceededException(string message) : LayerUnpackException(message);

/// <summary>The layer's media type is not one this unpacker reads (foreign, encrypted or unknown).</summary>
public sealed class UnsupportedLayerMediaTypeException(string mediaType, string message) : NotSupportedException(message)
{
    public string MediaType { get; } = mediaType;
}
