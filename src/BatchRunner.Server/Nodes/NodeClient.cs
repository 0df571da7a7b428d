using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Nodes;

/// <summary>
/// Requests from this node to another node's node-to-node endpoints (<c>/internal/v1/...</c>): the API forwarding a
/// job's logs and outputs or a file removal, a worker fetching a job's inputs. The address is the one the node
/// recorded with its heartbeat, else the one the caller knows (an API-only node has no node record: the job
/// record keeps where its inputs were taken); every request is signed for its method and target (<see cref="ClusterToken"/>).
/// </summary>
public sealed class NodeClient(NodeStore nodes, ClusterToken token, IHttpClientFactory http)
{
    public const string HttpClientName = "node-files";
    /// <summary>Where every node serves the job files it holds, to other nodes only.</summary>
    public const string JobsPrefix = "/internal/v1/jobs";

    /// <summary>Where <paramref name="nodeName"/> answers, and whether its lease is current (null: it has no node
    /// record, so nobody knows); null when neither its record nor <paramref name="knownUrl"/> gives an address.</summary>
    public async Task<(string Url, bool? Alive)?> ResolveAsync(string nodeName, string? knownUrl, CancellationToken ct)
    {
        var recorded = await nodes.GetApiUrlAsync(nodeName, ct);
        if (recorded is { ApiUrl: { } url } r) return (url, r.Alive);
        return string.IsNullOrEmpty(knownUrl) ? null : (knownUrl.TrimEnd('/'), recorded?.Alive);
    }

    /// <summary>Sends <paramref name="method"/> <paramref name="pathAndQuery"/> to <paramref name="baseUrl"/>, signed.</summary>
    /// <exception cref="HttpRequestException">The node could not be reached.</exception>
    public async Task<HttpResponseMessage> SendAsync(HttpMethod method, string baseUrl, string pathAndQuery, CancellationToken ct,
        Action<HttpRequestMessage>? configure = null, HttpCompletionOption completion = HttpCompletionOption.ResponseHeadersRead)
    {
        using var request = new HttpRequestMessage(method, baseUrl + pathAndQuery);
        // Signed for exactly the target HttpClient sends (Uri may re-escape what it was given).
        request.Headers.TryAddWithoutValidation(ClusterToken.Header, await token.SignAsync(method.Method, request.RequestUri!.PathAndQuery, ct));
        configure?.Invoke(request);
        return await http.CreateClient(HttpClientName).SendAsync(request, completion, ct);
    }
}
