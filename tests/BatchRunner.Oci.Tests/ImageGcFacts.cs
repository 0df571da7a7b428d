using System.Formats.Tar;
using BatchRunner.Oci.Store;
using BatchRunner.Testing;

namespace BatchRunner.Oci.Tests;

/// <summary>
/// Deletion and budget GC over images imported from the umoci test layout: "busybox" (one layer) and "layered"
/// (that same bottom layer plus two), so the two images share a layer.
/// </summary>
public sealed class ImageGcFacts : IDisposable
{
    private static readonly HashSet<string> NoneInUse = [];
    private readonly string _dir = Directory.CreateTempSubdirectory("br-gc-").FullName;
    private string Root => Path.Combine(_dir, "store");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private ImageStore NewStore(HttpMessageHandler? http = null) => new(new ImageStoreOptions { Root = Root, RegistryPolicy = TestPolicies.LoopbackRegistries }, httpHandler: http ?? new NoNetworkHandler());

    private async Task<(PreparedImage Busybox, PreparedImage Layered)> ImportBothAsync(ImageStore store)
    {
        var archive = Path.Combine(_dir, "layout.tar");
        if (!File.Exists(archive)) await ImageArchives.TarLayoutAsync(await TestImages.LayoutAsync(), archive, gzip: false);
        PreparedImage busybox, layered;
        await using (var s = File.OpenRead(archive)) busybox = await store.ImportAsync(s, "gc/a:busybox", CancellationToken.None);
        await using (var s = File.OpenRead(archive)) layered = await store.ImportAsync(s, "gc/b:layered", CancellationToken.None);
        return (busybox, layered);
    }

    [Fact]
    public async Task List_CountsSharedLayerInEachImage_AndOnlyOnceOnDisk()
    {
        using var store = NewStore();
        var (busybox, layered) = await ImportBothAsync(store);

        var list = store.List();

        var a = list.Single(i => i.Name == "docker.io/gc/a:busybox");
        var b = list.Single(i => i.Name == "docker.io/gc/b:layered");
        Assert.Equal(busybox.ManifestDigest, a.ManifestDigest);
        Assert.Equal(layered.ManifestDigest, b.ManifestDigest);
        Assert.True(a.SizeBytes > 1_000_000, $"busybox is {a.SizeBytes} bytes");
        var shared = a.SizeBytes - a.UniqueBytes;
        Assert.True(shared > 1_000_000, "the busybox layer (blob and unpacked) is shared with the layered image");
        Assert.Equal(b.SizeBytes - b.UniqueBytes, shared);
        Assert.Equal(a.UniqueBytes + b.UniqueBytes + shared, store.DiskUsageBytes());
        Assert.Equal(a, store.Find("gc/a:busybox"));
        Assert.Null(store.Find("gc/a:unknown"));
    }

    [Fact]
    public async Task GarbageCollectAsync_RemovesLeastRecentlyUsedImage_UntilUnderBudget()
    {
        using var store = NewStore();
        var (busybox, layered) = await ImportBothAsync(store);
        var keptSize = store.Find("gc/b:layered")!.SizeBytes;

        var result = await store.GarbageCollectAsync(keptSize, NoneInUse, CancellationToken.None);

        // busybox was imported first, so it is the least recently used; removing it frees only what the layered
        // image does not share, which is enough.
        Assert.Equal(["docker.io/gc/a:busybox"], result.RemovedImages);
        Assert.Equal(keptSize, result.BytesAfter);
        Assert.Equal(keptSize, store.DiskUsageBytes());
        Assert.False(store.Content.Contains(busybox.ManifestDigest));
        Assert.True(Directory.Exists(busybox.LayerPaths[0]), "the shared bottom layer belongs to the kept image too");
        Assert.All(layered.LayerPaths, p => Assert.True(Directory.Exists(p)));
        using var restarted = NewStore();
        var again = await restarted.PullAsync(layered.Reference, PullPolicy.Never, null, CancellationToken.None);
        Assert.Equal(layered.ManifestDigest, again.ManifestDigest);
        await Assert.ThrowsAsync<ImagePullException>(() => restarted.PullAsync(busybox.Reference, PullPolicy.Never, null, CancellationToken.None));
    }

