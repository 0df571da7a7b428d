using System.Diagnostics;
using BatchRunner.Oci.Import;
using Microsoft.Extensions.Logging;

namespace BatchRunner.Oci.Store;

// Air-gapped import: an image archive in, a registered image out, with the same guarantees as a pull (blobs
// verified before they are stored, layers unpacked into layers/tmp and renamed only with their diff id verified).
public sealed partial class ImageStore
{
    /// <summary>Imports with <see cref="ImageImportLimits.Default"/>.</summary>
    public Task<PreparedImage> ImportAsync(Stream archive, string name, CancellationToken ct) =>
        ImportAsync(archive, name, ImageImportLimits.Default, ct);

    /// <summary>
    /// Registers the image in an archive under <paramref name="name"/>, so that a pull of that name with
    /// <see cref="PullPolicy.IfNotPresent"/> or <see cref="PullPolicy.Never"/> uses it without any network.
    /// </summary>
    /// <param name="archive">A tar, tar.gz or tar.zst (sniffed) of an OCI image layout (umoci, skopeo oci-archive,
    /// docker save since Docker 25) or of the legacy docker save format. Read once, forward only.</param>
    /// <param name="name">The reference to register, normalised ("myorg/tool:1" → docker.io/myorg/tool:1). When the
    /// archive holds several images, the one annotated or tagged with this name (or its tag) is imported.</param>
    /// <exception cref="ImageImportException">The name is invalid, or the archive is not an image archive, is
    /// malformed, unsafe, misses a blob, or has content that does not match its digest.</exception>
    public async Task<PreparedImage> ImportAsync(Stream archive, string name, ImageImportLimits limits, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(archive);
        if (!ImageReference.TryParse(name, out var reference, out var nameError)) throw new ImageImportException(nameError);
        var key = reference.ToString();
        var sw = Stopwatch.StartNew();

        // Pins cover the blobs from the moment they are committed until the record names them.
        using var lease = _pins.Acquire();
        using var spool = await ArchiveSpool.ReadAsync(archive, Content, limits, ct);
        var plan = await ImportPlan.ResolveAsync(spool, reference, _options.Os, _options.Architecture, limits, ct);
        if (reference.Digest is not null && reference.Digest != plan.ManifestDigest)
            throw new ImageImportException($"the archive's image has manifest digest {plan.ManifestDigest}, not {reference.Digest} as the name says");

        lease.Pin(plan.ManifestDigest);
        foreach (var (digest, ingest) in plan.Blobs)
        {
            lease.Pin(digest);
            ingest.Commit();
        }
        if (plan.SynthesizedManifest is { } manifestBytes)
            await Content.PutAsync(plan.ManifestDigest, manifestBytes, ct);

        PreparedImage image;
        try
        {
            image = await PrepareAsync(reference, plan.ManifestDigest, plan.Manifest, allowNetwork: false, new ProgressTracker(null), lease, ct);
        }
        catch (ImagePullException e)
        {
            // Blobs committed so far are unreferenced: the next GC sweep removes them.
            throw new ImageImportException(e.Message, e);
        }

        var now = DateTime.UtcNow;
        await WriteRecordAsync(new ImageRecord(key, plan.ManifestDigest, now), ct);
        _resolved[key] = (image, now);
        LogImported(_logger, key, plan.ManifestDigest, image.LayerPaths.Count, sw.ElapsedMilliseconds);
        return image;
    }

    [LoggerMessage(EventId = 4205, Level = LogLevel.Information, Message = "Imported image {Image} ({Digest}, {LayerCount} layers) from an archive in {ElapsedMs} ms")]
    private static partial void LogImported(ILogger logger, string image, string digest, int layerCount, long elapsedMs);
}
