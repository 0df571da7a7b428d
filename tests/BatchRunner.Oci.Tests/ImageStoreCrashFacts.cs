using System.Text.Json;
using BatchRunner.Oci.Store;
using BatchRunner.Testing;

namespace BatchRunner.Oci.Tests;

/// <summary>
/// What a crash (or a store an older version wrote without flushing) can leave on disk, simulated file by file, and
/// what a restarted store makes of it: a half-written entry is never served, it is detected and fetched (or unpacked)
/// again. A real registry on 127.0.0.1 serves the images.
/// </summary>
public sealed class ImageStoreCrashFacts : IAsyncLifetime
{
    private TestRegistry _registry = null!;
    private readonly string _root = Directory.CreateTempSubdirectory("br-imagecrash-").FullName;
    // A store disposes its transport: each store gets its own, and _http is the latest one's.
    private RecordingHandler _http = new();

    public async Task InitializeAsync() => _registry = await TestRegistry.StartAsync();

    public async Task DisposeAsync()
    {
        await _registry.DisposeAsync();
        Directory.Delete(_root, recursive: true);
    }

    private ImageStore NewStore() => new(new ImageStoreOptions { Root = _root, RegistryPolicy = TestPolicies.LoopbackRegistries }, httpHandler: _http = new RecordingHandler());

    [Fact]
    public async Task PullAsync_UnpacksLayerAgain_WhenLayerDirectoryHasNoCompletionMarker()
    {
        var reference = ImageReference.Parse(await TestImages.PushBusyboxAsync(_registry));
        string layer;
        using (var first = NewStore())
            layer = (await first.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None)).LayerPaths[0];
        // A crash after the directory's rename and before its marker, while files were still in the page cache:
        // the directory exists with a file cut short and another missing.
        File.Delete(layer + ".complete");
        File.WriteAllText(Path.Combine(layer, "bin", "busybox"), "cut");
        File.Delete(Path.Combine(layer, "etc", "passwd"));
        await _registry.StopAsync();

        using var restarted = NewStore();
        Assert.False(Directory.Exists(layer)); // removed at start, before any pull could use it
        var image = await restarted.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None);

        Assert.Empty(_http.Requests); // unpacked again from the stored blob
        Assert.True(new FileInfo(Path.Combine(image.LayerPaths[0], "bin", "busybox")).Length > 100_000);
        Assert.True(File.Exists(Path.Combine(image.LayerPaths[0], "etc", "passwd")));
        Assert.True(File.Exists(image.LayerPaths[0] + ".complete"));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(_root, "layers", "tmp")));
    }

    [Fact]
    public async Task PullAsync_FetchesLayerBlobAgain_WhenStoredBlobIsTruncated()
    {
        var reference = ImageReference.Parse(await TestImages.PushBusyboxAsync(_registry));
        string layerDigest;
        using (var first = NewStore())
        {
            var pulled = await first.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None);
            layerDigest = "sha256:" + Path.GetFileName(pulled.LayerPaths[0]);
        }
        // The blob survived a crash only in part, and the layer was never published (no marker).
        var blob = Path.Combine(_root, "blobs", "sha256", layerDigest["sha256:".Length..]);
        var bytes = await File.ReadAllBytesAsync(blob);
        await File.WriteAllBytesAsync(blob, bytes[..(bytes.Length / 2)]);
        File.Delete(Path.Combine(_root, "layers", "sha256", layerDigest["sha256:".Length..] + ".complete"));

        using var restarted = NewStore();
        var image = await restarted.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None);

        Assert.Equal([$"GET /v2/{reference.Repository}/blobs/{layerDigest}"], _http.Requests.Where(r => r.Contains("/blobs/")));
        Assert.Equal(bytes, await File.ReadAllBytesAsync(blob));
        Assert.True(new FileInfo(Path.Combine(image.LayerPaths[0], "bin", "busybox")).Length > 100_000);
    }

    [Fact]
    public async Task PullAsync_FetchesManifestAndConfigAgain_WhenStoredCopiesAreDamaged()
    {
        var reference = ImageReference.Parse(await TestImages.PushBusyboxAsync(_registry));
        string manifestDigest;
        using (var first = NewStore())
            manifestDigest = (await first.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None)).ManifestDigest;
        var blobs = Path.Combine(_root, "blobs", "sha256");
        var manifestPath = Path.Combine(blobs, manifestDigest["sha256:".Length..]);
        using var doc = JsonDocument.Parse(await File.ReadAllBytesAsync(manifestPath));
        var configDigest = doc.RootElement.GetProperty("config").GetProperty("digest").GetString()!;
        // A manifest of zeros (its size reached the disk, its data did not) and an empty config.
        await File.WriteAllBytesAsync(manifestPath, new byte[new FileInfo(manifestPath).Length]);
        await File.WriteAllBytesAsync(Path.Combine(blobs, configDigest["sha256:".Length..]), []);

        using var restarted = NewStore();
        var image = await restarted.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None);

        Assert.Equal(manifestDigest, image.ManifestDigest);
        Assert.Equal(["/bin/sh"], image.Config.Cmd);
        Assert.Contains(_http.Requests, r => r.Contains("/manifests/"));
        Assert.Contains($"GET /v2/{reference.Repository}/blobs/{configDigest}", _http.Requests);
        Assert.DoesNotContain(_http.Requests, r => r.EndsWith(Path.GetFileName(image.LayerPaths[0]))); // the layer was intact
    }

    [Fact]
    public async Task PullAsync_FailsClearly_WhenStoredBlobIsDamagedAndPolicyIsNever()
    {
        var reference = ImageReference.Parse(await TestImages.PushBusyboxAsync(_registry));
        string layerHex;
        using (var first = NewStore())
            layerHex = Path.GetFileName((await first.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None)).LayerPaths[0]);
        var blob = Path.Combine(_root, "blobs", "sha256", layerHex);
        await File.WriteAllBytesAsync(blob, (await File.ReadAllBytesAsync(blob))[..1000]);
        File.Delete(Path.Combine(_root, "layers", "sha256", layerHex + ".complete"));

        using var restarted = NewStore();
        var e = await Assert.ThrowsAsync<ImagePullException>(() => restarted.PullAsync(reference, PullPolicy.Never, null, CancellationToken.None));

        Assert.Contains($"blob sha256:{layerHex} missing", e.Message);
        Assert.False(File.Exists(blob)); // the damaged copy is gone: the next pull with network fetches it
        Assert.False(Directory.Exists(Path.Combine(_root, "layers", "sha256", layerHex)));
    }

    [Fact]
    public async Task ListImages_IgnoresRecord_WhenItWasCutShort()
    {
        var reference = ImageReference.Parse(await TestImages.PushBusyboxAsync(_registry));
        using (var first = NewStore())
            await first.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None);
        var record = Assert.Single(Directory.GetFiles(Path.Combine(_root, "images"), "*.json"));
        await File.WriteAllBytesAsync(record, (await File.ReadAllBytesAsync(record))[..10]);

        using var restarted = NewStore();

        Assert.Empty(restarted.ListImages());
        var image = await restarted.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None);
        Assert.Equal(reference.ToString(), Assert.Single(restarted.ListImages()).Reference);
        Assert.True(File.Exists(image.LayerPaths[0] + ".complete"));
    }
}
