namespace BatchRunner.Oci.Store;

/// <summary>An image held by the store, as listed for users and GC.</summary>
/// <param name="Name">The normalised reference it was pulled or imported as ("docker.io/myorg/tool:1").</param>
/// <param name="ManifestDigest">Digest of its platform manifest (what a job's <c>imageDigest</c> reports).</param>
/// <param name="SizeBytes">Everything the image needs on disk: manifest, config and compressed layer blobs plus
/// the unpacked layer directories (apparent size of their files). A layer shared with other images is counted in
/// full in each of them, so these do not add up to the store's total.</param>
/// <param name="UniqueBytes">The part of <paramref name="SizeBytes"/> no other image references: what deleting
/// this image alone frees. Zero for every alias when two names point to the same manifest.</param>
/// <param name="LastUsedUtc">Last pull, import or job start (minute precision).</param>
public sealed record CachedImage(string Name, string ManifestDigest, long SizeBytes, long UniqueBytes, DateTime LastUsedUtc);

/// <param name="BytesBefore">Disk use of blobs and unpacked layers when GC started.</param>
/// <param name="BytesAfter">Disk use when it finished; above the budget when in-use images alone exceed it.</param>
/// <param name="RemovedImages">Names whose records were removed, least recently used first.</param>
public sealed record GcResult(long BytesBefore, long BytesAfter, IReadOnlyList<string> RemovedImages, int RemovedBlobs, int RemovedLayers);

/// <summary>No image is stored under this name.</summary>
public sealed class ImageNotFoundException(string name) : Exception($"image {name} is not in the image store")
{
    public string Name { get; } = name;
}

/// <summary>The image cannot be deleted while a job uses it.</summary>
public sealed class ImageInUseException(string name, string digest)
    : InvalidOperationException($"image {name} ({digest}) is used by a queued or running job; delete it once those jobs have finished")
{
    public string Name { get; } = name;
    public string ManifestDigest { get; } = digest;
}
