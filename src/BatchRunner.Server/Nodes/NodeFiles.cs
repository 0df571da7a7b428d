using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Nodes;

/// <summary>Reads a job's files from the node that holds them (its data directory), as another node.</summary>
public interface INodeFiles
{
    /// <summary>Opens output <paramref name="path"/> of job <paramref name="jobId"/> on node <paramref name="node"/>.</summary>
    /// <exception cref="NodeFilesUnavailableException">The node is unknown, down or unreachable, or does not have the file.</exception>
    Task<Stream> OpenOutputAsync(string node, Guid jobId, string path, CancellationToken ct);
}

public sealed class NodeFilesUnavailableException(string message, bool nodeDown) : Exception(message)
{
    /// <summary>The node is known dead (not merely unreachable): asking again will not help until it is back.</summary>
    public bool NodeDown { get; } = nodeDown;
}

/// <summary>
/// <see cref="INodeFiles"/> over HTTP: the node's <c>/internal/v1/jobs/ID/outputs/PATH</c> endpoint (the one the public API
/// forwards downloads to), at the address the node records with its heartbeat, signed with the cluster's key.
/// </summary>
public sealed class NodeFilesClient(NodeStore nodes, ClusterToken token, IHttpClientFactory http) : INodeFiles
{
    /// <summary>The named HttpClient nodes use to reach each other (no overall timeout: files may be large).</summary>
    public const string HttpClientName = "node-files";
    public const string Prefix = "/internal/v1/jobs";

    public async Task<Stream> OpenOutputAsync(string node, Guid jobId, string path, CancellationToken ct)
    {
        var target = await nodes.GetApiUrlAsync(node, ct);
        if (target is not { ApiUrl: { } url } t)
            throw new NodeFilesUnavailableException($"node \"{node}\" holds the files, but its address is not known", nodeDown: target is null);
        var escaped = string.Join('/', path.Split('/').Select(Uri.EscapeDataString));
        using var request = new HttpRequestMessage(HttpMethod.Get, $"{url}{Prefix}/{jobId}/outputs/{escaped}");
        // Signed for exactly the target HttpClient sends (see RequestSignature).
        request.Headers.TryAddWithoutValidation(ClusterToken.Header, await token.SignAsync(request.Method.Method, request.RequestUri!.PathAndQuery, ct));
        HttpResponseMessage response;
        try
        {
            response = await http.CreateClient(HttpClientName).SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
        }
        catch (HttpRequestException e)
        {
            throw new NodeFilesUnavailableException($"node \"{node}\" ({url}) is {(t.Alive ? "unreachable" : "down")}: {e.Message}", !t.Alive);
        }
        if (!response.IsSuccessStatusCode)
        {
            response.Dispose();
            throw new NodeFilesUnavailableException($"node \"{node}\" ({url}) answered {(int)response.StatusCode} for output \"{path}\" of job {jobId}", nodeDown: false);
        }
        return new ResponseStream(response, await response.Content.ReadAsStreamAsync(ct));
    }

    /// <summary>The body, disposing its response with it.</summary>
    private sealed class ResponseStream(HttpResponseMessage response, Stream body) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => body.Read(buffer, offset, count);
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => body.ReadAsync(buffer, ct);
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                body.Dispose();
                response.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
