using System.Security.Cryptography;
using System.Text;

namespace BatchRunner.Server.Auth;

/// <summary>Making keys and what is kept of them.</summary>
public static class ApiKeySecrets
{
    /// <summary>Every generated key starts with this (so that secret scanners and people recognise one).</summary>
    public const string KeyPrefix = "br_";
    /// <summary>Characters of a key shown in listings: the prefix and 8 of its 43 random characters (48 of 256 bits).</summary>
    public const int DisplayLength = 11;

    /// <summary>32 random bytes, base64url: unguessable, so its SHA-256 is all that needs storing.</summary>
    public static string NewKey() =>
        KeyPrefix + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    public static byte[] Hash(string key) => SHA256.HashData(Encoding.UTF8.GetBytes(key));

    public static string DisplayPrefix(string key) => key.Length <= DisplayLength ? key : key[..DisplayLength];
}
