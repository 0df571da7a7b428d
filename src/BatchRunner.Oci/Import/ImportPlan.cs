using System.Text.Json;
using BatchRunner.Oci.Layers;
using BatchRunner.Oci.Registry;
using BatchRunner.Oci.Store;
using static BatchRunner.Oci.Store.ImageStore;

namespace BatchRunner.Oci.Import;

/// <summary>
/// Which image of a spooled archive to register, and the verified blobs it needs: an OCI image layout
/// (index.json, also written by docker save since Docker 25) or the legacy docker save format (manifest.json,
/// &lt;id&gt;.json config, uncompressed &lt;id&gt;/layer.tar files), for which an OCI manifest is written.
/// </summary>
internal sealed record ImportPlan(
    string ManifestDigest,
    Manifest Manifest,
    byte[]? SynthesizedManifest,
    IReadOnlyList<(string Digest, BlobIngest Ingest)> Blobs)
{
    private const string RefNameAnnotation = "org.opencontainers.image.ref.name";
    private const string ContainerdNameAnnotation = "io.containerd.image.name";
    private const int MaxIndexDepth = 2;

    public static async Task<ImportPlan> ResolveAsync(
        ArchiveSpool spool, ImageReference name, string os, string architecture, ImageImportLimits limits, CancellationToken ct)
    {
        if (spool.Metadata.TryGetValue("index.json", out var index))
            return await FromOciLayoutAsync(spool, index, name, os, architecture, limits, ct);
        if (spool.Metadata.TryGetValue("manifest.json", out var manifest))
            return await FromDockerSaveAsync(spool, manifest, name, limits, ct);
        throw new ImageImportException(
            "the archive has neither index.json (an OCI image layout) nor manifest.json (docker save); is it an image archive?");
    }

    // ---- OCI image layout ------------------------------------------------------------------------------------------

    private static async Task<ImportPlan> FromOciLayoutAsync(
        ArchiveSpool spool, byte[] indexJson, ImageReference name, string os, string architecture, ImageImportLimits limits, CancellationToken ct)
    {
        List<LayoutDescriptor> entries;
        try
        {
            entries = JsonSerializer.Deserialize<LayoutIndex>(indexJson, ImageStore.Json)?.Manifests
                      ?? throw new JsonException("no \"manifests\" array");
        }
        catch (JsonException e)
        {
            throw new ImageImportException($"index.json of the archive is malformed: {JsonErrors.Describe(e)}", e);
        }
        if (entries.Count == 0) throw new ImageImportException("index.json of the archive lists no images");

        var top = PickLayoutEntry(entries, name);
        var blobs = new List<(string, BlobIngest)>();
        var descriptor = new Descriptor(top.MediaType, top.Digest, top.Size, top.Platform);
        var source = "index.json";
        for (var depth = 0; ; depth++)
        {
            var ingest = RequireBlob(spool, descriptor, source);
            blobs.Add((descriptor.Digest, ingest));
            var bytes = await spool.ReadSmallAsync(ingest, $"manifest {descriptor.Digest}", limits.MaxMetadataBytes, ct);
            var parsed = Parse(name, descriptor.MediaType ?? MediaTypeOf(bytes), bytes);
            if (parsed is Manifest manifest)
            {
                var config = RequireBlob(spool, manifest.Config!, $"manifest {descriptor.Digest} (its config)");
                blobs.Add((manifest.Config!.Digest, config));
                for (var i = 0; i < manifest.Layers!.Count; i++)
                    blobs.Add((manifest.Layers[i].Digest, RequireBlob(spool, manifest.Layers[i], $"manifest {descriptor.Digest} (layer {i + 1})")));
                return new ImportPlan(descriptor.Digest, manifest, null, blobs);
            }
            if (depth >= MaxIndexDepth) throw new ImageImportException("the archive's image indexes nest too deeply");
            try
            {
                descriptor = SelectPlatform(name, ((ImageStore.Index)parsed).Manifests, os, architecture);
            }
            catch (ImagePullException e)
            {
                throw new ImageImportException(e.Message.Replace($"image {name} has", "the archive's image has", StringComparison.Ordinal), e);
            }
            source = $"index {blobs[^1].Item1}";
        }
    }

    /// <summary>
    /// One image: it. Several: the one whose containerd name or ref.name annotation (what skopeo, umoci and
    /// docker save write) matches the name, or its tag.
    /// </summary>
    private static LayoutDescriptor PickLayoutEntry(List<LayoutDescriptor> entries, ImageReference name)
    {
        if (entries.Count == 1) return entries[0];
        var matches = entries.Where(e =>
                e.Annotations is { } a &&
                ((a.TryGetValue(ContainerdNameAnnotation, out var full) && Normalised(full) == name.ToString()) ||
                 (a.TryGetValue(RefNameAnnotation, out var refName) && (refName == name.Tag || Normalised(refName) == name.ToString()))))
            .ToList();
        if (matches.Count == 1) return matches[0];
        var names = entries
            .Select(e => e.Annotations?.GetValueOrDefault(ContainerdNameAnnotation) ?? e.Annotations?.GetValueOrDefault(RefNameAnnotation) ?? e.Digest)
            .Distinct();
        throw new ImageImportException(
            $"the archive holds {entries.Count} images ({string.Join(", ", names)}) and {(matches.Count == 0 ? "none" : "several")} " +
            $"match {name}; name the image by its tag in the archive");
    }

    private static BlobIngest RequireBlob(ArchiveSpool spool, Descriptor descriptor, string source)
    {
        if (!Digests.IsValid(descriptor.Digest))
            throw new ImageImportException($"{source} names blob \"{descriptor.Digest}\", which is not a sha256:<hex> digest");
        var ingest = spool.Blob(descriptor.Digest)
                     ?? throw new ImageImportException($"the archive has no blob {descriptor.Digest} (named by {source})");
        if (descriptor.Size > 0 && descriptor.Size != ingest.Size)
            throw new ImageImportException($"blob {descriptor.Digest} is {ingest.Size} bytes but {source} says {descriptor.Size}");
        return ingest;
    }

    private static object Parse(ImageReference name, string mediaType, byte[] bytes)
    {
        try
        {
            return ParseManifestOrIndex(name, mediaType, bytes);
        }
        catch (ImagePullException e)
        {
            throw new ImageImportException(e.Message, e);
        }
    }

    // ---- docker save ---------------------------------------------------------------------------------------------

    private static async Task<ImportPlan> FromDockerSaveAsync(ArchiveSpool spool, byte[] manifestJson, ImageReference name, ImageImportLimits limits, CancellationToken ct)
    {
        List<DockerSaveEntry> entries;
        try
        {
            entries = JsonSerializer.Deserialize<List<DockerSaveEntry>>(manifestJson, ImageStore.Json) ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            throw new ImageImportException($"manifest.json of the archive is malformed (expected docker save's [{{Config, RepoTags, Layers}}]): {JsonErrors.Describe(e)}", e);
        }
        if (entries.Count == 0) throw new ImageImportException("manifest.json of the archive lists no images");
        var entry = entries.Count == 1
            ? entries[0]
            : entries.SingleOrDefault(e => e.RepoTags?.Any(t => Normalised(t) == name.ToString()) == true)
              ?? throw new ImageImportException(
                  $"the archive holds {entries.Count} images ({string.Join(", ", entries.SelectMany(e => e.RepoTags ?? ["<untagged>"]))}) " +
                  $"and none is tagged {name}; name the image by one of its tags");
        if (string.IsNullOrEmpty(entry.Config) || entry.Layers is null)
            throw new ImageImportException("manifest.json of the archive has an entry without Config or Layers");

        var configName = ArchiveSpool.NormalizeName(entry.Config);
        var config = spool.File(configName) ?? throw new ImageImportException($"the archive has no file {configName} (the config named by manifest.json)");
        // docker save names the config <hex>.json by its digest: hold it to that name.
        var configBase = Path.GetFileName(configName);
        if (configBase.EndsWith(".json", StringComparison.Ordinal) && Digests.IsValid(Digests.Sha256Prefix + configBase[..^5]) &&
            Digests.Sha256Prefix + configBase[..^5] != config.Digest)
            throw new ImageImportException($"digest mismatch: config {configName} in the archive hashes to {config.Digest}");
        var configBytes = await spool.ReadSmallAsync(config, $"config {configName}", limits.MaxMetadataBytes, ct);
        IReadOnlyList<string> diffIds;
        try
        {
            diffIds = ParseConfig(name.ToString(), configBytes).DiffIds;
        }
        catch (ImagePullException e)
        {
            throw new ImageImportException(e.Message, e);
        }
        if (diffIds.Count != entry.Layers.Count)
            throw new ImageImportException($"config {configName} lists {diffIds.Count} diff ids for the {entry.Layers.Count} layers manifest.json names");

        var blobs = new List<(string, BlobIngest)> { (config.Digest!, config) };
        var layers = new List<Descriptor>();
        for (var i = 0; i < entry.Layers.Count; i++)
        {
            var layerName = ArchiveSpool.NormalizeName(entry.Layers[i]);
            var layer = spool.File(layerName) ?? throw new ImageImportException($"the archive has no file {layerName} (layer {i + 1} named by manifest.json)");
            var mediaType = SniffLayerMediaType(layer.Head);
            // An uncompressed layer's digest is its diff id: the config vouches for it before anything is stored.
            // A compressed one is checked against the diff id when it is unpacked.
            if (mediaType == LayerUnpacker.OciLayerTar && layer.Digest != diffIds[i])
                throw new ImageImportException($"digest mismatch: layer {layerName} in the archive hashes to {layer.Digest}, but the config's diff id {i + 1} is {diffIds[i]}");
            blobs.Add((layer.Digest!, layer));
            layers.Add(new Descriptor(mediaType, layer.Digest!, layer.Size, null));
        }

        var configDescriptor = new Descriptor(MediaTypes.OciConfig, config.Digest!, config.Size, null);
        var bytes = WriteManifest(configDescriptor, layers);
        return new ImportPlan(Digests.Sha256(bytes), new Manifest(configDescriptor, layers), bytes, blobs);
    }

    private static string SniffLayerMediaType(ReadOnlySpan<byte> head) =>
        head.Length >= 2 && head[0] == 0x1f && head[1] == 0x8b ? LayerUnpacker.OciLayerGzip
        : head.Length >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd ? LayerUnpacker.OciLayerZstd
        : LayerUnpacker.OciLayerTar;

    /// <summary>A deterministic OCI manifest, so importing the same archive twice gives the same digest.</summary>
    private static byte[] WriteManifest(Descriptor config, IReadOnlyList<Descriptor> layers)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteNumber("schemaVersion", 2);
            w.WriteString("mediaType", MediaTypes.OciManifest);
            w.WritePropertyName("config");
            WriteDescriptor(w, config);
            w.WriteStartArray("layers");
            foreach (var l in layers) WriteDescriptor(w, l);
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return buffer.ToArray();

        static void WriteDescriptor(Utf8JsonWriter w, Descriptor d)
        {
            w.WriteStartObject();
            w.WriteString("mediaType", d.MediaType);
            w.WriteString("digest", d.Digest);
            w.WriteNumber("size", d.Size);
            w.WriteEndObject();
        }
    }

    private static string? Normalised(string text) => ImageReference.TryParse(text, out var r, out _) ? r.ToString() : null;

    private sealed record LayoutIndex(List<LayoutDescriptor>? Manifests);
    private sealed record LayoutDescriptor(string? MediaType, string Digest, long Size, Platform? Platform, Dictionary<string, string>? Annotations);
    private sealed record DockerSaveEntry(string? Config, List<string>? RepoTags, List<string>? Layers);
}
