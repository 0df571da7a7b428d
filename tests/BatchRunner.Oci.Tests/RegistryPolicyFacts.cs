using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using BatchRunner.Oci.Registry;
using BatchRunner.Oci.Store;

namespace BatchRunner.Oci.Tests;

/// <summary>
/// AllowedRegistries (SSRF): which registries, redirect targets and token services a pull may contact, judged by
/// pattern, by name or literal address, and by the address a connection is really made to; and registry error
/// bodies quoted short and clean.
/// </summary>
public sealed class RegistryPolicyFacts : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("br-registrypolicy-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static Uri Base(string registry) => new($"{(registry.StartsWith("127.", StringComparison.Ordinal) ? "http" : "https")}://{registry}");

    [Theory]
    [InlineData("*", "ghcr.io", true)]
    [InlineData("*", "registry.example.com:5000", true)]
    [InlineData("ghcr.io", "ghcr.io", true)]
    [InlineData("ghcr.io", "GHCR.IO", true)]
    [InlineData("ghcr.io", "docker.io", false)]
    [InlineData("*.example.com", "registry.example.com", true)]
    [InlineData("*.example.com", "a.b.example.com:5000", true)]
    [InlineData("*.example.com", "example.com", false)]
    [InlineData("*.example.com", "evilexample.com", false)]
    [InlineData("registry.example.com:5000", "registry.example.com:5000", true)]
    [InlineData("registry.example.com:5000", "registry.example.com:5001", false)]
    [InlineData("registry.example.com:443", "registry.example.com", true)]
    [InlineData("127.0.0.1:5000", "127.0.0.1:5000", true)]
    [InlineData("127.0.0.1:5000", "127.0.0.1:5001", false)]
    [InlineData("127.0.0.1", "127.0.0.1:5001", true)]
    public void CheckRegistry_MatchesHostPatterns(string pattern, string registry, bool allowed)
    {
        var policy = new RegistryPolicy([pattern]);
        var refusal = policy.CheckRegistry(registry, Base(registry.ToLowerInvariant()));
        Assert.True(allowed == (refusal is null), refusal ?? "allowed");
    }

    [Theory]
    [InlineData("127.0.0.1:5000", "a loopback address")]
    [InlineData("127.9.9.9", "a loopback address")]
    [InlineData("[::1]:5000", "a loopback address")]
    [InlineData("0.0.0.0:5000", "0.0.0.0/8")]
    [InlineData("169.254.169.254", "a cloud metadata address")]
    [InlineData("169.254.10.1:80", "a link-local address")]
    [InlineData("[fe80::1]:5000", "a link-local address")]
    [InlineData("[fd00:ec2::254]", "a cloud metadata address")]
    [InlineData("[::ffff:127.0.0.1]:5000", "a loopback address")]
    [InlineData("[64:ff9b::a9fe:a9fe]", "a cloud metadata address")]
    [InlineData("metadata.google.internal", "a cloud metadata service")]
    [InlineData("Metadata.Google.Internal.", "a cloud metadata service")]
    public void CheckRegistry_RefusesSpecialHosts_UnderTheDefaultPolicy(string registry, string kind)
    {
        var refusal = RegistryPolicy.PublicHosts.CheckRegistry(registry, Base(registry));
        Assert.NotNull(refusal);
        Assert.Contains(kind, refusal);
        Assert.Contains("AllowedRegistries", refusal);
    }

    [Fact]
    public void CheckRegistry_AllowsASpecialHost_OnlyWhenAnEntryNamesIt()
    {
        var policy = new RegistryPolicy(["*", "127.0.0.1:5000", "metadata.google.internal"]);
        Assert.Null(policy.CheckRegistry("127.0.0.1:5000", Base("127.0.0.1:5000")));
        Assert.NotNull(policy.CheckRegistry("127.0.0.1:5001", Base("127.0.0.1:5001"))); // "*" is not an explicit entry
        Assert.Null(policy.CheckRegistry("metadata.google.internal", Base("metadata.google.internal")));
        Assert.Null(policy.CheckAddress("127.0.0.1", 5000, IPAddress.Loopback));
        Assert.NotNull(policy.CheckAddress("localhost", 5000, IPAddress.Loopback));
        Assert.Null(policy.CheckAddress("registry.example.com", 443, IPAddress.Parse("203.0.113.7")));
        Assert.Null(policy.CheckAddress("registry.example.com", 443, IPAddress.Parse("10.1.2.3"))); // private ranges are ordinary
    }

    [Theory]
    [InlineData("")]
    [InlineData("http://ghcr.io")]
    [InlineData("ghcr.io:0")]
    [InlineData("ghcr.io:port")]
    [InlineData("a.*.example.com")]
    [InlineData("[::1")]
    [InlineData("[nothost]:5000")]
    [InlineData("ghcr.io/path")]
    public void Validate_NamesTheBadPattern(string pattern)
    {
        var error = RegistryPolicy.Validate(pattern);
        Assert.NotNull(error);
        Assert.Contains($"\"{pattern}\"", error);
    }

    [Fact]
    public async Task PullAsync_RefusesLoopbackAndMetadataRegistries_WithoutARequest_ByDefault()
    {
        var http = new ScriptedRegistry(_ => new HttpResponseMessage(HttpStatusCode.NotFound));
        using var store = new ImageStore(new ImageStoreOptions { Root = _root }, httpHandler: http);
        foreach (var (image, expected) in new[]
                 {
                     ("127.0.0.1:5000/demo/x:1", "registry 127.0.0.1:5000: 127.0.0.1 is a loopback address"),
                     ("169.254.169.254/latest/meta-data:1", "registry 169.254.169.254: 169.254.169.254 is a cloud metadata address"),
                 })
        {
            var e = await Assert.ThrowsAsync<ImagePullException>(() =>
                store.PullAsync(ImageReference.Parse(image), PullPolicy.Always, null, CancellationToken.None));
            Assert.StartsWith($"image {image}: pull refused: registry ", e.Message);
            Assert.EndsWith("(refused unless AllowedRegistries names the host explicitly)", e.Message);
            Assert.Contains(expected, e.Message);
            Assert.Contains("AllowedRegistries", e.Message);
            Assert.False(e.Transient);
        }
        Assert.Empty(http.Hosts);
    }

    [Fact]
    public async Task PullAsync_RefusesARegistryNotInThePatterns()
    {
        var http = new ScriptedRegistry(_ => new HttpResponseMessage(HttpStatusCode.NotFound));
        using var store = new ImageStore(new ImageStoreOptions { Root = _root, RegistryPolicy = new RegistryPolicy(["*.corp.example"]) }, httpHandler: http);
        var e = await Assert.ThrowsAsync<ImagePullException>(() =>
            store.PullAsync(ImageReference.Parse("ghcr.io/demo/x:1"), PullPolicy.Always, null, CancellationToken.None));
        Assert.Equal("image ghcr.io/demo/x:1: pull refused: registry ghcr.io is not in AllowedRegistries (*.corp.example)", e.Message);
        Assert.Empty(http.Hosts);
    }

    [Fact]
    public async Task PullAsync_RefusesARedirectToTheMetadataService()
    {
        var http = new ScriptedRegistry(req =>
        {
            var r = new HttpResponseMessage(HttpStatusCode.TemporaryRedirect);
            r.Headers.Location = new Uri("http://169.254.169.254/latest/meta-data/iam/security-credentials/");
            return r;
        });
        using var store = new ImageStore(new ImageStoreOptions { Root = _root }, httpHandler: http);
        var e = await Assert.ThrowsAsync<ImagePullException>(() =>
            store.PullAsync(ImageReference.Parse("registry.example.com/demo/x:1"), PullPolicy.Always, null, CancellationToken.None));
        Assert.Contains("pull refused: redirect from registry registry.example.com: 169.254.169.254 is a cloud metadata address", e.Message);
        Assert.Equal(["registry.example.com"], http.Hosts.Distinct());
    }

    [Fact]
    public async Task PullAsync_RefusesATokenRealmOnLoopback()
    {
        var http = new ScriptedRegistry(req =>
        {
            var r = new HttpResponseMessage(HttpStatusCode.Unauthorized);
            r.Headers.WwwAuthenticate.ParseAdd("Bearer realm=\"http://127.0.0.1:9/token\",service=\"registry.example.com\"");
            return r;
        });
        using var store = new ImageStore(new ImageStoreOptions { Root = _root }, httpHandler: http);
        var e = await Assert.ThrowsAsync<ImagePullException>(() =>
            store.PullAsync(ImageReference.Parse("registry.example.com/demo/x:1"), PullPolicy.Always, null, CancellationToken.None));
        Assert.Contains("pull refused: token service of registry registry.example.com: 127.0.0.1 is a loopback address", e.Message);
        Assert.Equal(["registry.example.com"], http.Hosts.Distinct());
    }

    [Fact]
    public async Task PullAsync_RefusesANameResolvingToLoopback_AtConnectTime_AndConnectsWhenTheNameIsListed()
    {
        // A real socket and the real transport: "localhost" is no special name, its address is what is refused.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var image = ImageReference.Parse($"localhost:{port}/demo/x:1");

        using (var store = new ImageStore(new ImageStoreOptions { Root = Path.Combine(_root, "a") }))
        {
            var e = await Assert.ThrowsAsync<ImagePullException>(() => store.PullAsync(image, PullPolicy.Always, null, CancellationToken.None));
            Assert.Contains($"pull refused: localhost resolves to ", e.Message);
            Assert.Contains("a loopback address (refused unless AllowedRegistries names the host explicitly)", e.Message);
            Assert.False(e.Transient);
            Assert.False(listener.Pending(), "the refused pull connected anyway");
        }

        // Listed by name, the same registry is contacted (it answers 404 to everything).
        var served = AnswerOne404Async(listener);
        using (var store = new ImageStore(new ImageStoreOptions { Root = Path.Combine(_root, "b"), RegistryPolicy = new RegistryPolicy(["localhost"]) }))
        {
            var e = await Assert.ThrowsAsync<ImagePullException>(() => store.PullAsync(image, PullPolicy.Always, null, CancellationToken.None));
            Assert.Contains("(HTTP 404)", e.Message);
        }
        await served.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task PullAsync_ThroughAProxy_JudgesTheTargetByWhatItResolvesTo_NotTheProxy()
    {
        // A proxy on loopback is the operator's; the registry behind it still may not be a loopback one.
        using var proxy = new TcpListener(IPAddress.Loopback, 0);
        proxy.Start();
        SocketsHttpHandler Transport()
        {
            var h = Registry.RegistryClient.CreateDefaultHandler(RegistryPolicy.PublicHosts);
            h.Proxy = new WebProxy($"http://127.0.0.1:{((IPEndPoint)proxy.LocalEndpoint).Port}");
            h.UseProxy = true;
            return h;
        }

        using (var store = new ImageStore(new ImageStoreOptions { Root = Path.Combine(_root, "a"), InsecureRegistries = ["localhost:5000"] }, httpHandler: Transport()))
        {
            var e = await Assert.ThrowsAsync<ImagePullException>(() =>
                store.PullAsync(ImageReference.Parse("localhost:5000/demo/x:1"), PullPolicy.Always, null, CancellationToken.None));
            Assert.Contains("pull refused: localhost resolves to ", e.Message);
            Assert.False(proxy.Pending(), "the refused pull reached the proxy");
        }

        // A name only the proxy can resolve goes to the proxy (which answers 404 to everything).
        var served = AnswerOne404Async(proxy);
        using (var store = new ImageStore(new ImageStoreOptions { Root = Path.Combine(_root, "b"), InsecureRegistries = ["registry.invalid"] }, httpHandler: Transport()))
        {
            var e = await Assert.ThrowsAsync<ImagePullException>(() =>
                store.PullAsync(ImageReference.Parse("registry.invalid/demo/x:1"), PullPolicy.Always, null, CancellationToken.None));
            Assert.Contains("(HTTP 404)", e.Message);
        }
        await served.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task PullAsync_QuotesARegistryErrorShortAndOnOneLine()
    {
        var body = "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"first line\\nsecond\\u001b[31m line\\u202e " + new string('x', 5000) + "\"}]}";
        var http = new ScriptedRegistry(_ => new HttpResponseMessage(HttpStatusCode.NotFound) { Content = new StringContent(body, Encoding.UTF8, "application/json") });
        using var store = new ImageStore(new ImageStoreOptions { Root = _root }, httpHandler: http);
        var e = await Assert.ThrowsAsync<ImagePullException>(() =>
            store.PullAsync(ImageReference.Parse("registry.example.com/demo/x:1"), PullPolicy.Always, null, CancellationToken.None));
        Assert.StartsWith("image registry.example.com/demo/x:1: first line second [31m line xxx", e.Message);
        Assert.EndsWith("… (HTTP 404)", e.Message);
        Assert.True(e.Message.Length < 300, $"{e.Message.Length} characters");
        Assert.DoesNotContain(e.Message, char.IsControl);
        Assert.DoesNotContain('\u202e', e.Message);
    }

    [Theory]
    [InlineData("plain", "plain")]
    [InlineData("  two\r\nlines\t ", "two lines")]
    [InlineData("bell\u0007and\u0085next\u2028sep", "bell and next sep")]
    [InlineData("rtl\u202eevil", "rtl evil")]
    [InlineData("abcdefghij", "abcd…")]
    public void Quote_RemovesControlCharacters_AndCaps(string text, string expected) =>
        Assert.Equal(expected, RemoteText.Quote(text, text.StartsWith("abc", StringComparison.Ordinal) ? 4 : 200));

    /// <summary>Accepts one connection and answers its request with a 404: proof that a pull got through.</summary>
    private static Task AnswerOne404Async(TcpListener listener) => Task.Run(async () =>
    {
        using var client = await listener.AcceptTcpClientAsync();
        var stream = client.GetStream();
        _ = await stream.ReadAsync(new byte[4096]);
        await stream.WriteAsync("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"u8.ToArray());
    });

    /// <summary>Answers every request with what <c>answer</c> makes and records the hosts asked.</summary>
    private sealed class ScriptedRegistry(Func<HttpRequestMessage, HttpResponseMessage> answer) : HttpMessageHandler
    {
        private readonly ConcurrentQueue<string> _hosts = new();
        public IReadOnlyList<string> Hosts => _hosts.ToArray();

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            _hosts.Enqueue(request.RequestUri!.Host);
            return Task.FromResult(answer(request));
        }
    }
}
