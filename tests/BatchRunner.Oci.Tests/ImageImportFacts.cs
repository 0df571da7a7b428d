using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using BatchRunner.Oci.Import;
using BatchRunner.Oci.Store;
using BatchRunner.Testing;

namespace BatchRunner.Oci.Tests;

/// <summary>Imports real archives (the umoci-built test layout, docker save formats, skopeo's) into a temp store.</summary>
public sealed class ImageImportFacts : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("br-import-").FullName;
    private string Root => Path.Combine(_dir, "store");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // No registry exists for these names: a request would mean the import did not register the image.
    private ImageStore NewStore() => new(new ImageStoreOptions { Root = Root }, httpHandler: new NoNetworkHandler());

    [Fact]
    public async Task ImportAsync_RegistersImageForPullWithoutNetwork_WhenArchiveIsOciLayoutTar()
    {
        var archive = await ImageArchives.TarLayoutAsync(await TestImages.LayoutAsync(), Path.Combine(_dir, "layout.tar"), gzip: false);
        PreparedImage imported;
        using (var store = NewStore())
        await using (var stream = File.OpenRead(archive))
            imported = await store.ImportAsync(stream, "myorg/tool:busybox", CancellationToken.None);

        // A new store is a restarted server: the record on disk is what makes the image available.
        using var restarted = NewStore();
        var pulled = await restarted.PullAsync(ImageReference.Parse("docker.io/myorg/tool:busybox"), PullPolicy.Never, null, CancellationToken.None);
        var ifNotPresent = await restarted.PullAsync(ImageReference.Parse("myorg/tool:busybox"), PullPolicy.IfNotPresent, null, CancellationToken.None);

        Assert.Equal("docker.io/myorg/tool:busybox", imported.Reference.ToString());
        Assert.Equal(imported.ManifestDigest, pulled.ManifestDigest);
        Assert.Equal(imported.ManifestDigest, ifNotPresent.ManifestDigest);
        Assert.Equal(await ImageArchives.LayoutManifestDigestAsync(await TestImages.LayoutAsync(), "busybox"), pulled.ManifestDigest);
        var layer = Assert.Single(pulled.LayerPaths);
        Assert.True(File.Exists(Path.Combine(layer, "bin", "busybox")));
        Assert.Equal(["/bin/sh"], pulled.Config.Cmd);
        var listed = Assert.Single(restarted.List());
        Assert.Equal("docker.io/myorg/tool:busybox", listed.Name);
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "blobs", "tmp")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "layers", "tmp")));
    }

    [Fact]
    public async Task ImportAsync_UnpacksEveryLayer_WhenArchiveIsGzipCompressed()
    {
        var archive = await ImageArchives.TarLayoutAsync(await TestImages.LayoutAsync(), Path.Combine(_dir, "layout.tar.gz"), gzip: true);
        using var store = NewStore();
        await using (var stream = File.OpenRead(archive))
            await store.ImportAsync(stream, "localhost:5000/team/layered:layered", CancellationToken.None);

        var image = await store.PullAsync(ImageReference.Parse("localhost:5000/team/layered:layered"), PullPolicy.Never, null, CancellationToken.None);

        Assert.Equal(3, image.LayerPaths.Count);
        Assert.Equal("three\n", await File.ReadAllTextAsync(image.LayerPaths[2] + TestImages.LayeredTopFile));
        Assert.Equal("keep\n", await File.ReadAllTextAsync(image.LayerPaths[1] + TestImages.LayeredKeptFile));
    }

    [Fact]
    public async Task ImportAsync_RegistersImage_WhenArchiveIsLegacyDockerSave()
    {
        var archive = await ImageArchives.LegacyDockerSaveAsync(await TestImages.LayoutAsync(), "layered", "myorg/legacy:1", Path.Combine(_dir, "save.tar"));
        using var store = NewStore();
        PreparedImage first, second;
        await using (var stream = File.OpenRead(archive))
            first = await store.ImportAsync(stream, "myorg/legacy:1", CancellationToken.None);
        await using (var stream = File.OpenRead(archive))
            second = await store.ImportAsync(stream, "myorg/legacy:again", CancellationToken.None);

        var pulled = await store.PullAsync(ImageReference.Parse("myorg/legacy:1"), PullPolicy.Never, null, CancellationToken.None);

        // The manifest BatchRunner writes for a legacy archive is deterministic: same archive, same digest.
        Assert.Equal(first.ManifestDigest, second.ManifestDigest);
        Assert.Equal(first.ManifestDigest, pulled.ManifestDigest);
        Assert.Equal(3, pulled.LayerPaths.Count);
        Assert.True(File.Exists(Path.Combine(pulled.LayerPaths[0], "bin", "busybox")));
        Assert.Equal("three\n", await File.ReadAllTextAsync(pulled.LayerPaths[2] + TestImages.LayeredTopFile));
        Assert.Equal(["/bin/sh"], pulled.Config.Cmd);
        // Legacy layers are stored as their uncompressed tars, so each layer's blob digest is its diff id.
        var diffIds = await ImageArchives.LayoutDiffIdsAsync(await TestImages.LayoutAsync(), "layered");
        Assert.Equal(diffIds.Select(d => store.LayerPath(d)), pulled.LayerPaths);
    }

    [Fact]
    public async Task ImportAsync_RegistersImage_WhenArchiveIsSkopeoDockerArchive()
    {
        var archive = Path.Combine(_dir, "skopeo-docker.tar");
        await ExternalCommand.RunAsync("skopeo", ["--insecure-policy", "copy", "--quiet",
            $"oci:{await TestImages.LayoutAsync()}:layered", $"docker-archive:{archive}:myorg/skopeo:2"]);
        using var store = NewStore();
        await using (var stream = File.OpenRead(archive))
            await store.ImportAsync(stream, "myorg/skopeo:2", CancellationToken.None);

        var pulled = await store.PullAsync(ImageReference.Parse("myorg/skopeo:2"), PullPolicy.Never, null, CancellationToken.None);

        Assert.Equal(3, pulled.LayerPaths.Count);
        Assert.Equal("three\n", await File.ReadAllTextAsync(pulled.LayerPaths[2] + TestImages.LayeredTopFile));
    }

    [Fact]
    public async Task ImportAsync_Fails_WhenLayoutHoldsSeveralImagesAndNoneMatchesTheName()
    {
        var archive = await ImageArchives.TarLayoutAsync(await TestImages.LayoutAsync(), Path.Combine(_dir, "layout.tar"), gzip: false);
        using var store = NewStore();
        await using var stream = File.OpenRead(archive);

        var e = await Assert.ThrowsAsync<ImageImportException>(() => store.ImportAsync(stream, "myorg/tool:1", CancellationToken.None));

        Assert.Contains("holds 2 images", e.Message);
        Assert.Contains("busybox", e.Message);
        Assert.Empty(store.ListImages());
    }

    [Fact]
    public async Task ImportAsync_RegistersCraftedImage_WhenArchiveIsValid()
    {
        using var store = NewStore();

        var image = await ImportAsync(store, ImageArchives.CraftedLayout(), "crafted:1");

        Assert.Equal("hello\n", await File.ReadAllTextAsync(Path.Combine(image.LayerPaths[0], "hello.txt")));
    }

    [Fact]
    public async Task ImportAsync_RefusesArchiveAndWritesNothingOutside_WhenEntryNameHasDotDot()
    {
        var marker = "br-import-escape-" + Guid.NewGuid().ToString("N");
        var entries = ImageArchives.CraftedLayout();
        entries.Add(new ArchiveEntry("../" + marker, "escaped\n"u8.ToArray()));
        entries.Add(new ArchiveEntry("blobs/../../../" + marker, "escaped\n"u8.ToArray()));
        using var store = NewStore();

        var e = await Assert.ThrowsAsync<ImageImportException>(() => ImportAsync(store, entries, "crafted:1"));

        Assert.Contains("\"..\"", e.Message);
        foreach (var dir in new[] { _dir, Path.GetTempPath(), Root, Directory.GetCurrentDirectory(), "/" })
            Assert.False(File.Exists(Path.Combine(dir, marker)), $"{marker} was written in {dir}");
        AssertNothingStored();
    }

    [Fact]
    public async Task ImportAsync_RefusesArchive_WhenEntryNameIsAbsolute()
    {
        var target = Path.Combine(Path.GetTempPath(), "br-import-absolute-" + Guid.NewGuid().ToString("N"));
        var entries = ImageArchives.CraftedLayout();
        entries.Insert(0, new ArchiveEntry(target, "escaped\n"u8.ToArray()));
        using var store = NewStore();

        var e = await Assert.ThrowsAsync<ImageImportException>(() => ImportAsync(store, entries, "crafted:1"));

        Assert.Contains("absolute path", e.Message);
        Assert.False(File.Exists(target));
        AssertNothingStored();
    }

    [Fact]
    public async Task ImportAsync_RefusesArchive_WhenLinkPointsOutsideIt()
    {
        var entries = ImageArchives.CraftedLayout();
        entries.Add(new ArchiveEntry("blobs/sha256/escape", [], LinkTarget: "../../../../etc/passwd"));
        using var store = NewStore();

        var e = await Assert.ThrowsAsync<ImageImportException>(() => ImportAsync(store, entries, "crafted:1"));

        Assert.Contains("outside the archive", e.Message);
        AssertNothingStored();
    }

    [Fact]
    public async Task ImportAsync_RefusesArchive_WhenBlobDoesNotMatchItsDigest()
    {
        var entries = ImageArchives.CraftedLayout();
        var layer = entries.Single(e => e.Name == "blobs/sha256/" + ImageArchives.CraftedLayerHex(entries));
        entries[entries.IndexOf(layer)] = layer with { Content = ImageArchives.TarOf(("hello.txt", "tampered\n")) };
        using var store = NewStore();

        var e = await Assert.ThrowsAsync<ImageImportException>(() => ImportAsync(store, entries, "crafted:1"));

        Assert.StartsWith("digest mismatch: blob sha256:", e.Message);
        AssertNothingStored();
    }

    [Fact]
    public async Task ImportAsync_RefusesArchive_WhenABlobIsMissing()
    {
        var entries = ImageArchives.CraftedLayout();
        var hex = ImageArchives.CraftedLayerHex(entries);
        entries.RemoveAll(e => e.Name == "blobs/sha256/" + hex);
        using var store = NewStore();

        var e = await Assert.ThrowsAsync<ImageImportException>(() => ImportAsync(store, entries, "crafted:1"));

        Assert.Equal($"the archive has no blob sha256:{hex} (named by manifest sha256:{ImageArchives.CraftedManifestHex(entries)} (layer 1))", e.Message);
        AssertNothingStored();
    }

    [Fact]
    public async Task ImportAsync_RefusesArchive_WhenItHasNoIndexNorManifest()
    {
        using var store = NewStore();

        var e = await Assert.ThrowsAsync<ImageImportException>(() =>
            ImportAsync(store, [new ArchiveEntry("hello.txt", "hi\n"u8.ToArray())], "crafted:1"));

        Assert.Contains("neither index.json (an OCI image layout) nor manifest.json (docker save)", e.Message);
        AssertNothingStored();
    }

    [Theory]
    [InlineData("index.json", "{\"manifests\": \"not a list\"}", "index.json of the archive is malformed: a value has the wrong type at manifests")]
    [InlineData("manifest.json", "[{\"Config\": 5}]", "manifest.json of the archive is malformed (expected docker save's [{Config, RepoTags, Layers}]): a value has the wrong type at [0].Config")]
    public async Task ImportAsync_SaysWhereAnIndexIsMalformed_WithoutDotNetTypeNames(string file, string json, string message)
    {
        using var store = NewStore();

        var e = await Assert.ThrowsAsync<ImageImportException>(() => ImportAsync(store, [new ArchiveEntry(file, Encoding.UTF8.GetBytes(json))], "crafted:1"));

        Assert.Equal(message, e.Message);
        AssertNothingStored();
    }

    [Theory]
    [InlineData("{\"not\": \"a tar\"}")]
    [InlineData("")]
    public async Task ImportAsync_RefusesUpload_WhenItIsNotAnArchive(string content)
    {
        using var store = NewStore();

        var e = await Assert.ThrowsAsync<ImageImportException>(() =>
            store.ImportAsync(new MemoryStream(Encoding.UTF8.GetBytes(content)), "crafted:1", CancellationToken.None));

        Assert.StartsWith("the upload is not an image archive", e.Message);
    }

    [Fact]
    public async Task ImportAsync_RefusesUpload_WhenGzipHoldsNoTar()
    {
        var gz = new MemoryStream();
        await using (var z = new GZipStream(gz, CompressionLevel.Fastest, leaveOpen: true))
            await z.WriteAsync("just some text, no tar header here"u8.ToArray());
        gz.Position = 0;
        using var store = NewStore();

        var e = await Assert.ThrowsAsync<ImageImportException>(() => store.ImportAsync(gz, "crafted:1", CancellationToken.None));

        Assert.Equal("the upload is a gzip-compressed tar but what it holds is not a tar archive", e.Message);
    }

    [Fact]
    public async Task ImportAsync_RefusesLegacyArchive_WhenLayerDoesNotMatchDiffId()
    {
        var archive = await ImageArchives.LegacyDockerSaveAsync(await TestImages.LayoutAsync(), "busybox", "myorg/legacy:1", Path.Combine(_dir, "save.tar"),
            replaceFirstLayer: ImageArchives.TarOf(("evil.txt", "not the layer the config vouches for\n")));
        using var store = NewStore();
        await using var stream = File.OpenRead(archive);

        var e = await Assert.ThrowsAsync<ImageImportException>(() => store.ImportAsync(stream, "myorg/legacy:1", CancellationToken.None));

        Assert.Contains("digest mismatch: layer", e.Message);
        Assert.Contains("diff id 1", e.Message);
        AssertNothingStored();
    }

    [Fact]
    public async Task ImportAsync_RefusesArchive_WhenItHasMoreEntriesThanTheLimit()
    {
        using var store = NewStore();
        var entries = ImageArchives.CraftedLayout();

        var e = await Assert.ThrowsAsync<ImageImportException>(() =>
            store.ImportAsync(ImageArchives.ToTar(entries), "crafted:1", new ImageImportLimits { MaxEntries = 2 }, CancellationToken.None));

        Assert.Equal("the archive has more than 2 entries; refusing it", e.Message);
        AssertNothingStored();
    }

    private static Task<PreparedImage> ImportAsync(ImageStore store, List<ArchiveEntry> entries, string name) =>
        store.ImportAsync(ImageArchives.ToTar(entries), name, CancellationToken.None);

    private void AssertNothingStored()
    {
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "images")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "blobs", "sha256")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "blobs", "tmp")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "layers", "sha256")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "layers", "tmp")));
    }
}

