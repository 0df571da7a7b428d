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
/// forwards downloads to), through <see cref="NodeClient"/> (the node's recorded address, every request signed).
/// </summary>
public sealed class NodeFilesClient(NodeClient nodes) : INodeFiles
{
    public async Task<Stream> OpenOutputAsync(string node, Guid jobId, string path, CancellationToken ct)
    {
        if (await nodes.ResolveAsync(node, knownUrl: null, ct) is not { } target)
            throw new NodeFilesUnavailableException($"node \"{node}\" holds the files, but its address is not known", nodeDown: true);
        var escaped = string.Join('/', path.Split('/').Select(Uri.EscapeDataString));
        HttpResponseMessage response;
        try
        {
            response = await nodes.SendAsync(HttpMethod.Get, target.Url, $"{NodeClient.JobsPrefix}/{jobId}/outputs/{escaped}", ct);
        }
        catch (HttpRequestException e)
        {
            var alive = target.Alive ?? true;
            throw new NodeFilesUnavailableException($"node \"{node}\" ({target.Url}) is {(alive ? "unreachable" : "down")}: {e.Message}", !alive);
        }
        if (!response.IsSuccessStatusCode)
        {
            response.Dispose();
            throw new NodeFilesUnavailableException($"node \"{node}\" ({target.Url}) answered {(int)response.StatusCode} for output \"{path}\" of job {jobId}", nodeDown: false);
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
