using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using BatchRunner.Oci.Store;
using BatchRunner.Testing;

namespace BatchRunner.Oci.Tests;

/// <summary>
/// Auth, redirect and retry logic against an in-process fake registry (a message handler serving the real busybox
/// OCI layout), for the flows docker-registry on 127.0.0.1 cannot show: Bearer tokens, blob-storage redirects,
/// 5xx/429 answers.
/// </summary>
public sealed class RegistryClientFacts : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("br-registryclient-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private ImageStore NewStore(FakeRegistry fake, params RegistryCredential[] credentials) =>
        new(new ImageStoreOptions { Root = _root, Credentials = credentials }, httpHandler: fake);

    private static readonly ImageReference Busybox = ImageReference.Parse("fake.test/demo/busybox:busybox");

    [Fact]
    public async Task PullAsync_FetchesOneBearerToken_WhenRegistryUsesTokenAuth()
    {
        var fake = await FakeRegistry.CreateAsync(requireToken: true);
        using var store = NewStore(fake, new RegistryCredential("fake.test", "alice", "pw"));

        var image = await store.PullAsync(Busybox, PullPolicy.Always, null, CancellationToken.None);

        Assert.True(File.Exists(Path.Combine(image.LayerPaths[0], "bin", "busybox")));
        var tokenRequests = fake.Requests.Where(r => r.Host == "auth.fake.test").ToList();
        var token = Assert.Single(tokenRequests);
        Assert.Equal("Basic", token.AuthScheme);
        Assert.Contains("scope=repository%3Ademo%2Fbusybox%3Apull", token.Query);
        Assert.Contains("service=fake.test", token.Query);
        // After the first 401, every registry request carried the cached token.
        var registryRequests = fake.Requests.Where(r => r.Host == "fake.test").Skip(1).ToList();
        Assert.NotEmpty(registryRequests);
        Assert.All(registryRequests, r => Assert.Equal("Bearer", r.AuthScheme));
    }

    [Fact]
    public async Task PullAsync_ExchangesIdentityToken_WhenCredentialHasOne()
    {
        var fake = await FakeRegistry.CreateAsync(requireToken: true);
        using var store = NewStore(fake, new RegistryCredential("fake.test", IdentityToken: "idtok-1"));

        var image = await store.PullAsync(Busybox, PullPolicy.Always, null, CancellationToken.None);

        Assert.Single(image.LayerPaths);
        Assert.Single(fake.Requests, r => r.Host == "auth.fake.test");
    }

    [Fact]
    public async Task PullAsync_LeavesNoLayerDir_WhenDiffIdDoesNotMatchConfig()
    {
        var fake = await FakeRegistry.CreateAsync(wrongDiffId: true);
        using var store = NewStore(fake);

        var e = await Assert.ThrowsAsync<ImagePullException>(() => store.PullAsync(Busybox, PullPolicy.Always, null, CancellationToken.None));

        Assert.Contains("but the image config says sha256:0000", e.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(store.LayersDir));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(_root, "layers", "tmp")));
    }

    [Fact]
    public async Task PullAsync_DoesNotSendAuthorizationToRedirectTarget_WhenBlobIsRedirected()
    {
        var fake = await FakeRegistry.CreateAsync(requireToken: true, redirectBlobs: true);
        using var store = NewStore(fake, new RegistryCredential("fake.test", "alice", "pw"));

        await store.PullAsync(Busybox, PullPolicy.Always, null, CancellationToken.None);

        var storage = fake.Requests.Where(r => r.Host == "storage.fake.test").ToList();
        Assert.Equal(2, storage.Count); // config and layer
        Assert.All(storage, r => Assert.Null(r.AuthScheme));
    }

    [Fact]
    public async Task PullAsync_RefreshesTokenOnce_WhenRegistryRejectsCachedToken()
    {
        var fake = await FakeRegistry.CreateAsync(requireToken: true);
        using var store = NewStore(fake, new RegistryCredential("fake.test", "alice", "pw"));
        await store.PullAsync(Busybox, PullPolicy.Always, null, CancellationToken.None);

        fake.RevokeTokens();
        await store.PullAsync(Busybox, PullPolicy.Always, null, CancellationToken.None);

        Assert.Equal(2, fake.Requests.Count(r => r.Host == "auth.fake.test"));
    }

    [Fact]
    public async Task PullAsync_FailsUnauthorized_WhenTokenServiceRejectsMissingCredentials()
    {
        var fake = await FakeRegistry.CreateAsync(requireToken: true);
        using var store = NewStore(fake);

        var e = await Assert.ThrowsAsync<ImagePullException>(() => store.PullAsync(Busybox, PullPolicy.Always, null, CancellationToken.None));

        Assert.Equal($"image {Busybox}: unauthorized: authentication required (HTTP 401); no credentials are configured for fake.test", e.Message);
        Assert.False(e.Transient);
    }

    [Fact]
    public async Task PullAsync_FailsWithoutLeakingPassword_WhenCredentialsAreWrong()
    {
        var fake = await FakeRegistry.CreateAsync(requireToken: true);
        using var store = NewStore(fake, new RegistryCredential("fake.test", "alice", "wrong-secret"));

        var e = await Assert.ThrowsAsync<ImagePullException>(() => store.PullAsync(Busybox, PullPolicy.Always, null, CancellationToken.None));

        Assert.Contains("unauthorized: authentication required (HTTP 401)", e.Message);
        Assert.Contains("were not accepted", e.Message);
        Assert.DoesNotContain("wrong-secret", e.ToString());
    }

    [Fact]
    public async Task PullAsync_Retries_WhenRegistryAnswers503And429()
    {
        var fake = await FakeRegistry.CreateAsync();
        fake.FailNext(HttpStatusCode.ServiceUnavailable, HttpStatusCode.TooManyRequests);
        using var store = NewStore(fake);

        var image = await store.PullAsync(Busybox, PullPolicy.Always, null, CancellationToken.None);

        Assert.Single(image.LayerPaths);
        Assert.Equal(3, fake.Requests.Count(r => r.Path.Contains("/manifests/")));
    }

    [Fact]
    public async Task PullAsync_FailsTransient_WhenRegistryKeepsAnswering500()
    {
        var fake = await FakeRegistry.CreateAsync();
        fake.FailNext(Enumerable.Repeat(HttpStatusCode.InternalServerError, 10).ToArray());
        using var store = NewStore(fake);

        var e = await Assert.ThrowsAsync<ImagePullException>(() => store.PullAsync(Busybox, PullPolicy.Always, null, CancellationToken.None));

        Assert.True(e.Transient);
        Assert.EndsWith("(HTTP 500)", e.Message);
        Assert.Equal(4, fake.Requests.Count); // bounded attempts
    }

    [Fact]
    public async Task PullAsync_RejectsForeignLayers_WithClearMessage()
    {
        var fake = await FakeRegistry.CreateAsync(layerMediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip");
        using var store = NewStore(fake);

        var e = await Assert.ThrowsAsync<ImagePullException>(() => store.PullAsync(Busybox, PullPolicy.Always, null, CancellationToken.None));

        Assert.Contains("foreign (non-distributable) layer", e.Message);
        Assert.DoesNotContain(fake.Requests, r => r.Path.Contains("/blobs/"));
    }

    [Fact]
    public void BaseUri_UsesHttpOnlyForLoopbackAndInsecure_AndMapsDockerHub()
    {
        using var client = new Registry.RegistryClient(new ImageStoreOptions { Root = _root, InsecureRegistries = ["registry.lan:5000"] });

        Assert.Equal("http://127.0.0.1:5000/", client.BaseUri("127.0.0.1:5000").ToString());
        Assert.Equal("http://localhost:5000/", client.BaseUri("localhost:5000").ToString());
        Assert.Equal("http://[::1]:5000/", client.BaseUri("[::1]:5000").ToString());
        Assert.Equal("http://registry.lan:5000/", client.BaseUri("registry.lan:5000").ToString());
        Assert.Equal("https://ghcr.io/", client.BaseUri("ghcr.io").ToString());
        Assert.Equal("https://registry-1.docker.io/", client.BaseUri("docker.io").ToString());
    }
}

