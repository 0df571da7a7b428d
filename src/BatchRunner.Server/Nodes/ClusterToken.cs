using System.Security.Cryptography;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Nodes;

/// <summary>
/// How nodes authenticate to each other when the API forwards a request for a job's files to the node that ran
/// it: each request carries, in header <see cref="Header"/>, a <see cref="RequestSignature"/> made with the cluster's
/// secret for that method and path, valid for seconds and once. The first node generates the secret into the
/// shared database, so a cluster needs no extra configuration, and users' API keys (which may differ per node)
/// never travel between nodes. Neither the secret nor a signature is ever logged.
/// </summary>
public sealed class ClusterToken(NodeStore nodes, TimeProvider? time = null)
{
    public const string Header = "X-BatchRunner-Node-Token";
    private const string SettingName = "node-token";
    private RequestSignature? _signature;

    private async Task<RequestSignature> SignatureAsync(CancellationToken ct)
    {
        if (_signature is { } s) return s;
        var proposed = Convert.ToHexString(RandomNumberGenerator.GetBytes(32));
        var secret = await nodes.GetOrAddSettingAsync(SettingName, proposed, ct);
        // Two racing first calls derive the same key from the same stored secret; either instance will do,
        // but only one may remember accepted signatures.
        return Interlocked.CompareExchange(ref _signature, new RequestSignature(secret, time), null) ?? _signature;
    }

    /// <summary>The header value for one request to another node (<paramref name="pathAndQuery"/>: the request target
    /// as sent, e.g. <see cref="Uri.PathAndQuery"/>).</summary>
    public async Task<string> SignAsync(string method, string pathAndQuery, CancellationToken ct) =>
        (await SignatureAsync(ct)).Sign(method, pathAndQuery);

    /// <summary>Checks what a caller presented for the request it came with.</summary>
    public async Task<SignatureCheck> CheckAsync(string? presented, string method, string pathAndQuery, CancellationToken ct) =>
        string.IsNullOrEmpty(presented) ? SignatureCheck.Missing : (await SignatureAsync(ct)).Check(presented, method, pathAndQuery);
}
