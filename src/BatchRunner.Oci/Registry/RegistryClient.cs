using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BatchRunner.Oci.Registry;

/// <summary>A manifest or index as the registry served it; <see cref="Digest"/> is the sha256 of <see cref="Content"/>.</summary>
public sealed record FetchedManifest(string MediaType, string Digest, byte[] Content);

/// <summary>
/// An open blob body. <see cref="StartOffset"/> is where <see cref="Content"/> begins: the requested offset when the
/// registry honoured the Range header, 0 when it sent the whole blob. Dispose to release the connection.
/// </summary>
public sealed class BlobResponse(HttpResponseMessage response, Stream content, long startOffset) : IDisposable
{
    public Stream Content { get; } = content;
    public long StartOffset { get; } = startOffset;
    /// <summary>Total blob length when the registry said it, else null.</summary>
    public long? TotalLength { get; } =
        response.Content.Headers.ContentRange?.Length ?? response.Content.Headers.ContentLength + startOffset;

    public void Dispose()
    {
        Content.Dispose();
        response.Dispose();
    }
}

/// <summary>
/// A pull-only client for the OCI distribution API (v2) with Docker's auth flows.
/// </summary>
/// <remarks>
/// <para>Transport: plain HTTP for loopback registries and <see cref="ImageStoreOptions.InsecureRegistries"/>, HTTPS
/// otherwise; <c>docker.io</c> is served by <c>registry-1.docker.io</c>. Redirects (blob storage, CDNs) are followed
/// here rather than by the handler so that the Authorization header never goes to another host.</para>
/// <para>Auth: anonymous first; on a 401 the <c>WWW-Authenticate</c> challenge decides: Bearer → a token from the realm
/// (Basic credentials, or an identity token as OAuth2 refresh token, when configured), cached per registry and scope
/// until shortly before expiry; Basic → the configured username and password. A request re-authenticates once.</para>
/// <para>Credentials: <see cref="ImageStoreOptions.Credentials"/> for a registry listed there, else
/// <see cref="ImageStoreOptions.CredentialSource"/>, asked each time a request needs one (it caches); a 401 tells the
/// source to forget its answer. A source that fails fails the pull with its message.</para>
/// <para>Policy: <see cref="ImageStoreOptions.RegistryPolicy"/> is asked before the first request to the registry,
/// before following a redirect and before asking a token realm, and the default transport connects only to
/// addresses it allows (<see cref="RegistryPolicy.ConnectAsync"/>). A refusal fails the pull at once, not
/// transient.</para>
/// <para>Failures become <see cref="ImagePullException"/> naming the image and the registry's reason, quoted short
/// and without control characters (<see cref="RemoteText"/>); 5xx, 429 and dropped connections are retried a few
/// times with backoff and are transient when they persist. Credentials never appear in logs or messages.</para>
/// </remarks>
public sealed partial class RegistryClient : IDisposable
{
    private const int MaxAttempts = 4;
    private const int MaxRedirects = 5;
    private const int MaxManifestBytes = 4 * 1024 * 1024;
    private static readonly TimeSpan HeadersTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan MaxRetryAfter = TimeSpan.FromSeconds(30);
    // Refresh a token this long before the registry says it expires, so it cannot expire in flight.
    private static readonly TimeSpan TokenExpirySlack = TimeSpan.FromSeconds(10);

    private readonly ImageStoreOptions _options;
    private readonly RegistryPolicy _policy;
    private readonly HttpClient _http;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, CachedToken> _tokens = new();
    // The last challenge each registry answered with, so later requests authenticate up front.
    private readonly ConcurrentDictionary<string, AuthChallenge> _challenges = new();

