using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using BatchRunner.Cli.Connection;

namespace BatchRunner.Cli.Http;

/// <summary>
/// The HTTP API v1 as the CLI uses it. Every failure becomes a <see cref="CliException"/> with one line a person can
/// act on: the server unreachable (naming the URL and where it came from), the key refused, the server's problem
/// details. Plain requests time out after <see cref="RequestTimeout"/>; streams (logs, downloads, uploads) never do.
/// </summary>
internal sealed class ApiClient : IDisposable
{
    public static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(100);
    private readonly HttpClient _http;

    public ApiClient(ServerSettings settings, HttpMessageHandler? handler = null)
    {
        Server = new ServerContext(settings);
        _http = new HttpClient(handler ?? new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(10) })
        {
            BaseAddress = settings.Url,
            Timeout = Timeout.InfiniteTimeSpan,
        };
        if (settings.ApiKey is { } key)
            _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        _http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("batchrunner-cli", typeof(ApiClient).Assembly.GetName().Version?.ToString(3) ?? "0"));
    }

    public ServerContext Server { get; }

    public Task<JsonElement> GetJsonAsync(string path, CancellationToken ct) => SendJsonAsync(HttpMethod.Get, path, null, ct);

    public Task<JsonElement> PostJsonAsync(string path, JsonNode? body, CancellationToken ct) => SendJsonAsync(HttpMethod.Post, path, body, ct);

    public async Task<JsonElement> SendJsonAsync(HttpMethod method, string path, JsonNode? body, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null) request.Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json");
        return await SendForJsonAsync(request, ct);
    }

    /// <summary>Sends a request with the usual timeout and returns its JSON body (an empty body as JSON null).</summary>
    public async Task<JsonElement> SendForJsonAsync(HttpRequestMessage request, CancellationToken ct, bool timeout = true)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        if (timeout) cts.CancelAfter(RequestTimeout);
        string text;
        HttpStatusCode status;
        try
        {
            using var response = await SendAsync(request, HttpCompletionOption.ResponseContentRead, cts.Token);
            status = response.StatusCode;
            text = await response.Content.ReadAsStringAsync(cts.Token);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new CliException($"{Server.Settings.Url} did not answer {request.Method} {request.RequestUri} within {RequestTimeout.TotalSeconds:0} s");
        }
        if (text.Length == 0) return default;
        try
        {
            return JsonDocument.Parse(text).RootElement.Clone();
        }
        catch (JsonException)
        {
            throw new CliException($"{request.Method} {request.RequestUri} answered {(int)status} with a body that is not JSON: is {Server.Settings.Url} a BatchRunner server?");
        }
    }

    /// <summary>
    /// Sends a request and returns the successful response (the caller disposes it); a failure status is read and thrown
    /// as a <see cref="CliException"/>. With <see cref="HttpCompletionOption.ResponseHeadersRead"/> the body is a live stream.
    /// </summary>
    public async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, HttpCompletionOption completion, CancellationToken ct)
    {
        var path = request.RequestUri?.OriginalString ?? "";
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, completion, ct);
        }
        catch (HttpRequestException e)
        {
            throw Unreachable(e);
        }
        if (response.IsSuccessStatusCode) return response;
        using (response)
        {
            var body = await response.Content.ReadAsStringAsync(ct);
            throw ApiProblem.ToException(response.StatusCode, response.Content.Headers.ContentType?.MediaType, body, request.Method.Method, path, Server);
        }
    }

    public CliException Unreachable(HttpRequestException e)
    {
        var why = e.InnerException is SocketException s ? s.SocketErrorCode switch
        {
            SocketError.ConnectionRefused => "connection refused",
            SocketError.HostNotFound or SocketError.NoData => "unknown host",
            SocketError.TimedOut => "timed out",
            _ => s.Message,
        } : e.HttpRequestError switch
        {
            HttpRequestError.ConnectionError => "connection failed",
            HttpRequestError.NameResolutionError => "unknown host",
            HttpRequestError.SecureConnectionError => "TLS handshake failed",
            HttpRequestError.ResponseEnded => "the connection closed before an answer",
            _ => e.Message,
        };
        return new CliException($"cannot reach BatchRunner at {Server.Settings.Url} ({why}); the URL came from {Server.Settings.UrlSource}: is the server running? Set --url or {ServerSettings.UrlVariable}");
    }

    public static string Escape(string segment) => Uri.EscapeDataString(segment);

    public void Dispose() => _http.Dispose();
}
