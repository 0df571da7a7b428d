using System.Security.Cryptography;

namespace BatchRunner.Server.Auth;

/// <summary>
/// The configured key (BATCHRUNNER_API_KEY), or one generated once and kept in DATA/api-key (mode 0600): the
/// bootstrap admin of tenant <c>default</c>, with key id <see cref="KeyId"/>. It is never stored in the database;
/// each node knows it from its own settings, so it works before any key exists and cannot be revoked through the
/// API (change the setting instead).
/// </summary>
public sealed class BootstrapKey
{
    public const string KeyId = "bootstrap";
    public const string Tenant = "default";

    private readonly byte[] _hash;

    private BootstrapKey(string key, bool generated)
    {
        Value = key;
        Generated = generated;
        _hash = ApiKeySecrets.Hash(key);
    }

    public string Value { get; }
    public bool Generated { get; }

    public Caller Caller { get; } = new(KeyId, Tenant, Roles.Admin);

    public static BootstrapKey Resolve(string? configured, string dataDir)
    {
        if (!string.IsNullOrWhiteSpace(configured)) return new BootstrapKey(configured.Trim(), false);
        var file = Path.Combine(dataDir, "api-key");
        if (File.Exists(file))
        {
            var stored = File.ReadAllText(file).Trim();
            if (stored.Length > 0) return new BootstrapKey(stored, false);
        }
        var key = ApiKeySecrets.NewKey();
        var tmp = file + ".tmp";
        File.WriteAllText(tmp, key + "\n");
        File.SetUnixFileMode(tmp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.Move(tmp, file, overwrite: true);
        return new BootstrapKey(key, true);
    }

    /// <summary>Constant-time comparison of the hash of what a client sent with this key's.</summary>
    public bool Matches(ReadOnlySpan<byte> presentedHash) => CryptographicOperations.FixedTimeEquals(presentedHash, _hash);
}
