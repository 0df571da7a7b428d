namespace BatchRunner.Oci.Import;

/// <summary>
/// An archive could not be imported; the message says what is wrong with it ("entry \"../x\" ... refused",
/// "blob sha256:... does not match its digest", "archive has no blob ..."). Never transient: the same archive
/// fails the same way.
/// </summary>
public sealed class ImageImportException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Bounds on an untrusted archive. Layers are further bounded by the unpacker's own limits.</summary>
public sealed class ImageImportLimits
{
    public static ImageImportLimits Default { get; } = new();

    /// <summary>Sum of the archive's entry sizes (after decompressing the archive itself).</summary>
    public long MaxArchiveBytes { get; init; } = 64L << 30;

    /// <summary>Entries of any kind, directories included.</summary>
    public int MaxEntries { get; init; } = 100_000;

    /// <summary>index.json, manifest.json, image manifests and configs are read into memory: each is bounded by this.</summary>
    public int MaxMetadataBytes { get; init; } = 4 << 20;
}
