using System.Collections.Concurrent;
using System.Text.Json;
using BatchRunner.Oci.Registry;
using Microsoft.Extensions.Logging;

namespace BatchRunner.Oci.Store;

// Listing, deletion and garbage collection. What is on disk is the only truth: blobs/sha256 and layers/sha256
// are swept against what the remaining records (and in-use images) reference, so leftovers of failed imports
// and of a crash between "record removed" and "content removed" go at the next sweep.
public sealed partial class ImageStore
{
    // Manifests and configs are read whole; a "manifest" bigger than this is not one (and is not parsed).
    private const long MaxManifestBytes = 4 << 20;
    private const int MaxSweepRestarts = 8;

    private readonly SemaphoreSlim _gcLock = new(1, 1);
    // Unpacked layers never change once renamed into place, so their size is computed once per process.
    private readonly ConcurrentDictionary<string, long> _layerSizes = new(StringComparer.Ordinal);

    /// <summary>Every stored image with its size on disk (see <see cref="CachedImage"/> for how shared layers count).</summary>
    public IReadOnlyList<CachedImage> List()
    {
        var records = ListImages();
        var inventory = TakeInventory();
        var closures = records.Select(r => Closure(r.ManifestDigest)).ToList();
        var referencedBy = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var closure in closures)
            foreach (var d in closure)
                referencedBy[d] = referencedBy.GetValueOrDefault(d) + 1;