/// <summary>
/// An in-process registry at https://fake.test serving the TestImages OCI layout, with an optional token service at
/// https://auth.fake.test (user alice, password pw, or identity token idtok-1; anonymous too when asked, as Docker Hub)
/// and optional blob redirects to https://storage.fake.test.
/// </summary>
internal sealed class FakeRegistry : HttpMessageHandler
{
    public sealed record Seen(string Host, string Path, string Query, string? AuthScheme);

    private readonly string _layout;
    private readonly bool _requireToken, _redirectBlobs, _anonymousTokens;
    private readonly string? _layerMediaType;
    private readonly bool _wrongDiffId;
    private readonly ConcurrentDictionary<string, byte[]> _extraBlobs = new();
    private readonly ConcurrentQueue<Seen> _requests = new();
    private readonly ConcurrentQueue<HttpStatusCode> _failures = new();
    private int _tokenGeneration = 1;

    private FakeRegistry(string layout, bool requireToken, bool redirectBlobs, string? layerMediaType, bool wrongDiffId, bool anonymousTokens)
    {
        _anonymousTokens = anonymousTokens;
        _wrongDiffId = wrongDiffId;
        _layout = layout;
        _requireToken = requireToken;
        _redirectBlobs = redirectBlobs;
        _layerMediaType = layerMediaType;
    }

