using System.Security.Cryptography;
using System.Text;

namespace BatchRunner.Server.Notifications;

/// <summary>
/// <c>X-BatchRunner-Signature: sha256=HEX</c>: HMAC-SHA256 of the exact request body, keyed with the job's
/// <c>notify.secret</c> or else the server's <c>Webhooks:Secret</c>. A receiver recomputes it over the bytes it
/// received and compares in constant time (README, Webhooks).
/// </summary>
public static class WebhookSignature
{
    public const string Header = "X-BatchRunner-Signature";
    public const string Scheme = "sha256=";

    public static string Sign(string secret, ReadOnlySpan<byte> body) =>
        Scheme + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), body));

    /// <summary>What a receiver does: true when <paramref name="header"/> is the signature of <paramref name="body"/>.</summary>
    public static bool Verify(string secret, ReadOnlySpan<byte> body, string? header) =>
        header is not null && CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(Sign(secret, body)), Encoding.ASCII.GetBytes(header));
}