    /// <summary>Base delay of the retry backoff (doubles per attempt). Tests may shorten it.</summary>
    internal TimeSpan RetryBaseDelay { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <param name="handler">Transport for tests (e.g. a counting <see cref="DelegatingHandler"/>). A delegating handler
    /// without an inner handler gets the default one. It must not follow redirects itself. A handler of the caller's
    /// own skips the connect-time address check (the checks of names and literal addresses still apply).</param>
    public RegistryClient(ImageStoreOptions options, HttpMessageHandler? handler = null, ILogger? logger = null)
    {
        _options = options;
        _policy = options.RegistryPolicy;
        _logger = logger ?? NullLogger.Instance;
        if (handler is DelegatingHandler { InnerHandler: null } d) d.InnerHandler = CreateDefaultHandler(_policy);
        _http = new HttpClient(handler ?? CreateDefaultHandler(_policy), disposeHandler: true) { Timeout = Timeout.InfiniteTimeSpan };
        _http.DefaultRequestHeaders.UserAgent.ParseAdd("BatchRunner/1.0");
    }

    /// <summary>The transport: no automatic redirects (see remarks), connections only where <paramref name="policy"/> allows.</summary>
    public static SocketsHttpHandler CreateDefaultHandler(RegistryPolicy policy) => new()
    {
        AllowAutoRedirect = false,
        AutomaticDecompression = DecompressionMethods.None,
        ConnectTimeout = TimeSpan.FromSeconds(15),
        PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        MaxConnectionsPerServer = 16,
        ConnectCallback = policy.ConnectAsync,
    };

    public void Dispose() => _http.Dispose();

    /// <summary>The URI prefix of a registry's API ("http://127.0.0.1:5000", "https://registry-1.docker.io").</summary>
    public Uri BaseUri(string registry)
    {
        var host = registry.Equals("docker.io", StringComparison.OrdinalIgnoreCase) ? "registry-1.docker.io" : registry;
        var scheme = IsPlainHttp(registry) ? "http" : "https";
        return new Uri($"{scheme}://{host}");
    }

    private bool IsPlainHttp(string registry)
    {
        if (_options.InsecureRegistries.Any(r => r.Equals(registry, StringComparison.OrdinalIgnoreCase))) return true;
        var host = RegistryPolicy.HostOf(registry);
        if (_options.InsecureRegistries.Any(r => r.Equals(host, StringComparison.OrdinalIgnoreCase))) return true;
        return host.Equals("localhost", StringComparison.OrdinalIgnoreCase) ||
               (IPAddress.TryParse(host, out var ip) && IPAddress.IsLoopback(ip));
    }


    /// <summary>GET a manifest or index by tag or digest. When asked by digest, the body must hash to it.</summary>
    public async Task<FetchedManifest> GetManifestAsync(ImageReference image, string reference, CancellationToken ct)
    {
        var path = $"/v2/{image.Repository}/manifests/{reference}";
        using var resp = await SendAsync(image, path, req =>
        {
            foreach (var mt in MediaTypes.ManifestAccept) req.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(mt));
        }, ct);
        if (!resp.IsSuccessStatusCode) throw await ErrorAsync(image, resp, ct);

        var body = await ReadBoundedAsync(image, resp, MaxManifestBytes, ct);
        var digest = Digests.Sha256(body);
        if (reference.Contains(':') && reference != digest)
            throw new ImagePullException($"image {image}: digest mismatch for manifest {reference} (registry sent content with {digest})");

        var mediaType = resp.Content.Headers.ContentType?.MediaType;
        if (mediaType is null or "application/json" or "text/plain" or "application/octet-stream")
            mediaType = SniffMediaType(body) ?? mediaType ?? "";
        return new FetchedManifest(mediaType, digest, body);
    }

    /// <summary>GET a blob, from <paramref name="offset"/> when the registry supports ranges.</summary>
    public async Task<BlobResponse> OpenBlobAsync(ImageReference image, string digest, long offset, CancellationToken ct)
    {
        Digests.Hex(digest); // rejects malformed digests before they reach a URL
        var path = $"/v2/{image.Repository}/blobs/{digest}";
        var resp = await SendAsync(image, path, req =>
        {
            if (offset > 0) req.Headers.Range = new RangeHeaderValue(offset, null);
        }, ct);
        try
        {
            if (resp.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable && offset > 0)
            {
                resp.Dispose();
                return await OpenBlobAsync(image, digest, 0, ct);
            }
            if (!resp.IsSuccessStatusCode) throw await ErrorAsync(image, resp, ct);
            var start = resp.StatusCode == HttpStatusCode.PartialContent ? resp.Content.Headers.ContentRange?.From ?? 0 : 0;
            var stream = await resp.Content.ReadAsStreamAsync(ct);
            return new BlobResponse(resp, stream, start);
        }
        catch
        {
            resp.Dispose();
            throw;
        }
    }

