using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using BatchRunner.Oci.Snapshots;
using BatchRunner.Oci.Store;
using BatchRunner.Oci.Tests.Layers;
using BatchRunner.Testing;
using static BatchRunner.Oci.Tests.Layers.TestFs;

namespace BatchRunner.Oci.Tests;

/// <summary>
/// How ImageStore unpacks the layers of one image: in parallel, each while it downloads, with the same result as one
/// at a time. Real registry, real overlayfs (the tests run as root).
/// </summary>
public sealed class ImageStoreUnpackFacts : IAsyncLifetime
{
    private TestRegistry _registry = null!;
    private readonly string _root = Directory.CreateTempSubdirectory("br-unpack-").FullName;

    public async Task InitializeAsync() => _registry = await TestRegistry.StartAsync();

    public async Task DisposeAsync()
    {
        await _registry.DisposeAsync();
        MountCleanup.UnmountAllUnder(_root);
        Directory.Delete(_root, recursive: true);
    }

    private ImageStore NewStore(string name, int maxParallelUnpacks = 4) => new(new ImageStoreOptions
    {
        Root = Path.Combine(_root, name),
        RegistryPolicy = TestPolicies.LoopbackRegistries,
        MaxParallelUnpacks = maxParallelUnpacks,
    });

    /// <summary>
    /// Holds every unpack until <paramref name="expected"/> have started: if the store unpacked one layer at a time,
    /// the first would wait for the others forever (here: until the deadline, and the pull fails).
    /// </summary>
    private static (Func<string, CancellationToken, Task> Hook, Func<int> Started) Barrier(int expected)
    {
        var started = 0;
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        return (async (_, ct) =>
        {
            if (Interlocked.Increment(ref started) == expected) all.TrySetResult();
            await all.Task.WaitAsync(TimeSpan.FromSeconds(30), ct);
        }, () => Volatile.Read(ref started));
    }

    [Fact]
    public async Task PullAsync_UnpacksLayersConcurrently_WhenImageHasSeveralLayers()
    {
        var reference = ImageReference.Parse(await TestImages.PushLayeredAsync(_registry));
        using var store = NewStore("parallel");
        var (hook, started) = Barrier(3);
        store.UnpackStarting = hook;

        var image = await store.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None);

