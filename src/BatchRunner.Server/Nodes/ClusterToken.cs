using System.Security.Cryptography;
using System.Text;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Nodes;

/// <summary>
/// The secret nodes present to each other (header <see cref="Header"/>) when the API forwards a request
/// for a job's files to the node that ran it. The first node generates it into the shared database, so a
/// cluster needs no extra configuration, and users' API keys (which may differ per node) never travel
/// between nodes. Never logged.
/// </summary>
public sealed class ClusterToken(NodeStore nodes)
{
    public const string Header = "X-BatchRunner-Node-Token";
    private const string SettingName = "node-token";
    private string? _value;
    private byte[]? _hash;

    public async Task<string> GetAsync(CancellationToken ct)
    {
        if (_value is { } v) return v;
        var proposed = Convert.ToHexString(RandomNumberGenerator.GetBytes(32));
        v = await nodes.GetOrAddSettingAsync(SettingName, proposed, ct);
        _hash = SHA256.HashData(Encoding.UTF8.GetBytes(v));
        return _value = v;
    }

    /// <summary>Constant-time check of what a caller presented.</summary>
    public async Task<bool> MatchesAsync(string? presented, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(presented)) return false;
        await GetAsync(ct);
        return CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(presented)), _hash);
    }
}