    /// <param name="wrongDiffId">Serve a config whose rootfs.diff_ids do not match the layer.</param>
    /// <param name="anonymousTokens">The token service also gives tokens to requests without credentials.</param>
    public static async Task<FakeRegistry> CreateAsync(bool requireToken = false, bool redirectBlobs = false, string? layerMediaType = null, bool wrongDiffId = false, bool anonymousTokens = false) =>
        new(await TestImages.LayoutAsync(), requireToken, redirectBlobs, layerMediaType, wrongDiffId, anonymousTokens);

    public IReadOnlyList<Seen> Requests => _requests.ToArray();
    public void RevokeTokens() => Interlocked.Increment(ref _tokenGeneration);
    public void FailNext(params HttpStatusCode[] statuses) { foreach (var s in statuses) _failures.Enqueue(s); }

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        var uri = request.RequestUri!;
        _requests.Enqueue(new Seen(uri.Host, uri.AbsolutePath, uri.Query, request.Headers.Authorization?.Scheme));
        if (_failures.TryDequeue(out var failure))
        {
            var r = new HttpResponseMessage(failure) { Content = Json("""{"errors":[]}""") };
            if (failure == HttpStatusCode.TooManyRequests) r.Headers.RetryAfter = new RetryConditionHeaderValue(TimeSpan.Zero);
            return r;
        }
        return uri.Host switch
        {
            "auth.fake.test" => Token(request),
            "storage.fake.test" => await BlobAsync(Path.GetFileName(uri.AbsolutePath)),
            "fake.test" => await RegistryAsync(request),
            _ => throw new HttpRequestException($"unexpected host {uri.Host}"),
        };
    }

    private HttpResponseMessage Token(HttpRequestMessage request)
    {
        if (request.Method == HttpMethod.Post)
        {
            // Docker's OAuth2 refresh-token grant, used with an identity token.
            var form = request.Content!.ReadAsStringAsync().GetAwaiter().GetResult();
            return form.Contains("grant_type=refresh_token") && form.Contains("refresh_token=idtok-1")
                ? new HttpResponseMessage(HttpStatusCode.OK) { Content = Json($$"""{"access_token":"tok-{{_tokenGeneration}}","expires_in":300}""") }
                : new HttpResponseMessage(HttpStatusCode.Unauthorized) { Content = Json("""{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}""") };
        }
        var expected = Convert.ToBase64String(Encoding.UTF8.GetBytes("alice:pw"));
        var anonymous = _anonymousTokens && request.Headers.Authorization is null;
        if (!anonymous && (request.Headers.Authorization is not { Scheme: "Basic" } a || a.Parameter != expected))
            return new HttpResponseMessage(HttpStatusCode.Unauthorized)
            {
                Content = Json("""{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"""),
            };
        return new HttpResponseMessage(HttpStatusCode.OK) { Content = Json($$"""{"token":"tok-{{_tokenGeneration}}","expires_in":300}""") };
    }

    private async Task<HttpResponseMessage> RegistryAsync(HttpRequestMessage request)
    {
        if (_requireToken && (request.Headers.Authorization is not { Scheme: "Bearer" } auth || auth.Parameter != $"tok-{_tokenGeneration}"))
        {
            var r = new HttpResponseMessage(HttpStatusCode.Unauthorized)
            {
                Content = Json("""{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"""),
            };
            r.Headers.WwwAuthenticate.ParseAdd("Bearer realm=\"https://auth.fake.test/token\",service=\"fake.test\",scope=\"repository:demo/busybox:pull\"");
            return r;
        }
        var path = request.RequestUri!.AbsolutePath; // /v2/demo/busybox/manifests/TAG or /blobs/DIGEST
        var last = Path.GetFileName(path);
        if (path.Contains("/manifests/"))
        {
            var digest = last.StartsWith("sha256:") ? last : TagDigest(last);
            if (digest is null) return new HttpResponseMessage(HttpStatusCode.NotFound) { Content = Json("""{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}""") };
            var bytes = await File.ReadAllBytesAsync(Path.Combine(_layout, "blobs", "sha256", digest[7..]));
            if (_layerMediaType is not null)
                bytes = Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(bytes).Replace("application/vnd.oci.image.layer.v1.tar+gzip", _layerMediaType));
            if (_wrongDiffId)
                bytes = await WithWrongDiffIdAsync(bytes);
            var resp = new HttpResponseMessage(HttpStatusCode.OK) { Content = new ByteArrayContent(bytes) };
            resp.Content.Headers.ContentType = new MediaTypeHeaderValue("application/vnd.oci.image.manifest.v1+json");
            return resp;
        }
        if (_redirectBlobs)
        {
            var redirect = new HttpResponseMessage(HttpStatusCode.TemporaryRedirect);
            redirect.Headers.Location = new Uri($"https://storage.fake.test/blob/{last[7..]}?sig=abc");
            return redirect;
        }
        return await BlobAsync(last[7..]);
    }

    private async Task<byte[]> WithWrongDiffIdAsync(byte[] manifest)
    {
        var text = Encoding.UTF8.GetString(manifest);
        using var doc = JsonDocument.Parse(manifest);
        var configDigest = doc.RootElement.GetProperty("config").GetProperty("digest").GetString()!;
        var config = Encoding.UTF8.GetString(await File.ReadAllBytesAsync(Path.Combine(_layout, "blobs", "sha256", configDigest[7..])));
        using var configDoc = JsonDocument.Parse(config);
        var diffId = configDoc.RootElement.GetProperty("rootfs").GetProperty("diff_ids")[0].GetString()!;
        var wrongConfig = Encoding.UTF8.GetBytes(config.Replace(diffId, "sha256:" + new string('0', 64)));
        var wrongDigest = "sha256:" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(wrongConfig));
        _extraBlobs[wrongDigest[7..]] = wrongConfig;
        return Encoding.UTF8.GetBytes(text.Replace(configDigest, wrongDigest).Replace($"\"size\":{new System.IO.FileInfo(Path.Combine(_layout, "blobs", "sha256", configDigest[7..])).Length}", $"\"size\":{wrongConfig.Length}"));
    }

    private async Task<HttpResponseMessage> BlobAsync(string hex)
    {
        if (_extraBlobs.TryGetValue(hex, out var extra)) return new HttpResponseMessage(HttpStatusCode.OK) { Content = new ByteArrayContent(extra) };
        var path = Path.Combine(_layout, "blobs", "sha256", hex);
        if (!File.Exists(path)) return new HttpResponseMessage(HttpStatusCode.NotFound);
        return new HttpResponseMessage(HttpStatusCode.OK) { Content = new ByteArrayContent(await File.ReadAllBytesAsync(path)) };
    }

    private string? TagDigest(string tag)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(_layout, "index.json")));
        foreach (var m in doc.RootElement.GetProperty("manifests").EnumerateArray())
            if (m.TryGetProperty("annotations", out var a) && a.TryGetProperty("org.opencontainers.image.ref.name", out var n) && n.GetString() == tag)
                return m.GetProperty("digest").GetString();
        return null;
    }

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");
}