    [Fact]
    public async Task GarbageCollectAsync_KeepsInUseImageAndItsSharedLayer_WhenBudgetIsTiny()
    {
        using var store = NewStore();
        var (busybox, layered) = await ImportBothAsync(store);
        var busyboxSize = store.Find("gc/a:busybox")!.SizeBytes;

        var result = await store.GarbageCollectAsync(1, new HashSet<string> { busybox.ManifestDigest }, CancellationToken.None);

        Assert.Equal(["docker.io/gc/b:layered"], result.RemovedImages);
        Assert.Equal(busyboxSize, result.BytesAfter);
        Assert.Equal(2, result.RemovedLayers);
        Assert.True(Directory.Exists(busybox.LayerPaths[0]));
        Assert.False(Directory.Exists(layered.LayerPaths[1]));
        Assert.False(Directory.Exists(layered.LayerPaths[2]));
        Assert.False(store.Content.Contains(layered.ManifestDigest));
        Assert.Equal("docker.io/gc/a:busybox", Assert.Single(store.List()).Name);
        var pulled = await store.PullAsync(busybox.Reference, PullPolicy.Never, null, CancellationToken.None);
        Assert.True(File.Exists(Path.Combine(pulled.LayerPaths[0], "bin", "busybox")));
    }

    [Fact]
    public async Task GarbageCollectAsync_RemovesNothing_WhenUnderBudget()
    {
        using var store = NewStore();
        await ImportBothAsync(store);
        var before = store.DiskUsageBytes();

        var result = await store.GarbageCollectAsync(before, NoneInUse, CancellationToken.None);

        Assert.Empty(result.RemovedImages);
        Assert.Equal(before, result.BytesAfter);
        Assert.Equal(2, store.List().Count);
    }

    [Fact]
    public async Task GarbageCollectAsync_KeepsContentOfAPullInProgress()
    {
        await using var registry = await TestRegistry.StartAsync();
        var reference = ImageReference.Parse(await TestImages.PushLayeredAsync(registry, "gc/pulling", "1"));
        var layout = await TestImages.LayoutAsync();
        var manifest = await ImageArchives.LayoutBlobJsonAsync(layout, await ImageArchives.LayoutManifestDigestAsync(layout, "layered"));
        var lastLayer = manifest["layers"]!.AsArray()[^1]!["digest"]!.GetValue<string>();
        var gate = new GateHandler(lastLayer);
        using var store = NewStore(gate);

        var pull = store.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None);
        await gate.Entered.WaitAsync(TimeSpan.FromSeconds(30));
        // Everything the pull has stored so far (manifest, config, maybe other layers) is unreferenced by any record.
        var stored = Directory.GetFiles(Path.Combine(Root, "blobs", "sha256")).Length;
        var during = await store.GarbageCollectAsync(0, NoneInUse, CancellationToken.None);
        var storedAfterGc = Directory.GetFiles(Path.Combine(Root, "blobs", "sha256")).Length;
        gate.Release();
        var image = await pull;

