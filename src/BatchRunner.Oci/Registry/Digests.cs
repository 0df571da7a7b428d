using System.Security.Cryptography;

namespace BatchRunner.Oci.Registry;

/// <summary>
/// Content digests ("sha256:&lt;64 lowercase hex&gt;"). Only sha256 is accepted: the hex becomes a file name,
/// so anything else is rejected before it can reach a path.
/// </summary>
public static class Digests
{
    public const string Sha256Prefix = "sha256:";

    public static bool IsValid(string? digest) =>
        digest is { Length: 71 } && digest.StartsWith(Sha256Prefix, StringComparison.Ordinal) &&
        digest.AsSpan(7).IndexOfAnyExcept("0123456789abcdef") < 0;

    /// <summary>The hex part of a valid digest; throws <see cref="FormatException"/> otherwise.</summary>
    public static string Hex(string digest) =>
        IsValid(digest) ? digest[7..] : throw new FormatException($"unsupported or malformed digest '{digest}' (expected sha256:<64 hex>)");

    public static string Sha256(ReadOnlySpan<byte> content) => Sha256Prefix + Convert.ToHexStringLower(SHA256.HashData(content));

    public static string FromHash(byte[] hash) => Sha256Prefix + Convert.ToHexStringLower(hash);
}