/// <summary>A file (or, with <paramref name="LinkTarget"/>, a symlink) of a crafted archive.</summary>
internal sealed record ArchiveEntry(string Name, byte[] Content, string? LinkTarget = null, UnixFileMode Mode = (UnixFileMode)0b110_100_100, int Uid = 0, TarEntryType Type = TarEntryType.RegularFile);

/// <summary>Builds image archives the way umoci, docker save and attackers do.</summary>
internal static class ImageArchives
{
    /// <summary>tar (or tar.gz) of an OCI layout directory, as <c>tar -C LAYOUT -cf FILE .</c> would.</summary>
    public static async Task<string> TarLayoutAsync(string layout, string file, bool gzip)
    {
        await using var output = File.Create(file);
        if (!gzip)
        {
            await TarFile.CreateFromDirectoryAsync(layout, output, includeBaseDirectory: false);
            return file;
        }
        await using var z = new GZipStream(output, CompressionLevel.Fastest);
        await TarFile.CreateFromDirectoryAsync(layout, z, includeBaseDirectory: false);
        return file;
    }

    public static async Task<string> LayoutManifestDigestAsync(string layout, string tag)
    {
        var index = JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(layout, "index.json")))!;
        return index["manifests"]!.AsArray()
            .Single(m => m!["annotations"]?["org.opencontainers.image.ref.name"]?.GetValue<string>() == tag)!["digest"]!.GetValue<string>();
    }

    public static async Task<JsonNode> LayoutBlobJsonAsync(string layout, string digest) =>
        JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(layout, "blobs", "sha256", digest[7..])))!;

    public static async Task<IReadOnlyList<string>> LayoutDiffIdsAsync(string layout, string tag)
    {
        var manifest = await LayoutBlobJsonAsync(layout, await LayoutManifestDigestAsync(layout, tag));
        var config = await LayoutBlobJsonAsync(layout, manifest["config"]!["digest"]!.GetValue<string>());
        return config["rootfs"]!["diff_ids"]!.AsArray().Select(d => d!.GetValue<string>()).ToList();
    }

    /// <summary>
    /// The legacy <c>docker save</c> format of a layout image: manifest.json, &lt;config-hex&gt;.json, and per layer
    /// &lt;id&gt;/layer.tar (uncompressed), &lt;id&gt;/VERSION, &lt;id&gt;/json, plus repositories. Like docker, the first
    /// layer is written once under another id and linked (<c>&lt;id&gt;/layer.tar -&gt; ../&lt;id2&gt;/layer.tar</c>).
    /// </summary>
    public static async Task<string> LegacyDockerSaveAsync(string layout, string tag, string repoTag, string file, byte[]? replaceFirstLayer = null)
    {
        var manifest = await LayoutBlobJsonAsync(layout, await LayoutManifestDigestAsync(layout, tag));
        var configDigest = manifest["config"]!["digest"]!.GetValue<string>();
        var configBytes = await File.ReadAllBytesAsync(Path.Combine(layout, "blobs", "sha256", configDigest[7..]));
        var entries = new List<ArchiveEntry>();
        var layerNames = new List<string>();
        var i = 0;
        foreach (var layer in manifest["layers"]!.AsArray())
        {
            var digest = layer!["digest"]!.GetValue<string>();
            var tar = new MemoryStream();
            await using (var gz = new GZipStream(File.OpenRead(Path.Combine(layout, "blobs", "sha256", digest[7..])), CompressionMode.Decompress))
                await gz.CopyToAsync(tar);
            var content = i == 0 && replaceFirstLayer is not null ? replaceFirstLayer : tar.ToArray();
            var id = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"v1-layer-{i}-{digest}")));
            if (i == 0)
            {
                var shared = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"shared-{digest}")));
                entries.Add(new ArchiveEntry($"{shared}/layer.tar", content));
                entries.Add(new ArchiveEntry($"{id}/layer.tar", [], LinkTarget: $"../{shared}/layer.tar"));
            }
            else
            {
                entries.Add(new ArchiveEntry($"{id}/layer.tar", content));
            }
            entries.Add(new ArchiveEntry($"{id}/VERSION", "1.0"u8.ToArray()));
            entries.Add(new ArchiveEntry($"{id}/json", Encoding.UTF8.GetBytes($"{{\"id\":\"{id}\"}}")));
            layerNames.Add($"{id}/layer.tar");
            i++;
        }
        entries.Add(new ArchiveEntry($"{configDigest[7..]}.json", configBytes));
        var repo = repoTag[..repoTag.LastIndexOf(':')];
        entries.Add(new ArchiveEntry("repositories", Encoding.UTF8.GetBytes($"{{\"{repo}\":{{\"{repoTag[(repo.Length + 1)..]}\":\"{layerNames[^1][..64]}\"}}}}")));
        // docker writes manifest.json last: the importer must not depend on reading it first.
        entries.Add(new ArchiveEntry("manifest.json", JsonSerializer.SerializeToUtf8Bytes(new[]
        {
            new Dictionary<string, object> { ["Config"] = $"{configDigest[7..]}.json", ["RepoTags"] = new[] { repoTag }, ["Layers"] = layerNames },
        })));
        await using var output = File.Create(file);
        ToTar(entries).CopyTo(output);
        return file;
    }

    /// <summary>A valid one-layer OCI layout (uncompressed layer with hello.txt), as editable entries.</summary>
    public static List<ArchiveEntry> CraftedLayout(byte[]? layerTar = null)
    {
        var layer = layerTar ?? TarOf(("hello.txt", "hello\n"));
        var layerDigest = Digest(layer);
        var config = Encoding.UTF8.GetBytes($$$"""
            {"architecture":"{{{ImageStoreOptions.RuntimeArchitecture()}}}","os":"linux","config":{"Cmd":["/hello"]},"rootfs":{"type":"layers","diff_ids":["{{{layerDigest}}}"]}}
            """);
        var manifest = Encoding.UTF8.GetBytes($$$"""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
             "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{{{Digest(config)}}}","size":{{{config.Length}}}},
             "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{{{layerDigest}}}","size":{{{layer.Length}}}}]}
            """);
        var index = Encoding.UTF8.GetBytes($$$"""
            {"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{{{Digest(manifest)}}}","size":{{{manifest.Length}}},
              "annotations":{"org.opencontainers.image.ref.name":"1"}}]}
            """);
        return
        [
            new("oci-layout", """{"imageLayoutVersion":"1.0.0"}"""u8.ToArray()),
            new("index.json", index),
            new("blobs/sha256/" + Digest(layer)[7..], layer),
            new("blobs/sha256/" + Digest(config)[7..], config),
            new("blobs/sha256/" + Digest(manifest)[7..], manifest),
        ];
    }

    public static string CraftedManifestHex(List<ArchiveEntry> entries)
    {
        var index = JsonNode.Parse(entries.Single(e => e.Name == "index.json").Content)!;
        return index["manifests"]![0]!["digest"]!.GetValue<string>()[7..];
    }

    public static string CraftedLayerHex(List<ArchiveEntry> entries)
    {
        var manifest = JsonNode.Parse(entries.Single(e => e.Name == "blobs/sha256/" + CraftedManifestHex(entries)).Content)!;
        return manifest["layers"]![0]!["digest"]!.GetValue<string>()[7..];
    }

    public static string Digest(byte[] content) => "sha256:" + Convert.ToHexStringLower(SHA256.HashData(content));

    /// <summary>An uncompressed tar of small regular files (a layer).</summary>
    public static byte[] TarOf(params (string Name, string Content)[] files) =>
        ToTarBytes(files.Select(f => new ArchiveEntry(f.Name, Encoding.UTF8.GetBytes(f.Content))));

    public static MemoryStream ToTar(IEnumerable<ArchiveEntry> entries) => new(ToTarBytes(entries));

    public static byte[] ToTarBytes(IEnumerable<ArchiveEntry> entries)
    {
        var buffer = new MemoryStream();
        using (var writer = new TarWriter(buffer, TarEntryFormat.Pax, leaveOpen: true))
        {
            foreach (var e in entries)
            {
                var type = e.LinkTarget is not null ? TarEntryType.SymbolicLink : e.Type;
                var entry = new PaxTarEntry(type, e.Name)
                {
                    Mode = e.Mode,
                    Uid = e.Uid,
                    Gid = e.Uid,
                    ModificationTime = new DateTimeOffset(2024, 1, 1, 0, 0, 0, TimeSpan.Zero),
                };
                if (e.LinkTarget is not null) entry.LinkName = e.LinkTarget;
                else if (type == TarEntryType.RegularFile) entry.DataStream = new MemoryStream(e.Content);
                writer.WriteEntry(entry);
            }
        }
        return buffer.ToArray();
    }
}

/// <summary>Fails any request: proves an operation used no network.</summary>
internal sealed class NoNetworkHandler : HttpMessageHandler
{
    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct) =>
        throw new InvalidOperationException($"unexpected network request {request.Method} {request.RequestUri}");
}