    // Sends a GET with auth, manual redirects and bounded retries. Returns any final response (success or not)
    // except for connection failures, which become transient ImagePullExceptions.
    private async Task<HttpResponseMessage> SendAsync(ImageReference image, string path, Action<HttpRequestMessage> configure, CancellationToken ct)
    {
        var scope = $"repository:{image.Repository}:pull";
        var baseUri = BaseUri(image.Registry);
        if (_policy.CheckRegistry(image.Registry, baseUri) is { } refused) throw Refused(image, refused);
        var uri = new Uri(baseUri, path);
        var reauthenticated = false;
        for (var attempt = 1; ; attempt++)
        {
            HttpResponseMessage resp;
            try
            {
                resp = await SendFollowingRedirectsAsync(image, baseUri, uri, scope, configure, ct);
            }
            catch (HttpRequestException e) when (e.InnerException is RegistryPolicyException p)
            {
                throw Refused(image, p.Message, e);
            }
            catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException && !ct.IsCancellationRequested)
            {
                if (attempt < MaxAttempts)
                {
                    LogRetry(_logger, image.ToString(), uri.AbsolutePath, attempt, e.Message);
                    await Task.Delay(Backoff(attempt), ct);
                    continue;
                }
                throw new ImagePullException($"image {image}: cannot reach registry {image.Registry}: {e.Message}", e, transient: true);
            }

            if (resp.StatusCode == HttpStatusCode.Unauthorized && !reauthenticated)
            {
                reauthenticated = true;
                if (await AuthenticateAsync(image, resp, scope, ct))
                {
                    resp.Dispose();
                    attempt--; // authenticating is not a failed attempt
                    continue;
                }
            }

            if ((resp.StatusCode == HttpStatusCode.TooManyRequests || (int)resp.StatusCode >= 500) && attempt < MaxAttempts)
            {
                var delay = RetryAfter(resp) ?? Backoff(attempt);
                LogRetry(_logger, image.ToString(), uri.AbsolutePath, attempt, $"HTTP {(int)resp.StatusCode}");
                resp.Dispose();
                await Task.Delay(delay, ct);
                continue;
            }
            return resp;
        }
    }

    private async Task<HttpResponseMessage> SendFollowingRedirectsAsync(
        ImageReference image, Uri registryUri, Uri uri, string scope, Action<HttpRequestMessage> configure, CancellationToken ct)
    {
        for (var hop = 0; ; hop++)
        {
            using var req = new HttpRequestMessage(HttpMethod.Get, uri);
            configure(req);
            // Credentials and tokens are for the registry only: a redirect to blob storage must not carry them
            // (pre-signed URLs also reject a second Authorization).
            if (SameOrigin(uri, registryUri))
                req.Headers.Authorization = await AuthorizationAsync(image, scope, ct);

            using var headersCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            headersCts.CancelAfter(HeadersTimeout);
            var resp = await _http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, headersCts.Token);
            if (!IsRedirect(resp.StatusCode)) return resp;

            var location = resp.Headers.Location;
            resp.Dispose();
            if (location is null || hop >= MaxRedirects)
                throw new ImagePullException($"image {image}: registry {image.Registry} sent a redirect without a usable Location");
            uri = location.IsAbsoluteUri ? location : new Uri(uri, location);
            if (_policy.CheckHost(uri, $"redirect from registry {image.Registry}") is { } refused) throw Refused(image, refused);
        }
    }

    private ImagePullException Refused(ImageReference image, string reason, Exception? inner = null) =>
        new($"image {image}: pull refused: {reason}", inner);

    private static bool IsRedirect(HttpStatusCode s) =>
        s is HttpStatusCode.MovedPermanently or HttpStatusCode.Found or HttpStatusCode.SeeOther
            or HttpStatusCode.TemporaryRedirect or HttpStatusCode.PermanentRedirect;

    private static bool SameOrigin(Uri a, Uri b) =>
        a.Scheme == b.Scheme && a.Port == b.Port && string.Equals(a.Host, b.Host, StringComparison.OrdinalIgnoreCase);

    private RegistryCredential? ConfiguredCredential(string registry)
    {
        var normalized = DockerConfigCredentials.NormalizeRegistry(registry);
        return _options.Credentials.LastOrDefault(c =>
            DockerConfigCredentials.NormalizeRegistry(c.Registry).Equals(normalized, StringComparison.OrdinalIgnoreCase));
    }

    private async ValueTask<RegistryCredential?> CredentialForAsync(ImageReference image, CancellationToken ct)
    {
        if (ConfiguredCredential(image.Registry) is { } configured) return configured;
        if (_options.CredentialSource is not { } source) return null;
        try
        {
            return await source.GetAsync(image.Registry, ct);
        }
        catch (RegistryCredentialException e)
        {
            throw new ImagePullException($"image {image}: {e.Message}", e, e.Transient);
        }
    }

    // The header for a request to the registry itself, from what earlier challenges taught us (null: anonymous).
    private async Task<AuthenticationHeaderValue?> AuthorizationAsync(ImageReference image, string scope, CancellationToken ct)
    {
        if (!_challenges.TryGetValue(image.Registry, out var challenge)) return null;
        if (challenge.IsBasic) return BasicHeader(await CredentialForAsync(image, ct));
        if (!challenge.IsBearer) return null;
        var key = TokenKey(image.Registry, scope);
        if (_tokens.TryGetValue(key, out var cached) && cached.ExpiresAt > DateTimeOffset.UtcNow)
            return new AuthenticationHeaderValue("Bearer", cached.Token);
        // Known Bearer registry, token missing or expired: fetch one now rather than collect another 401.
        var token = await FetchTokenAsync(image, challenge, scope, ct);
        return new AuthenticationHeaderValue("Bearer", token);
    }

    private static AuthenticationHeaderValue? BasicHeader(RegistryCredential? c) =>
        c is { Username: not null } || c is { Password: not null }
            ? new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{c.Username}:{c.Password}")))
            : null;

    private static string TokenKey(string registry, string scope) => registry + "|" + scope;

    // Learns from a 401 how to authenticate. True when the request is worth repeating with new credentials.
    private async Task<bool> AuthenticateAsync(ImageReference image, HttpResponseMessage resp, string scope, CancellationToken ct)
    {
        var header = resp.Headers.WwwAuthenticate.FirstOrDefault(h => h.Scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase))
                     ?? resp.Headers.WwwAuthenticate.FirstOrDefault();
        if (header is null) return false;
        var challenge = AuthChallenge.Parse(header.Scheme, header.Parameter);
        var previous = _challenges.GetValueOrDefault(image.Registry);
        _challenges[image.Registry] = challenge;
        if (challenge.IsBasic)
        {
            // Repeating only helps when we have credentials and did not send them already.
            return previous is not { IsBasic: true } && BasicHeader(await CredentialForAsync(image, ct)) is not null;
        }
        if (challenge.IsBearer && challenge.Realm is not null)
        {
            // The cached token was refused (expired early or revoked): fetch a fresh one, once.
            _tokens.TryRemove(TokenKey(image.Registry, scope), out _);
            await FetchTokenAsync(image, challenge, scope, ct);
            return true;
        }
        return false;
    }

    private async Task<string> FetchTokenAsync(ImageReference image, AuthChallenge challenge, string scope, CancellationToken ct)
    {
        var credential = await CredentialForAsync(image, ct);
        var query = new StringBuilder();
        if (challenge.Service is { } service) query.Append("service=").Append(Uri.EscapeDataString(service));
        query.Append(query.Length > 0 ? "&" : "").Append("scope=").Append(Uri.EscapeDataString(scope));
        if (!Uri.TryCreate(challenge.Realm, UriKind.Absolute, out var realmUri))
            throw new ImagePullException($"image {image}: registry {image.Registry} names a token service that is not a URL: \"{RemoteText.Quote(challenge.Realm, 100)}\"");
        if (_policy.CheckHost(realmUri, $"token service of registry {image.Registry}") is { } refused)
            throw Refused(image, refused);
        var realm = new UriBuilder(realmUri);

        HttpRequestMessage NewRequest()
        {
            if (credential?.IdentityToken is { } refresh)
            {
                // Docker's OAuth2 flow: an identity token is a refresh token, exchanged by POST.
                var form = new Dictionary<string, string>
                {
                    ["grant_type"] = "refresh_token",
                    ["refresh_token"] = refresh,
                    ["client_id"] = "batchrunner",
                    ["scope"] = scope,
                };
                if (challenge.Service is { } s) form["service"] = s;
                return new HttpRequestMessage(HttpMethod.Post, realm.Uri) { Content = new FormUrlEncodedContent(form) };
            }
            var uri = new UriBuilder(realm.Uri) { Query = string.IsNullOrEmpty(realm.Query) ? query.ToString() : realm.Query.TrimStart('?') + "&" + query };
            var req = new HttpRequestMessage(HttpMethod.Get, uri.Uri);
            req.Headers.Authorization = BasicHeader(credential);
            return req;
        }

        for (var attempt = 1; ; attempt++)
        {
            HttpResponseMessage resp;
            try
            {
                using var req = NewRequest();
                using var headersCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
                headersCts.CancelAfter(HeadersTimeout);
                resp = await _http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, headersCts.Token);
            }
            catch (HttpRequestException e) when (e.InnerException is RegistryPolicyException p)
            {
                throw Refused(image, p.Message, e);
            }
            catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException && !ct.IsCancellationRequested)
            {
                if (attempt < MaxAttempts) { await Task.Delay(Backoff(attempt), ct); continue; }
                throw new ImagePullException($"image {image}: cannot reach the token service of {image.Registry}: {e.Message}", e, transient: true);
            }
            using (resp)
            {
                if ((resp.StatusCode == HttpStatusCode.TooManyRequests || (int)resp.StatusCode >= 500) && attempt < MaxAttempts)
                {
                    await Task.Delay(RetryAfter(resp) ?? Backoff(attempt), ct);
                    continue;
                }
                if (!resp.IsSuccessStatusCode)
                {
                    var error = await ErrorAsync(image, resp, ct);
                    throw error;
                }
                var body = await ReadBoundedAsync(image, resp, 1024 * 1024, ct);
                string? token = null;
                var expiresIn = 60;
                try
                {
                    using var doc = JsonDocument.Parse(body);
                    var root = doc.RootElement;
                    if (root.TryGetProperty("token", out var t) && t.ValueKind == JsonValueKind.String) token = t.GetString();
                    if (string.IsNullOrEmpty(token) && root.TryGetProperty("access_token", out var a) && a.ValueKind == JsonValueKind.String) token = a.GetString();
                    if (root.TryGetProperty("expires_in", out var e) && e.TryGetInt32(out var secs) && secs > 0) expiresIn = secs;
                }
                catch (JsonException) { }
                if (string.IsNullOrEmpty(token))
                    throw new ImagePullException($"image {image}: the token service of {image.Registry} returned no token");

                var lifetime = TimeSpan.FromSeconds(expiresIn);
                lifetime = lifetime > TokenExpirySlack * 2 ? lifetime - TokenExpirySlack : lifetime / 2;
                _tokens[TokenKey(image.Registry, scope)] = new CachedToken(token, DateTimeOffset.UtcNow + lifetime);
                LogTokenFetched(_logger, image.Registry, scope, expiresIn);
                return token;
            }
        }
    }

    private TimeSpan Backoff(int attempt) => RetryBaseDelay * Math.Pow(2, attempt - 1);

    private static TimeSpan? RetryAfter(HttpResponseMessage resp)
    {
        var ra = resp.Headers.RetryAfter;
        TimeSpan? delay = ra?.Delta ?? (ra?.Date is { } date ? date - DateTimeOffset.UtcNow : null);
        if (delay is null) return null;
        if (delay < TimeSpan.Zero) return TimeSpan.Zero;
        return delay > MaxRetryAfter ? MaxRetryAfter : delay;
    }

    private static async Task<byte[]> ReadBoundedAsync(ImageReference image, HttpResponseMessage resp, int max, CancellationToken ct)
    {
        if (resp.Content.Headers.ContentLength > max)
            throw new ImagePullException($"image {image}: registry response is larger than {max} bytes");
        await using var s = await resp.Content.ReadAsStreamAsync(ct);
        using var ms = new MemoryStream();
        var buffer = new byte[81920];
        int n;
        while ((n = await s.ReadAsync(buffer, ct)) > 0)
        {
            if (ms.Length + n > max) throw new ImagePullException($"image {image}: registry response is larger than {max} bytes");
            ms.Write(buffer, 0, n);
        }
        return ms.ToArray();
    }

    private static string? SniffMediaType(byte[] body)
    {
        try
        {
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.TryGetProperty("mediaType", out var mt) && mt.ValueKind == JsonValueKind.String) return mt.GetString();
            if (doc.RootElement.TryGetProperty("manifests", out _)) return MediaTypes.OciIndex;
            if (doc.RootElement.TryGetProperty("config", out _)) return MediaTypes.OciManifest;
        }
        catch (JsonException) { }
        return null;
    }

    /// <summary>Turns a failed response into the message a user reads: "image X: manifest unknown (HTTP 404)".</summary>
    private async Task<ImagePullException> ErrorAsync(ImageReference image, HttpResponseMessage resp, CancellationToken ct)
    {
        var status = (int)resp.StatusCode;
        string? code = null, message = null;
        try
        {
            var body = await ReadBoundedAsync(image, resp, 64 * 1024, ct);
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.TryGetProperty("errors", out var errors) && errors.ValueKind == JsonValueKind.Array && errors.GetArrayLength() > 0)
            {
                var first = errors[0];
                if (first.TryGetProperty("code", out var c) && c.ValueKind == JsonValueKind.String) code = c.GetString();
                if (first.TryGetProperty("message", out var m) && m.ValueKind == JsonValueKind.String) message = m.GetString();
            }
        }
        catch (Exception e) when (e is JsonException or HttpRequestException or IOException or ImagePullException) { }

        // The registry's own words, but short and on one line: a body is never relayed whole.
        code = RemoteText.Quote(code, 40);
        message = RemoteText.Quote(message);
        string reason;
        if (resp.StatusCode == HttpStatusCode.Unauthorized || code == "UNAUTHORIZED")
            reason = "unauthorized: " + (message is { Length: > 0 } && message != "unauthorized" ? message : "authentication required");
        else if (code == "DENIED")
            reason = "denied: " + (message is { Length: > 0 } ? message : "requested access to the resource is denied");
        else if (message is { Length: > 0 })
            reason = message;
        else if (code is { Length: > 0 })
            reason = code.ToLowerInvariant().Replace('_', ' ');
        else
            reason = RemoteText.Quote(resp.ReasonPhrase, 60) is { Length: > 0 } phrase ? phrase.ToLowerInvariant() : "request failed";

        var text = $"image {image}: {reason} (HTTP {status})";
        if (resp.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
            text += await CredentialForAsync(image, ct) is null
                ? $"; no credentials are configured for {image.Registry}"
                : $"; the credentials configured for {image.Registry} were not accepted";
        // A helper's credential may have been renewed since it was cached: the next request asks again.
        if (resp.StatusCode == HttpStatusCode.Unauthorized && ConfiguredCredential(image.Registry) is null)
            _options.CredentialSource?.Invalidate(image.Registry);
        var transient = status >= 500 || resp.StatusCode == HttpStatusCode.TooManyRequests;
        return new ImagePullException(text, transient: transient);
    }

    private sealed record CachedToken(string Token, DateTimeOffset ExpiresAt);

    [LoggerMessage(EventId = 4101, Level = LogLevel.Warning, Message = "Retrying registry request for {Image} ({Path}), attempt {Attempt} failed: {Reason}")]
    private static partial void LogRetry(ILogger logger, string image, string path, int attempt, string reason);

    [LoggerMessage(EventId = 4102, Level = LogLevel.Debug, Message = "Fetched registry token for {Registry} scope {Scope}, valid {ExpiresInSeconds} s")]
    private static partial void LogTokenFetched(ILogger logger, string registry, string scope, int expiresInSeconds);
}