        return records
            .Select((r, i) => new CachedImage(
                r.Reference,
                r.ManifestDigest,
                closures[i].Sum(inventory.SizeOf),
                closures[i].Where(d => referencedBy[d] == 1).Sum(inventory.SizeOf),
                r.LastUsedUtc))
            .OrderBy(c => c.Name, StringComparer.Ordinal)
            .ToList();
    }

    /// <summary>The stored image with this name ("myorg/tool:1" finds docker.io/myorg/tool:1), or null.</summary>
    /// <exception cref="FormatException">The name is not an image reference.</exception>
    public CachedImage? Find(string name)
    {
        var key = ImageReference.Parse(name).ToString();
        return ReadRecord(key) is null ? null : List().FirstOrDefault(c => c.Name == key);
    }

    /// <summary>Bytes of blobs and unpacked layers on disk (temp files of pulls in progress not included).</summary>
    public long DiskUsageBytes() => TakeInventory().TotalBytes;

    /// <summary>
    /// Removes the image's record, then every blob and unpacked layer no remaining image references (layers
    /// shared with other images stay).
    /// </summary>
    /// <param name="inUse">True for a manifest digest a queued or running job uses: such an image is refused, and
    /// the content of any in-use image is kept by the sweep.</param>
    /// <exception cref="ImageNotFoundException">No record for the name.</exception>
    /// <exception cref="ImageInUseException">The image's manifest digest is in use.</exception>
    /// <exception cref="FormatException">The name is not an image reference.</exception>
    public async Task DeleteAsync(string name, Func<string, bool> inUse, CancellationToken ct = default)
    {
        var key = ImageReference.Parse(name).ToString();
        await _gcLock.WaitAsync(ct);
        try
        {
            var record = ReadRecord(key) ?? throw new ImageNotFoundException(key);
            if (inUse(record.ManifestDigest)) throw new ImageInUseException(key, record.ManifestDigest);
            RemoveRecord(key);
            var sweep = Sweep(inUse, ct);
            LogDeleted(_logger, key, record.ManifestDigest, sweep.Blobs, sweep.Layers);
        }
        finally
        {
            _gcLock.Release();
        }
    }

    /// <summary>
    /// When blobs and unpacked layers take more than <paramref name="budgetBytes"/>, removes unreferenced content,
    /// then least-recently-used images (and whatever only they referenced) until the store fits.
    /// </summary>
    /// <remarks>
    /// Never removes an image whose manifest digest is in <paramref name="inUseManifestDigests"/>, nor content any
    /// such image references, nor anything a pull or import in progress has pinned. When in-use images alone exceed
    /// the budget, GC stops there and <see cref="GcResult.BytesAfter"/> stays above it.
    /// </remarks>
    public async Task<GcResult> GarbageCollectAsync(long budgetBytes, ISet<string> inUseManifestDigests, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(budgetBytes);
        Func<string, bool> inUse = inUseManifestDigests.Contains;
        await _gcLock.WaitAsync(ct);
        try
        {
            var before = TakeInventory().TotalBytes;
            var removed = new List<string>();
            if (before <= budgetBytes) return new GcResult(before, before, removed, 0, 0);

            // Unreferenced content first: freeing it costs no image.
            var sweep = Sweep(inUse, ct);
            var (blobs, layers, total) = (sweep.Blobs, sweep.Layers, sweep.TotalBytes);
            var candidates = ListImages()
                .Where(r => !inUse(r.ManifestDigest))
                .OrderBy(r => r.LastUsedUtc)
                .ThenBy(r => r.Reference, StringComparer.Ordinal)
                .ToList();
            foreach (var candidate in candidates)
            {
                if (total <= budgetBytes) break;
                ct.ThrowIfCancellationRequested();
                // Re-read: a pull may have moved the tag to another manifest or used it since the listing.
                var current = ReadRecord(candidate.Reference);
                if (current is null || current != candidate || _pins.IsPinned(current.ManifestDigest)) continue;
                RemoveRecord(candidate.Reference);
                removed.Add(candidate.Reference);
                sweep = Sweep(inUse, ct);
                (blobs, layers, total) = (blobs + sweep.Blobs, layers + sweep.Layers, sweep.TotalBytes);
            }
            LogCollected(_logger, before, total, budgetBytes, removed.Count, blobs, layers);
            return new GcResult(before, total, removed, blobs, layers);
        }
        finally
        {
            _gcLock.Release();
        }
    }

    private void RemoveRecord(string key)
    {
        _resolved.TryRemove(key, out _);
        File.Delete(RecordPath(key));
    }

    private readonly record struct SweepResult(int Blobs, int Layers, long TotalBytes);

    /// <summary>Removes every blob and layer directory that no record, in-use image or pin keeps.</summary>
    private SweepResult Sweep(Func<string, bool> inUse, CancellationToken ct)
    {
        int blobs = 0, layers = 0;
        for (var attempt = 0; ; attempt++)
        {
            var version = _pins.RecordsVersion;
            var inventory = TakeInventory();
            var keep = new HashSet<string>(StringComparer.Ordinal);
            foreach (var record in ListImages()) keep.UnionWith(Closure(record.ManifestDigest));
            // An in-use image may have lost its record (its tag re-pulled with Always): keep it by its manifest.
            foreach (var digest in inventory.Blobs.Keys)
                if (!keep.Contains(digest) && inUse(digest)) keep.UnionWith(Closure(digest));

            var restart = false;
            foreach (var (digest, _) in inventory.Layers.Where(l => !keep.Contains(l.Key)))
            {
                ct.ThrowIfCancellationRequested();
                // Renamed aside under the lock (fast), deleted outside it (slow for big layers).
                var aside = Path.Combine(LayersTempDir, "gc-" + Digests.Hex(digest)[..16] + "-" + Guid.NewGuid().ToString("N")[..8]);
                var outcome = _pins.TryRemove(digest, version, () =>
                {
                    // Marker first: from then on the directory is incomplete for every reader, so a crash before
                    // the rename leaves a directory the next start removes, never a layer served half-deleted.
                    File.Delete(LayerPath(digest) + LayerCompleteSuffix);
                    Directory.Move(LayerPath(digest), aside);
                });
                if (outcome == ContentPins.RemoveOutcome.RecordsChanged) { restart = true; break; }
                if (outcome != ContentPins.RemoveOutcome.Removed) continue;
                _layerSizes.TryRemove(digest, out _);
                TreeRemover.Remove(aside);
                layers++;
            }
            if (!restart)
            {
                foreach (var (digest, _) in inventory.Blobs.Where(b => !keep.Contains(b.Key)))
                {
                    var outcome = _pins.TryRemove(digest, version, () => File.Delete(Content.BlobPath(digest)));
                    if (outcome == ContentPins.RemoveOutcome.RecordsChanged) { restart = true; break; }
                    if (outcome == ContentPins.RemoveOutcome.Removed) blobs++;
                }
            }
            if (!restart || attempt >= MaxSweepRestarts) return new SweepResult(blobs, layers, TakeInventory().TotalBytes);
        }
    }

    /// <summary>The digests a manifest needs: itself, its config and its layers (children too, for an index).</summary>
    private HashSet<string> Closure(string manifestDigest)
    {
        var result = new HashSet<string>(StringComparer.Ordinal);
        AddClosure(manifestDigest, result, depth: 0);
        return result;
    }

    private void AddClosure(string digest, HashSet<string> into, int depth)
    {
        if (!Digests.IsValid(digest) || !into.Add(digest) || depth > MaxManifestDepth) return;
        var path = Content.BlobPath(digest);
        byte[] bytes;
        try
        {
            if (new FileInfo(path).Length > MaxManifestBytes) return;
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { return; }
        try
        {
            using var doc = JsonDocument.Parse(bytes);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) return;
            if (root.TryGetProperty("config", out var config) && config.ValueKind == JsonValueKind.Object &&
                config.TryGetProperty("digest", out var cd) && cd.GetString() is { } configDigest && Digests.IsValid(configDigest))
                into.Add(configDigest);
            if (root.TryGetProperty("layers", out var layers) && layers.ValueKind == JsonValueKind.Array)
                foreach (var l in layers.EnumerateArray())
                    if (l.ValueKind == JsonValueKind.Object && l.TryGetProperty("digest", out var ld) && ld.GetString() is { } layerDigest && Digests.IsValid(layerDigest))
                        into.Add(layerDigest);
            if (root.TryGetProperty("manifests", out var manifests) && manifests.ValueKind == JsonValueKind.Array)
                foreach (var m in manifests.EnumerateArray())
                    if (m.ValueKind == JsonValueKind.Object && m.TryGetProperty("digest", out var md) && md.GetString() is { } child)
                        AddClosure(child, into, depth + 1);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { /* a layer or config blob: no references */ }
    }

    private sealed record Inventory(Dictionary<string, long> Blobs, Dictionary<string, long> Layers)
    {
        public long TotalBytes => Blobs.Values.Sum() + Layers.Values.Sum();
        public long SizeOf(string digest) => Blobs.GetValueOrDefault(digest) + Layers.GetValueOrDefault(digest);
    }

    private Inventory TakeInventory()
    {
        var blobs = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var f in new DirectoryInfo(Path.Combine(_options.Root, "blobs", "sha256")).EnumerateFiles())
        {
            var digest = Digests.Sha256Prefix + f.Name;
            if (Digests.IsValid(digest)) blobs[digest] = f.Length;
        }
        var layers = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var d in new DirectoryInfo(LayersDir).EnumerateDirectories())
        {
            var digest = Digests.Sha256Prefix + d.Name;
            if (!Digests.IsValid(digest)) continue;
            try { layers[digest] = _layerSizes.GetOrAdd(digest, static (_, dir) => TreeBytes(dir), d.FullName); }
            catch (DirectoryNotFoundException) { /* removed meanwhile */ }
        }
        return new Inventory(blobs, layers);
    }

    /// <summary>Apparent size of the files in a layer tree (symlinks count their own length; directories nothing).</summary>
    private static long TreeBytes(string root)
    {
        long total = 0;
        var pending = new Stack<DirectoryInfo>();
        pending.Push(new DirectoryInfo(root));
        var options = new EnumerationOptions { AttributesToSkip = 0, IgnoreInaccessible = true, RecurseSubdirectories = false };
        while (pending.TryPop(out var dir))
        {
            foreach (var entry in dir.EnumerateFileSystemInfos("*", options))
            {
                if (entry is DirectoryInfo sub && (sub.Attributes & FileAttributes.ReparsePoint) == 0) pending.Push(sub);
                else if (entry is FileInfo file) total += file.Length;
            }
        }
        return total;
    }

    [LoggerMessage(EventId = 4210, Level = LogLevel.Information, Message = "Deleted image {Image} ({Digest}); removed {Blobs} blobs and {Layers} layers no other image uses")]
    private static partial void LogDeleted(ILogger logger, string image, string digest, int blobs, int layers);

    [LoggerMessage(EventId = 4211, Level = LogLevel.Information, Message = "Image GC: {BytesBefore} → {BytesAfter} bytes (budget {BudgetBytes}); removed {Images} images, {Blobs} blobs, {Layers} layers")]
    private static partial void LogCollected(ILogger logger, long bytesBefore, long bytesAfter, long budgetBytes, int images, int blobs, int layers);
}