        Assert.True(stored >= 2, $"the pull had stored {stored} blobs when it was held");
        Assert.Equal(stored, storedAfterGc);
        Assert.Equal(0, during.RemovedBlobs + during.RemovedLayers);
        Assert.All(image.LayerPaths, p => Assert.True(Directory.Exists(p)));
        Assert.Equal(image.ManifestDigest, Assert.Single(store.List()).ManifestDigest);
        // Once the pull is done and nothing uses the image, the same GC removes it all.
        var after = await store.GarbageCollectAsync(0, NoneInUse, CancellationToken.None);
        Assert.Equal([reference.ToString()], after.RemovedImages);
        Assert.Equal(0, store.DiskUsageBytes());
    }

    [Fact]
    public async Task DeleteAsync_Refuses_WhenImageIsInUse()
    {
        using var store = NewStore();
        var (busybox, _) = await ImportBothAsync(store);

        var e = await Assert.ThrowsAsync<ImageInUseException>(() =>
            store.DeleteAsync("gc/a:busybox", d => d == busybox.ManifestDigest, CancellationToken.None));

        Assert.Contains("docker.io/gc/a:busybox", e.Message);
        Assert.Equal(2, store.List().Count);
        Assert.True(store.Content.Contains(busybox.ManifestDigest));
    }

    [Fact]
    public async Task DeleteAsync_RemovesImageButKeepsLayerSharedWithAnotherImage()
    {
        using var store = NewStore();
        var (busybox, layered) = await ImportBothAsync(store);

        await store.DeleteAsync("gc/b:layered", _ => false, CancellationToken.None);

        Assert.Equal("docker.io/gc/a:busybox", Assert.Single(store.List()).Name);
        Assert.False(store.Content.Contains(layered.ManifestDigest));
        Assert.False(Directory.Exists(layered.LayerPaths[2]));
        Assert.True(Directory.Exists(busybox.LayerPaths[0]));
        Assert.Equal(store.Find("gc/a:busybox")!.SizeBytes, store.DiskUsageBytes());
        await Assert.ThrowsAsync<ImagePullException>(() => store.PullAsync(layered.Reference, PullPolicy.Never, null, CancellationToken.None));
    }

    [Fact]
    public async Task DeleteAsync_Throws_WhenNameIsUnknown()
    {
        using var store = NewStore();

        var e = await Assert.ThrowsAsync<ImageNotFoundException>(() => store.DeleteAsync("nobody/nothing:1", _ => false, CancellationToken.None));

        Assert.Equal("image docker.io/nobody/nothing:1 is not in the image store", e.Message);
    }

    [Fact]
    public async Task DeleteAsync_RemovesLayer_WhenItHasReadOnlyDirectoriesAndFilesOfOtherUsers()
    {
        var layer = ImageArchives.ToTarBytes(
        [
            new ArchiveEntry("locked/", [], Mode: (UnixFileMode)0b101_101_101, Uid: 1234, Type: TarEntryType.Directory),
            new ArchiveEntry("locked/file", "x"u8.ToArray(), Mode: (UnixFileMode)0b100_000_000, Uid: 4321),
            new ArchiveEntry("locked/closed/", [], Mode: 0, Uid: 4321, Type: TarEntryType.Directory),
            new ArchiveEntry("locked/closed/inner", "y"u8.ToArray(), Mode: 0, Uid: 4321),
            new ArchiveEntry("locked/link", [], LinkTarget: "/etc"),
        ]);
        using var store = NewStore();
        var image = await store.ImportAsync(ImageArchives.ToTar(ImageArchives.CraftedLayout(layer)), "gc/locked:1", CancellationToken.None);
        Assert.True(File.Exists(Path.Combine(image.LayerPaths[0], "locked", "closed", "inner")));

        await store.DeleteAsync("gc/locked:1", _ => false, CancellationToken.None);

        Assert.False(Directory.Exists(image.LayerPaths[0]));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "layers", "tmp")));
        Assert.True(File.Exists("/etc/passwd"), "the layer's symlink to /etc was removed, not followed");
        Assert.Equal(0, store.DiskUsageBytes());
    }
}

/// <summary>Holds the request for one blob until released, so a test can act while a pull is in progress.</summary>
internal sealed class GateHandler(string heldDigest) : DelegatingHandler
{
    private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Task Entered => _entered.Task;
    public void Release() => _release.TrySetResult();

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        if (request.RequestUri!.AbsolutePath.EndsWith("/blobs/" + heldDigest, StringComparison.Ordinal))
        {
            _entered.TrySetResult();
            await _release.Task.WaitAsync(ct);
        }
        return await base.SendAsync(request, ct);
    }
}