        Assert.Equal(3, image.LayerPaths.Count);
        Assert.Equal(3, started());
        Assert.True(File.Exists(Path.Combine(image.LayerPaths[2], TestImages.LayeredTopFile.TrimStart('/'))));
    }

    [Fact]
    public async Task PullAsync_UnpacksOneLayerAtATime_WhenMaxParallelUnpacksIsOne()
    {
        var reference = ImageReference.Parse(await TestImages.PushLayeredAsync(_registry));
        using var store = NewStore("sequential", maxParallelUnpacks: 1);
        var running = 0;
        var most = 0;
        store.UnpackStarting = async (_, ct) =>
        {
            var now = Interlocked.Increment(ref running);
            lock (store) most = Math.Max(most, now);
            // Long enough for another layer's unpack to start if the slot let it.
            await Task.Delay(50, ct);
            Interlocked.Decrement(ref running);
        };

        var image = await store.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None);

        Assert.Equal(3, image.LayerPaths.Count);
        Assert.Equal(1, most);
    }

    [Fact]
    public async Task PullAsync_GivesTheSameLayersAsOneAtATime_WhenLaterLayersHaveWhiteoutsAndOpaqueDirectories()
    {
        var reference = await PushCraftedAsync("demo/whiteouts",
            new LayerTar().Dir("a/").File("a/x", "x1").File("a/y", "y1").File("gone", "g").Dir("keep/").File("keep/k", "k1")
                .Symlink("link", "a/x"),
            new LayerTar().Dir("a/").File("a/.wh..wh..opq").File("a/z", "z2").File(".wh.gone").Dir("keep/").File("keep/k", "k2"),
            new LayerTar().File(".wh.link").Dir("b/", mode: 0x1C0, uid: 1000, gid: 1000).File("b/new", "n3", uid: 1000, gid: 1000));
        using var parallelStore = NewStore("parallel");
        var (hook, started) = Barrier(3);
        parallelStore.UnpackStarting = hook;
        using var sequentialStore = NewStore("sequential", maxParallelUnpacks: 1);

        var parallel = await parallelStore.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None);
        var sequential = await sequentialStore.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None);

        Assert.Equal(3, started());
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(Relative(sequential.LayerPaths[i]), Relative(parallel.LayerPaths[i]));
            Assert.Equal(GetXattr(Path.Combine(sequential.LayerPaths[i], "a"), "trusted.overlay.opaque"),
                GetXattr(Path.Combine(parallel.LayerPaths[i], "a"), "trusted.overlay.opaque"));
        }
        Assert.Equal("y", GetXattr(Path.Combine(parallel.LayerPaths[1], "a"), "trusted.overlay.opaque"));
        var whiteout = Lstat(Path.Combine(parallel.LayerPaths[1], "gone"));
        Assert.Equal((S_IFCHR, 0u, 0u), (whiteout.Type, whiteout.RdevMajor, whiteout.RdevMinor));

        // The later layers' whiteouts and opaque directory still apply over the earlier ones in the mounted rootfs.
        await using var mount = await new OverlaySnapshotter().MountAsync(parallel.LayerPaths, Path.Combine(_root, "job"), CancellationToken.None);
        var rootfs = mount.RootfsPath;
        Assert.Equal(["z"], Directory.GetFileSystemEntries(Path.Combine(rootfs, "a")).Select(Path.GetFileName));
        Assert.False(File.Exists(Path.Combine(rootfs, "gone")));
        Assert.Null(TryLstat(Path.Combine(rootfs, "link")));
        Assert.Equal("k2", File.ReadAllText(Path.Combine(rootfs, "keep/k")));
        Assert.Equal("n3", File.ReadAllText(Path.Combine(rootfs, "b/new")));
    }

    [Fact]
    public async Task PullAsync_StoresNothing_WhenStreamedLayerIsNotATar()
    {
        // Gzip of bytes that are no tar: the download succeeds (the digest is right), the unpacker fails as it reads.
        var notATar = Encoding.UTF8.GetBytes(new string('x', 4096));
        var reference = await PushBlobsAsync("demo/notatar", [(LayerTar.Gzip(notATar), notATar)]);
        using var store = NewStore("bad");

        var e = await Assert.ThrowsAsync<ImagePullException>(() => store.PullAsync(reference, PullPolicy.IfNotPresent, null, CancellationToken.None));

        Assert.Contains("cannot be unpacked", e.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(_root, "bad", "layers", "sha256")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(_root, "bad", "layers", "tmp")));
    }

    /// <summary>
    /// The snapshot of a layer directory keyed by paths relative to it, so two stores compare, with owners added.
    /// Whiteouts (0:0 character devices) carry no time from the layer: they compare by their name alone.
    /// </summary>
    private static SortedDictionary<string, string> Relative(string layerDir) =>
        new(Snapshot(layerDir).ToDictionary(kv => Path.GetRelativePath(layerDir, kv.Key), kv => Describe(kv.Key, kv.Value)), StringComparer.Ordinal);

    private static string Describe(string path, string snapshot)
    {
        var st = Lstat(path);
        return st is { Type: S_IFCHR, RdevMajor: 0, RdevMinor: 0 } ? "whiteout" : $"{snapshot} {st.Uid}:{st.Gid}";
    }

    private Task<ImageReference> PushCraftedAsync(string name, params LayerTar[] layers) =>
        PushBlobsAsync(name, layers.Select(l => { var tar = l.ToTar(); return (LayerTar.Gzip(tar), tar); }).ToArray());

    /// <summary>Writes an OCI layout with these gzip layers (and their plain tars for the diff ids) and pushes it with skopeo.</summary>
    private async Task<ImageReference> PushBlobsAsync(string name, (byte[] Gzip, byte[] Tar)[] layers)
    {
        var layout = Path.Combine(_root, "layout-" + name.Replace('/', '-'));
        var blobs = Path.Combine(layout, "blobs", "sha256");
        Directory.CreateDirectory(blobs);
        string Put(byte[] bytes)
        {
            var hex = Convert.ToHexStringLower(SHA256.HashData(bytes));
            File.WriteAllBytes(Path.Combine(blobs, hex), bytes);
            return "sha256:" + hex;
        }
        var config = JsonSerializer.SerializeToUtf8Bytes(new
        {
            architecture = ImageStoreOptions.RuntimeArchitecture(),
            os = "linux",
            config = new { Cmd = new[] { "/bin/sh" } },
            rootfs = new { type = "layers", diff_ids = layers.Select(l => "sha256:" + Convert.ToHexStringLower(SHA256.HashData(l.Tar))).ToArray() },
        });
        var manifest = JsonSerializer.SerializeToUtf8Bytes(new
        {
            schemaVersion = 2,
            mediaType = "application/vnd.oci.image.manifest.v1+json",
            config = new { mediaType = "application/vnd.oci.image.config.v1+json", digest = Put(config), size = config.Length },
            layers = layers.Select(l => new { mediaType = "application/vnd.oci.image.layer.v1.tar+gzip", digest = Put(l.Gzip), size = l.Gzip.Length }).ToArray(),
        });
        var index = JsonSerializer.Serialize(new
        {
            schemaVersion = 2,
            manifests = new[]
            {
                new Dictionary<string, object>
                {
                    ["mediaType"] = "application/vnd.oci.image.manifest.v1+json",
                    ["digest"] = Put(manifest),
                    ["size"] = manifest.Length,
                    ["annotations"] = new Dictionary<string, string> { ["org.opencontainers.image.ref.name"] = "1" },
                },
            },
        });
        await File.WriteAllTextAsync(Path.Combine(layout, "index.json"), index);
        await File.WriteAllTextAsync(Path.Combine(layout, "oci-layout"), """{"imageLayoutVersion":"1.0.0"}""");
        var reference = $"{_registry.Host}/{name}:1";
        await ExternalCommand.RunAsync("skopeo", ["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false", $"oci:{layout}:1", $"docker://{reference}"]);
        return ImageReference.Parse(reference);
    }
}
