using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using BatchRunner.Oci.Layers;
using BatchRunner.Oci.Registry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BatchRunner.Oci.Store;

/// <summary>
/// Pulls images into a digest-addressed store and unpacks each layer once, for every job that uses it.
/// </summary>
/// <remarks>
/// <para>Layout under <see cref="ImageStoreOptions.Root"/>:
/// <c>blobs/sha256/&lt;hex&gt;</c> verified manifests, configs and layer blobs (<see cref="ContentStore"/>);
/// <c>layers/sha256/&lt;layer-digest-hex&gt;</c> unpacked layers, read-only for jobs;
/// <c>layers/tmp/</c> layers being unpacked; <c>images/&lt;key&gt;.json</c> reference → manifest digest and last use,
/// so a restarted process keeps its cache.</para>
/// <para>Guarantees: a layer directory exists only complete and with its diff id verified (unpacked into
/// <c>layers/tmp/</c>, then renamed); a blob path exists only with verified content. Concurrent pulls share one
/// download and one unpack per digest. With <see cref="PullPolicy.IfNotPresent"/> an image pulled before is served
/// from memory or disk without any network.</para>
/// <para>Images leave the store only through <see cref="DeleteAsync"/> and <see cref="GarbageCollectAsync"/>
/// (ImageStore.Gc.cs), which never remove what a pull or import in progress has pinned (<see cref="ContentPins"/>)
/// nor what an image the caller says is in use references. <see cref="ImportAsync(Stream, string, CancellationToken)"/>
/// (ImageStore.Import.cs) registers images from an archive, for hosts without a registry.</para>
/// </remarks>
public sealed partial class ImageStore : IImageStore, IDisposable
{
    private const int MaxManifestDepth = 2;
    // Writing last-use times on every job would put a file write on the hot path; minute precision is plenty for GC.
    private static readonly TimeSpan LastUsedResolution = TimeSpan.FromMinutes(1);
    private static readonly TimeSpan ProgressInterval = TimeSpan.FromMilliseconds(100);
    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNameCaseInsensitive = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    private readonly ImageStoreOptions _options;
    private readonly ILogger _logger;
    private readonly RegistryClient _registry;
    private readonly SingleFlight _flights = new();
    private readonly ContentPins _pins = new();
    private readonly SemaphoreSlim _downloadSlots;
    private readonly SemaphoreSlim _unpackSlots;
    private readonly ConcurrentDictionary<string, (PreparedImage Image, DateTime LastUsedWritten)> _resolved = new();

