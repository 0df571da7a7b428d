using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Nodes;

/// <summary>A job's inputs tar could not be had from where it is kept; the message says where and why.</summary>
public sealed class InputsUnavailableException(string message) : Exception(message);

/// <summary>Where the node that runs a job reads the job's inputs tar from.</summary>
public interface IInputsSource
{
    /// <summary>The tar named by <paramref name="inputs"/> (unchecked: the caller verifies the digest while it reads),
    /// and where it came from, in words.</summary>
    /// <exception cref="InputsUnavailableException">The holder is down, unreachable, slow to answer, or refused.</exception>
    Task<(Stream Tar, string From)> OpenAsync(Guid jobId, InputsTar inputs, CancellationToken ct);
}

/// <summary>
/// This node's <see cref="InputsStore"/> when it took the submission itself, else the node that did, over its
/// node-to-node endpoint <c>GET /internal/v1/jobs/ID/inputs</c>.
/// </summary>
public sealed class InputsSource(InputsStore store, NodeClient nodes) : IInputsSource
{
    /// <summary>How long the holder has to start answering; the transfer itself is bounded by the caller's token.</summary>
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(30);

    public async Task<(Stream Tar, string From)> OpenAsync(Guid jobId, InputsTar inputs, CancellationToken ct)
    {
        if (store.PathOf(inputs.Digest) is { } local)
            return (new FileStream(local, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan), "this node");

        using var connect = CancellationTokenSource.CreateLinkedTokenSource(ct);
        connect.CancelAfter(ConnectTimeout);
        HttpResponseMessage response;
        string url;
        try
        {
            if (await nodes.ResolveAsync(inputs.Node, inputs.Url, connect.Token) is not ({ } u, var alive))
                throw new InputsUnavailableException($"the inputs of job {jobId} are on node {inputs.Node}, whose address is not known");
            url = u;
            try
            {
                response = await nodes.SendAsync(HttpMethod.Get, url, $"{NodeClient.JobsPrefix}/{jobId}/inputs", connect.Token);
            }
            catch (HttpRequestException e)
            {
                throw new InputsUnavailableException(
                    $"the inputs of job {jobId} are on node {inputs.Node} ({url}), which is {(alive == false ? "down" : "unreachable")}: {e.Message}");
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new InputsUnavailableException($"node {inputs.Node} did not start sending the inputs of job {jobId} within {ConnectTimeout.TotalSeconds:0} s");
        }
        if (!response.IsSuccessStatusCode)
        {
            var body = await response.Content.ReadAsStringAsync(ct);
            response.Dispose();
            throw new InputsUnavailableException(
                $"node {inputs.Node} ({url}) did not give the inputs of job {jobId}: HTTP {(int)response.StatusCode} {(body.Length <= 300 ? body : body[..300] + "…")}");
        }
        // Disposing the body releases the connection; the response holds nothing else.
        return (await response.Content.ReadAsStreamAsync(ct), $"node {inputs.Node}");
    }
}