    /// <param name="httpHandler">Transport for tests (see <see cref="RegistryClient"/>); null for the default.</param>
    public ImageStore(ImageStoreOptions options, ILogger<ImageStore>? logger = null, HttpMessageHandler? httpHandler = null)
    {
        if (options.MaxParallelDownloads < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxParallelDownloads must be at least 1");
        if (options.MaxParallelUnpacks < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxParallelUnpacks must be at least 1");
        _options = options;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _registry = new RegistryClient(options, httpHandler, _logger);
        _downloadSlots = new SemaphoreSlim(options.MaxParallelDownloads);
        _unpackSlots = new SemaphoreSlim(options.MaxParallelUnpacks);
        Content = new ContentStore(options.Root);
        Directory.CreateDirectory(LayersDir);
        Directory.CreateDirectory(ImagesDir);
        Directory.CreateDirectory(LayersTempDir);
        // Layer directories a crash left without their completion marker join layers/tmp, which holds what a
        // process that died mid-unpack left (never complete, never used) and what GC had not finished deleting.
        var incomplete = SetAsideIncompleteLayers();
        TreeRemover.Remove(LayersTempDir);
        Directory.CreateDirectory(LayersTempDir);
        if (incomplete > 0) LogIncompleteLayers(_logger, incomplete);
        Content.CleanIngests();
    }

    public ContentStore Content { get; }
    /// <summary>Parent of the unpacked layers; a snapshotter can mount with lowerdirs relative to it to keep options short.</summary>
    public string LayersDir => Path.Combine(_options.Root, "layers", "sha256");
    private string LayersTempDir => Path.Combine(_options.Root, "layers", "tmp");
    private string ImagesDir => Path.Combine(_options.Root, "images");

    /// <summary>For tests: awaited as each layer's unpack starts (after it got its unpack slot), with the layer digest.</summary>
    internal Func<string, CancellationToken, Task>? UnpackStarting { get; set; }

    /// <summary>Where the layer with this (compressed) blob digest is unpacked.</summary>
    public string LayerPath(string layerDigest) => Path.Combine(LayersDir, Digests.Hex(layerDigest));

    public void Dispose()
    {
        _registry.Dispose();
        _downloadSlots.Dispose();
        _unpackSlots.Dispose();
    }

    public async Task<PreparedImage> PullAsync(ImageReference reference, PullPolicy policy, IProgress<PullProgress>? progress, CancellationToken ct)
    {
        var key = reference.ToString();
        if (policy != PullPolicy.Always && _resolved.TryGetValue(key, out var hit) && hit.Image.LayerPaths.All(IsLayerComplete))
        {
            TouchLastUsed(key, hit.Image, hit.LastUsedWritten);
            return hit.Image;
        }

        var sw = Stopwatch.StartNew();
        var tracker = new ProgressTracker(progress);
        var allowNetwork = policy != PullPolicy.Never;
        // Held until the record is written: from then on the record keeps the image's content from GC.
        using var lease = _pins.Acquire();
        var (manifestDigest, manifest) = await ResolveManifestAsync(reference, policy, lease, ct);
        var image = await PrepareAsync(reference, manifestDigest, manifest, allowNetwork, tracker, lease, ct);
        tracker.Complete();

        var now = DateTime.UtcNow;
        await WriteRecordAsync(new ImageRecord(key, manifestDigest, now), ct);
        _resolved[key] = (image, now);
        LogPrepared(_logger, key, manifestDigest, image.LayerPaths.Count, sw.ElapsedMilliseconds);
        return image;
    }

    /// <summary>Every image reference resolved so far, with its manifest digest and last use (for GC and listings).</summary>
    public IReadOnlyList<ImageRecord> ListImages()
    {
        var result = new List<ImageRecord>();
        foreach (var file in Directory.EnumerateFiles(ImagesDir, "*.json"))
        {
            try
            {
                if (JsonSerializer.Deserialize<ImageRecord>(File.ReadAllBytes(file), Json) is { } r) result.Add(r);
            }
            catch (Exception e) when (e is JsonException or IOException) { /* half-written by a crash: ignore */ }
        }
        return result;
    }

    // ---- manifests -------------------------------------------------------------------------------------------------

    private async Task<(string Digest, Manifest Manifest)> ResolveManifestAsync(
        ImageReference reference, PullPolicy policy, ContentPins.Lease lease, CancellationToken ct)
    {
        // Digests are immutable, so a stored manifest (by record or by digest reference) needs no registry round trip
        // unless the policy asks to re-resolve a tag.
        if (policy != PullPolicy.Always || reference.Digest is not null)
        {
            var known = ReadRecord(reference.ToString())?.ManifestDigest ?? reference.Digest;
            if (known is not null && Digests.IsValid(known)) lease.Pin(known);
            // A stored manifest that no longer hashes to its digest is removed by the read: fetched again below.
            if (known is not null && Digests.IsValid(known) && await Content.TryReadVerifiedAsync(known, ct) is { } stored)
            {
                var local = ParseManifestOrIndex(reference, MediaTypeOf(stored), stored);
                if (local is Manifest m) return (known, m);
                if (local is Index idx)
                {
                    var platformDigest = SelectPlatform(reference, idx.Manifests, _options.Os, _options.Architecture).Digest;
                    lease.Pin(platformDigest);
                    if (await Content.TryReadVerifiedAsync(platformDigest, ct) is { } bytes &&
                        ParseManifestOrIndex(reference, MediaTypeOf(bytes), bytes) is Manifest pm) return (platformDigest, pm);
                }
            }
            if (policy == PullPolicy.Never)
                throw new ImagePullException($"image {reference} is not present locally and the pull policy is Never");
        }

        var fetched = await _registry.GetManifestAsync(reference, reference.ManifestReference, ct);
        for (var depth = 0; ; depth++)
        {
            lease.Pin(fetched.Digest);
            await Content.PutAsync(fetched.Digest, fetched.Content, ct);
            var parsed = ParseManifestOrIndex(reference, fetched.MediaType, fetched.Content);
            if (parsed is Manifest manifest) return (fetched.Digest, manifest);
            if (depth >= MaxManifestDepth) throw new ImagePullException($"image {reference}: image indexes nest too deeply");

            var chosen = SelectPlatform(reference, ((Index)parsed).Manifests, _options.Os, _options.Architecture);
            lease.Pin(chosen.Digest);
            fetched = await Content.TryReadVerifiedAsync(chosen.Digest, ct) is { } bytes
                ? new FetchedManifest(chosen.MediaType ?? MediaTypeOf(bytes), chosen.Digest, bytes)
                : await _registry.GetManifestAsync(reference, chosen.Digest, ct);
        }
    }

    internal static string MediaTypeOf(byte[] content)
    {
        try
        {
            using var doc = JsonDocument.Parse(content);
            if (doc.RootElement.TryGetProperty("mediaType", out var mt) && mt.ValueKind == JsonValueKind.String) return mt.GetString()!;
            return doc.RootElement.TryGetProperty("manifests", out _) ? MediaTypes.OciIndex : MediaTypes.OciManifest;
        }
        catch (JsonException) { return ""; }
    }

    internal static object ParseManifestOrIndex(ImageReference reference, string mediaType, byte[] content)
    {
        if (mediaType is MediaTypes.DockerSchema1 or MediaTypes.DockerSchema1Signed)
            throw new ImagePullException($"image {reference}: Docker schema 1 manifests are not supported; push the image again with a current client");
        if (!MediaTypes.IsIndex(mediaType) && !MediaTypes.IsManifest(mediaType))
            throw new ImagePullException($"image {reference}: unsupported manifest media type '{RemoteText.Quote(mediaType, 100)}' (expected an OCI or Docker schema 2 image)");
        try
        {
            if (MediaTypes.IsIndex(mediaType))
            {
                var index = JsonSerializer.Deserialize<Index>(content, Json);
                if (index?.Manifests is null) throw new JsonException("no manifests");
                return index;
            }
            var manifest = JsonSerializer.Deserialize<Manifest>(content, Json);
            if (manifest?.Config is null || manifest.Layers is null) throw new JsonException("no config or layers");
            return manifest;
        }
        catch (JsonException e)
        {
            throw new ImagePullException($"image {reference}: malformed manifest: {JsonErrors.Describe(e)}", e);
        }
    }

    /// <summary>
    /// Picks the manifest for os/architecture from an index, variant-aware: arm64 prefers v8 (or none), arm prefers v7,
    /// other architectures prefer no variant.
    /// </summary>
    internal static Descriptor SelectPlatform(ImageReference reference, IReadOnlyList<Descriptor> manifests, string os, string architecture)
    {
        var wantedVariant = architecture switch { "arm64" => "v8", "arm" => "v7", _ => null };
        var candidates = manifests
            .Where(d => d.Platform is { } p &&
                        string.Equals(p.Os, os, StringComparison.OrdinalIgnoreCase) &&
                        string.Equals(p.Architecture, architecture, StringComparison.OrdinalIgnoreCase) &&
                        (d.MediaType is null || MediaTypes.IsManifest(d.MediaType) || MediaTypes.IsIndex(d.MediaType)))
            .ToList();
        var chosen = candidates.FirstOrDefault(d => wantedVariant is not null && d.Platform!.Variant == wantedVariant)
                     ?? candidates.FirstOrDefault(d => string.IsNullOrEmpty(d.Platform!.Variant))
                     ?? candidates.FirstOrDefault();
        if (chosen is not null) return chosen;

        var available = manifests
            .Where(d => d.Platform is { } p && p.Os != "unknown")
            .Select(d => $"{d.Platform!.Os}/{d.Platform.Architecture}{(string.IsNullOrEmpty(d.Platform.Variant) ? "" : "/" + d.Platform.Variant)}")
            .Distinct()
            .Select(p => RemoteText.Quote(p, 40))
            .Take(20)
            .ToList();
        throw new ImagePullException(
            $"image {reference} has no {os}/{architecture} variant (available: {(available.Count == 0 ? "none" : string.Join(", ", available))})");
    }

    // ---- config and layers -----------------------------------------------------------------------------------------

    private async Task<PreparedImage> PrepareAsync(
        ImageReference reference, string manifestDigest, Manifest manifest, bool allowNetwork, ProgressTracker tracker,
        ContentPins.Lease lease, CancellationToken ct)
    {
        var image = reference.ToString();
        if (!MediaTypes.IsConfig(manifest.Config!.MediaType ?? MediaTypes.OciConfig))
            throw new ImagePullException($"image {image}: config media type '{RemoteText.Quote(manifest.Config.MediaType, 100)}' is not a container image (an artifact?)");
        foreach (var layer in manifest.Layers!)
        {
            var mt = layer.MediaType ?? "";
            if (MediaTypes.IsForeignLayer(mt))
                throw new ImagePullException($"image {image}: layer {RemoteText.Quote(layer.Digest, 80)} is a foreign (non-distributable) layer ({RemoteText.Quote(mt, 100)}), which BatchRunner does not download");
            if (!MediaTypes.IsSupportedLayer(mt))
                throw new ImagePullException($"image {image}: layer {RemoteText.Quote(layer.Digest, 80)} has unsupported media type '{RemoteText.Quote(mt, 100)}'");
            if (!Digests.IsValid(layer.Digest))
                throw new ImagePullException($"image {image}: layer digest '{RemoteText.Quote(layer.Digest, 80)}' is not sha256:<hex>");
        }
        if (!Digests.IsValid(manifest.Config.Digest))
            throw new ImagePullException($"image {image}: config digest '{RemoteText.Quote(manifest.Config.Digest, 80)}' is not sha256:<hex>");
        // Before any existence check, so GC cannot remove what this pull has just found present.
        lease.Pin(manifest.Config.Digest);
        foreach (var layer in manifest.Layers) lease.Pin(layer.Digest);

        var missing = new List<Descriptor>();
        if (!Content.Contains(manifest.Config.Digest)) missing.Add(manifest.Config);
        missing.AddRange(manifest.Layers.Where(l => !IsLayerComplete(LayerPath(l.Digest)) && !Content.Contains(l.Digest)));
        tracker.AddTotal(missing.Sum(d => Math.Max(0, d.Size)));
        var toUnpack = manifest.Layers.Where(l => !Directory.Exists(LayerPath(l.Digest))).Sum(l => Math.Max(0, l.Size));
        var toWrite = missing.Sum(d => Math.Max(0, d.Size)) + toUnpack * ImageStoreOptions.UnpackedSizeFactor;
        if (toWrite > 0 && _options.SpaceCheck?.Invoke(toWrite) is { } noRoom)
            throw new ImagePullException($"image {image}: {noRoom}", transient: true);

        var (config, diffIds) = ParseConfig(image, await ReadSmallBlobAsync(reference, manifest.Config, allowNetwork, tracker, ct));
        if (diffIds.Count != manifest.Layers.Count)
            throw new ImagePullException($"image {image}: config lists {diffIds.Count} diff ids for {manifest.Layers.Count} layers");

        await Task.WhenAll(manifest.Layers.Select((layer, i) => EnsureLayerAsync(reference, layer, diffIds[i], allowNetwork, tracker, ct)));

        return new PreparedImage(
            reference,
            manifestDigest,
            config,
            manifest.Layers.Select(l => LayerPath(l.Digest)).ToList(),
            manifest.Layers.Sum(l => l.Size));
    }

    internal static (ImageConfig Config, IReadOnlyList<string> DiffIds) ParseConfig(string image, byte[] content)
    {
        try
        {
            var file = JsonSerializer.Deserialize<ConfigFile>(content, Json) ?? throw new JsonException("empty");
            var c = file.Config;
            var config = new ImageConfig(
                c?.Env ?? [],
                c?.Entrypoint,
                c?.Cmd,
                string.IsNullOrEmpty(c?.WorkingDir) ? null : c.WorkingDir,
                string.IsNullOrEmpty(c?.User) ? null : c.User)
            {
                StopSignal = string.IsNullOrEmpty(c?.StopSignal) ? null : c.StopSignal,
            };
            return (config, file.Rootfs?.DiffIds ?? []);
        }
        catch (JsonException e)
        {
            throw new ImagePullException($"image {image}: malformed image config: {JsonErrors.Describe(e)}", e);
        }
    }

    private Task EnsureBlobAsync(ImageReference reference, Descriptor blob, bool allowNetwork, ProgressTracker tracker, CancellationToken ct)
    {
        if (Content.Contains(blob.Digest)) return Task.CompletedTask;
        if (!allowNetwork)
            throw new ImagePullException($"image {reference} is not present locally (blob {blob.Digest} missing) and the pull policy is Never");

        var joined = false;
        return RunAsync();

        async Task RunAsync()
        {
            await _flights.RunAsync("blob:" + blob.Digest, async fct =>
            {
                if (Content.Contains(blob.Digest)) return;
                await _downloadSlots.WaitAsync(fct);
                try
                {
                    var sw = Stopwatch.StartNew();
                    var size = await Content.DownloadAsync(
                        blob.Digest, blob.Size > 0 ? blob.Size : null,
                        (offset, oct) => _registry.OpenBlobAsync(reference, blob.Digest, offset, oct),
                        reference.ToString(), tracker.Add, fct);
                    LogDownloaded(_logger, reference.ToString(), blob.Digest, size, sw.ElapsedMilliseconds);
                }
                finally
                {
                    _downloadSlots.Release();
                }
            }, ct, () => joined = true);
            // Someone else's download carried the bytes; count them here once it is done.
            if (joined) tracker.Add(Math.Max(0, blob.Size));
        }
    }

    /// <summary>A config blob, fetched unless stored; a stored copy that is damaged is removed and fetched again.</summary>
    private async Task<byte[]> ReadSmallBlobAsync(ImageReference reference, Descriptor blob, bool allowNetwork, ProgressTracker tracker, CancellationToken ct)
    {
        for (var round = 1; ; round++)
        {
            await EnsureBlobAsync(reference, blob, allowNetwork, tracker, ct);
            if (await Content.TryReadVerifiedAsync(blob.Digest, ct) is { } bytes) return bytes;
            LogDamagedBlob(_logger, reference.ToString(), blob.Digest);
            if (round == 2) throw new ImagePullException($"image {reference}: blob {blob.Digest} was damaged on disk again after it was fetched anew");
        }
    }

    /// <remarks>
    /// Layers are independent directories (each an overlayfs lower dir; a later layer's whiteouts and opaque markers
    /// are stored in its own directory and only take effect in the mount), so the layers of an image download and
    /// unpack in parallel, up to <see cref="ImageStoreOptions.MaxParallelUnpacks"/> at a time, with the same result
    /// as one after another. A layer whose blob is not stored is unpacked while it downloads.
    /// </remarks>
    private async Task EnsureLayerAsync(ImageReference reference, Descriptor layer, string diffId, bool allowNetwork, ProgressTracker tracker, CancellationToken ct)
    {
        var target = LayerPath(layer.Digest);
        for (var round = 1; !IsLayerComplete(target); round++)
        {
            if (round > 2)
                throw new ImagePullException($"image {reference}: layer blob {layer.Digest} was damaged on disk again after it was fetched anew");
            if (allowNetwork && !Content.Contains(layer.Digest))
            {
                var joined = false;
                await _flights.RunAsync("layer:" + layer.Digest, fct => FetchLayerAsync(reference, layer, diffId, target, tracker, fct), ct, () => joined = true);
                // Someone else's download carried the bytes; count them here once it is done.
                if (joined) tracker.Add(Math.Max(0, layer.Size));
                continue;
            }
            await EnsureBlobAsync(reference, layer, allowNetwork, tracker, ct);
            // Returns without publishing when the stored blob turned out damaged (and was removed): the next round
            // fetches it again.
            await _flights.RunAsync("layer:" + layer.Digest, fct => UnpackLayerAsync(reference, layer, diffId, target, fct), ct);
        }
    }

    /// <summary>In the layer's flight: downloads and unpacks in one pass, or unpacks the blob if it is stored by now.</summary>
    private async Task FetchLayerAsync(ImageReference reference, Descriptor layer, string diffId, string target, ProgressTracker tracker, CancellationToken ct)
    {
        if (IsLayerComplete(target)) return;
        // A partial download an earlier process left is resumed first: its bytes are on disk, not in a stream.
        if (!Content.Contains(layer.Digest) && !File.Exists(Content.PartialPath(layer.Digest)))
            await _flights.RunAsync("blob:" + layer.Digest, fct => DownloadAndUnpackAsync(reference, layer, diffId, target, tracker, fct), ct);
        if (IsLayerComplete(target)) return;
        await EnsureBlobAsync(reference, layer, allowNetwork: true, tracker, ct);
        await UnpackLayerAsync(reference, layer, diffId, target, ct);
    }

    /// <summary>
    /// Tees the layer's HTTP body into the blob file (hashed, as any download) and into the unpacker, so the unpack
    /// finishes with the download instead of starting after it. Nothing is published before both checks passed: the
    /// blob is renamed into place only when its digest matched, and the layer only after that and its diff id.
    /// </summary>
    private async Task DownloadAndUnpackAsync(ImageReference reference, Descriptor layer, string diffId, string target, ProgressTracker tracker, CancellationToken ct)
    {
        if (Content.Contains(layer.Digest) || IsLayerComplete(target)) return;
        // Always in this order (unpack, then download slot), and the other paths take one slot only: no deadlock.
        await _unpackSlots.WaitAsync(ct);
        try
        {
            await _downloadSlots.WaitAsync(ct);
            try { await StreamLayerAsync(reference, layer, diffId, target, tracker, ct); }
            finally { _downloadSlots.Release(); }
        }
        finally { _unpackSlots.Release(); }
    }

    private async Task StreamLayerAsync(ImageReference reference, Descriptor layer, string diffId, string target, ProgressTracker tracker, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        var tmp = NewLayerTempDir(layer.Digest);
        try
        {
            if (UnpackStarting is { } hook) await hook(layer.Digest, ct);
            var feed = new ChunkPipe(StreamedChunksAhead);
            var unpack = LayerUnpacker.UnpackAsync(feed.Reader, layer.MediaType!, tmp, new LayerUnpackOptions(), ct);
            // Once the unpacker stops reading (done, or the layer is corrupt) the download goes on alone: the blob is
            // still stored and verified, which tells a corrupt layer from a damaged transfer.
            _ = unpack.ContinueWith(_ => feed.CloseReader(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            long size;
            try
            {
                size = await Content.DownloadAsync(
                    layer.Digest, layer.Size > 0 ? layer.Size : null,
                    (offset, oct) => _registry.OpenBlobAsync(reference, layer.Digest, offset, oct),
                    reference.ToString(), tracker.Add, ct, feed.WriteAsync);
                feed.Complete();
            }
            catch (Exception e)
            {
                feed.Complete(e);
                // The unpacker writes into tmp until it has seen the failure: wait for it before removing tmp.
                await unpack.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                throw;
            }
            var downloadMs = sw.ElapsedMilliseconds;
            LayerUnpackResult result;
            try { result = await unpack; }
            catch (Exception e) when (e is NotSupportedException or InvalidDataException or LayerUnpackException)
            {
                // The blob's digest matched: these are the publisher's bytes, and they are not a layer we can unpack.
                throw CannotUnpack(reference, layer, e);
            }
            if (!string.Equals(result.DiffId, diffId, StringComparison.Ordinal)) throw WrongDiffId(reference, layer, result.DiffId, diffId);
            var flush = Stopwatch.StartNew();
            PublishLayer(tmp, target, result.DiffId);
            LogStreamed(_logger, reference.ToString(), layer.Digest, size, result.UncompressedBytes, downloadMs, sw.ElapsedMilliseconds, flush.ElapsedMilliseconds);
        }
        catch
        {
            DeleteTree(tmp);
            throw;
        }
    }

    /// <summary>Chunks of the HTTP body (up to 64 KiB each) buffered between the download and a slower unpacker.</summary>
    private const int StreamedChunksAhead = 64;

    private string NewLayerTempDir(string layerDigest)
    {
        // Short temp name in the same filesystem: the rename that publishes it is atomic, so jobs only ever see whole layers.
        var tmp = Path.Combine(LayersTempDir, Digests.Hex(layerDigest)[..16] + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(tmp);
        return tmp;
    }

    private static ImagePullException CannotUnpack(ImageReference reference, Descriptor layer, Exception e) =>
        new($"image {reference}: layer {layer.Digest} cannot be unpacked: {e.Message}", e);

    private static ImagePullException WrongDiffId(ImageReference reference, Descriptor layer, string actual, string expected) =>
        new($"image {reference}: layer {layer.Digest} unpacks to diff id {actual}, but the image config says {expected}");

    private async Task UnpackLayerAsync(ImageReference reference, Descriptor layer, string diffId, string target, CancellationToken ct)
    {
        if (IsLayerComplete(target)) return;
        await _unpackSlots.WaitAsync(ct);
        try { await UnpackStoredLayerAsync(reference, layer, diffId, target, ct); }
        finally { _unpackSlots.Release(); }
    }

    private async Task UnpackStoredLayerAsync(ImageReference reference, Descriptor layer, string diffId, string target, CancellationToken ct)
    {
        if (IsLayerComplete(target)) return;
        var sw = Stopwatch.StartNew();
        var tmp = NewLayerTempDir(layer.Digest);
        try
        {
            if (UnpackStarting is { } hook) await hook(layer.Digest, ct);
            LayerUnpackResult result;
            try
            {
                await using var blob = Content.OpenRead(layer.Digest);
                result = await LayerUnpacker.UnpackAsync(blob, layer.MediaType!, tmp, new LayerUnpackOptions(), ct);
            }
            catch (Exception e) when (e is NotSupportedException or InvalidDataException or LayerUnpackException)
            {
                if (!Content.IsIntact(layer.Digest)) { LogDamagedBlob(_logger, reference.ToString(), layer.Digest); DeleteTree(tmp); return; }
                throw CannotUnpack(reference, layer, e);
            }
            catch (FileNotFoundException)
            {
                DeleteTree(tmp);
                return; // removed as damaged by a concurrent pull's check: the caller's next round fetches it
            }
            if (!string.Equals(result.DiffId, diffId, StringComparison.Ordinal))
            {
                if (!Content.IsIntact(layer.Digest)) { LogDamagedBlob(_logger, reference.ToString(), layer.Digest); DeleteTree(tmp); return; }
                throw WrongDiffId(reference, layer, result.DiffId, diffId);
            }
            var flush = Stopwatch.StartNew();
            PublishLayer(tmp, target, result.DiffId);
            LogUnpacked(_logger, reference.ToString(), layer.Digest, result.UncompressedBytes, sw.ElapsedMilliseconds, flush.ElapsedMilliseconds);
        }
        catch
        {
            DeleteTree(tmp);
            throw;
        }
    }

    // ---- layer completion markers ----------------------------------------------------------------------------------

    /// <summary>Suffix of the file beside a layer directory that says the directory is complete and on disk.</summary>
    private const string LayerCompleteSuffix = ".complete";

    /// <summary>
    /// Whether the layer directory at <paramref name="layerPath"/> may be used: its completion marker exists. A
    /// directory without one is a leftover of a crash (or of a version that did not flush layers) and is never served.
    /// </summary>
    private static bool IsLayerComplete(string layerPath) => File.Exists(layerPath + LayerCompleteSuffix);

    /// <summary>
    /// Moves a verified layer from <c>layers/tmp</c> into place, in the order that keeps a crash at any point from
    /// leaving a half-written layer that looks complete: (1) syncfs, so every file of the tree is on disk; (2) rename
    /// the directory and flush <c>layers/sha256</c>; (3) write the completion marker (flushed) and flush the directory
    /// again. A crash before (3) leaves a directory without a marker, which the next start removes.
    /// </summary>
    private void PublishLayer(string tmp, string target, string diffId)
    {
        Durable.SyncFileSystemOf(tmp);
        // A directory without a marker (a crash between rename and marker) is in the way: it is incomplete by definition.
        if (Directory.Exists(target)) MoveAsideAndRemove(target);
        Directory.Move(tmp, target);
        Durable.FlushDirectory(LayersDir);
        Durable.WriteFile(Path.Combine(LayersTempDir, Path.GetFileName(target) + LayerCompleteSuffix + "." + Guid.NewGuid().ToString("N")[..8]),
            target + LayerCompleteSuffix, System.Text.Encoding.UTF8.GetBytes(diffId + "\n"));
    }

    private void MoveAsideAndRemove(string layerDir)
    {
        var aside = Path.Combine(LayersTempDir, "gc-" + Path.GetFileName(layerDir)[..16] + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.Move(layerDir, aside);
        TreeRemover.Remove(aside);
    }

    /// <summary>
    /// At start-up: moves layer directories without a completion marker into <c>layers/tmp</c> (removed with it) and
    /// deletes markers whose directory is gone. Returns how many directories were incomplete.
    /// </summary>
    private int SetAsideIncompleteLayers()
    {
        var incomplete = 0;
        foreach (var dir in new DirectoryInfo(LayersDir).EnumerateDirectories())
        {
            if (IsLayerComplete(dir.FullName)) continue;
            Directory.Move(dir.FullName, Path.Combine(LayersTempDir, "incomplete-" + dir.Name[..Math.Min(16, dir.Name.Length)] + "-" + Guid.NewGuid().ToString("N")[..8]));
            incomplete++;
        }
        foreach (var marker in new DirectoryInfo(LayersDir).EnumerateFiles("*" + LayerCompleteSuffix))
            if (!Directory.Exists(marker.FullName[..^LayerCompleteSuffix.Length])) marker.Delete();
        return incomplete;
    }

    // ---- records ---------------------------------------------------------------------------------------------------

    private string RecordPath(string reference) =>
        Path.Combine(ImagesDir, Digests.Hex(Digests.Sha256(System.Text.Encoding.UTF8.GetBytes(reference)))[..32] + ".json");

    private ImageRecord? ReadRecord(string reference)
    {
        var path = RecordPath(reference);
        try
        {
            var r = JsonSerializer.Deserialize<ImageRecord>(File.ReadAllBytes(path), Json);
            return r?.Reference == reference ? r : null;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or JsonException) { return null; }
    }

    private async Task WriteRecordAsync(ImageRecord record, CancellationToken ct)
    {
        var path = RecordPath(record.Reference);
        var tmp = path + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        // Flushed before the rename: a record cut short by a crash would lose the image (ReadRecord ignores it).
        await Durable.WriteFileAsync(tmp, path, JsonSerializer.SerializeToUtf8Bytes(record, Json), ct);
        // After the rename and before the writer unpins: see ContentPins for why this order makes GC safe.
        _pins.RecordsChanged();
    }

    private void TouchLastUsed(string key, PreparedImage image, DateTime lastWritten)
    {
        var now = DateTime.UtcNow;
        if (now - lastWritten < LastUsedResolution) return;
        _resolved[key] = (image, now);
        try
        {
            var path = RecordPath(key);
            // A record deleted meanwhile (DeleteAsync, GC) must stay deleted: touching must not bring it back.
            if (!File.Exists(path)) return;
            var tmp = path + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
            Durable.WriteFile(tmp, path, JsonSerializer.SerializeToUtf8Bytes(new ImageRecord(key, image.ManifestDigest, now), Json));
        }
        catch (IOException e)
        {
            // Losing a last-use update only makes GC a little eager; the pull itself succeeded.
            LogRecordWriteFailed(_logger, key, e.Message);
        }
    }

    private static void DeleteTree(string path) => TreeRemover.Remove(path);

    // ---- progress --------------------------------------------------------------------------------------------------

    private sealed class ProgressTracker(IProgress<PullProgress>? progress)
    {
        private long _done, _total, _lastReportTicks;

        public void AddTotal(long bytes) => Interlocked.Add(ref _total, bytes);

        public void Add(long bytes)
        {
            var done = Interlocked.Add(ref _done, bytes);
            if (progress is null) return;
            var now = Environment.TickCount64;
            var last = Interlocked.Read(ref _lastReportTicks);
            if (now - last < ProgressInterval.TotalMilliseconds || Interlocked.CompareExchange(ref _lastReportTicks, now, last) != last) return;
            progress.Report(new PullProgress(done, Math.Max(done, Interlocked.Read(ref _total))));
        }

        public void Complete()
        {
            var total = Interlocked.Read(ref _total);
            progress?.Report(new PullProgress(Math.Max(total, Interlocked.Read(ref _done)), total));
        }
    }

    // ---- JSON shapes (OCI image spec; Docker schema 2 uses the same field names) ---------------------------------

    /// <summary>Reference → manifest digest, as stored under images/.</summary>
    public sealed record ImageRecord(string Reference, string ManifestDigest, DateTime LastUsedUtc);

    internal sealed record Platform(string? Architecture, string? Os, string? Variant);
    internal sealed record Descriptor(string? MediaType, string Digest, long Size, Platform? Platform);
    internal sealed record Index(IReadOnlyList<Descriptor> Manifests);
    internal sealed record Manifest(Descriptor? Config, IReadOnlyList<Descriptor>? Layers);
    internal sealed record ConfigFile(ContainerConfig? Config, RootFs? Rootfs);
    internal sealed record ContainerConfig(List<string>? Env, List<string>? Entrypoint, List<string>? Cmd, string? WorkingDir, string? User, string? StopSignal = null);
    internal sealed record RootFs([property: JsonPropertyName("diff_ids")] List<string>? DiffIds);

    [LoggerMessage(EventId = 4201, Level = LogLevel.Information, Message = "Prepared image {Image} ({Digest}, {LayerCount} layers) in {ElapsedMs} ms")]
    private static partial void LogPrepared(ILogger logger, string image, string digest, int layerCount, long elapsedMs);

    [LoggerMessage(EventId = 4202, Level = LogLevel.Information, Message = "Downloaded blob {Digest} of {Image}: {Bytes} bytes in {ElapsedMs} ms")]
    private static partial void LogDownloaded(ILogger logger, string image, string digest, long bytes, long elapsedMs);

    [LoggerMessage(EventId = 4203, Level = LogLevel.Information, Message = "Unpacked layer {Digest} of {Image}: {Bytes} bytes in {ElapsedMs} ms ({FlushMs} ms of it flushing it to disk)")]
    private static partial void LogUnpacked(ILogger logger, string image, string digest, long bytes, long elapsedMs, long flushMs);

    [LoggerMessage(EventId = 4208, Level = LogLevel.Information, Message = "Downloaded and unpacked layer {Digest} of {Image} in one pass: {Bytes} bytes ({UncompressedBytes} unpacked), download done after {DownloadMs} ms, layer in {ElapsedMs} ms ({FlushMs} ms of it flushing it to disk)")]
    private static partial void LogStreamed(ILogger logger, string image, string digest, long bytes, long uncompressedBytes, long downloadMs, long elapsedMs, long flushMs);

    [LoggerMessage(EventId = 4206, Level = LogLevel.Warning, Message = "Stored blob {Digest} of {Image} does not match its digest (damaged on disk); removed it to fetch it again")]
    private static partial void LogDamagedBlob(ILogger logger, string image, string digest);

    [LoggerMessage(EventId = 4207, Level = LogLevel.Warning, Message = "Removed {Count} unpacked layers without a completion marker (left by a crash or an older version); they are unpacked again from their blobs when used")]
    private static partial void LogIncompleteLayers(ILogger logger, int count);

    [LoggerMessage(EventId = 4204, Level = LogLevel.Warning, Message = "Could not record last use of {Image}: {Reason}")]
    private static partial void LogRecordWriteFailed(ILogger logger, string image, string reason);
}
