using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace BatchRunner.Server.Nodes;

/// <summary>What <see cref="RequestSignature.Check"/> found.</summary>
public enum SignatureCheck
{
    Valid,
    Missing,
    Malformed,
    /// <summary>Signed more than <see cref="RequestSignature.Validity"/> before or after now.</summary>
    Expired,
    /// <summary>Not signed with the cluster's key for this method and path (forged, or taken from another request).</summary>
    Mismatch,
    /// <summary>The exact same signature was presented before.</summary>
    Replayed,
}

/// <summary>
/// Signs one node-to-node request: <c>v1.&lt;unix seconds&gt;.&lt;nonce&gt;.&lt;HMAC-SHA256&gt;</c> over the method, the
/// path and query as sent (the request target), the time and the nonce, with a key derived (HKDF) from the
/// cluster's secret. The secret itself never travels.
/// </summary>
/// <remarks>Guarantees: a signature opens one method and path (with its query) and only within
/// <see cref="Validity"/> of its time (the nodes' clocks must agree that well); each signature is accepted once by a
/// node (it remembers the ones it accepted until they expire), so a captured header can neither be replayed nor
/// used for another job or file. Nonces make two identical requests in the same second differ.</remarks>
public sealed class RequestSignature
{
    public const string Version = "v1";
    public static readonly TimeSpan Validity = TimeSpan.FromSeconds(30);
    private const int NonceBytes = 16;

    private readonly byte[] _key;
    private readonly TimeProvider _time;
    // Accepted signatures → when they stop being valid anyway. Only valid signatures get here, so its size is
    // bounded by this node's own traffic within one validity window.
    private readonly ConcurrentDictionary<string, long> _accepted = new(StringComparer.Ordinal);
    private long _nextSweep;

    public RequestSignature(string clusterSecret, TimeProvider? time = null)
    {
        _key = HKDF.DeriveKey(HashAlgorithmName.SHA256, Encoding.UTF8.GetBytes(clusterSecret), 32, info: "batchrunner node-to-node request v1"u8.ToArray());
        _time = time ?? TimeProvider.System;
    }

    public string Sign(string method, string pathAndQuery)
    {
        var seconds = _time.GetUtcNow().ToUnixTimeSeconds();
        var nonce = Base64Url(RandomNumberGenerator.GetBytes(NonceBytes));
        return $"{Version}.{seconds.ToString(CultureInfo.InvariantCulture)}.{nonce}.{Mac(method, pathAndQuery, seconds, nonce)}";
    }

    public SignatureCheck Check(string? token, string method, string pathAndQuery)
    {
        if (string.IsNullOrEmpty(token)) return SignatureCheck.Missing;
        var parts = token.Split('.');
        if (parts is not [Version, var secondsText, var nonce, var mac] || nonce.Length == 0 || mac.Length == 0
            || !long.TryParse(secondsText, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds))
            return SignatureCheck.Malformed;
        var expected = Encoding.ASCII.GetBytes(Mac(method, pathAndQuery, seconds, nonce));
        if (!CryptographicOperations.FixedTimeEquals(expected, Encoding.ASCII.GetBytes(mac))) return SignatureCheck.Mismatch;
        var now = _time.GetUtcNow().ToUnixTimeSeconds();
        if (Math.Abs(now - seconds) > Validity.TotalSeconds) return SignatureCheck.Expired;
        Sweep(now);
        return _accepted.TryAdd(mac, seconds + (long)Validity.TotalSeconds) ? SignatureCheck.Valid : SignatureCheck.Replayed;
    }

    private string Mac(string method, string pathAndQuery, long seconds, string nonce)
    {
        var message = $"{Version}\n{method.ToUpperInvariant()}\n{pathAndQuery}\n{seconds.ToString(CultureInfo.InvariantCulture)}\n{nonce}";
        return Base64Url(HMACSHA256.HashData(_key, Encoding.UTF8.GetBytes(message)));
    }

    // Forgets expired signatures, at most once a second.
    private void Sweep(long now)
    {
        var next = Interlocked.Read(ref _nextSweep);
        if (now < next || Interlocked.CompareExchange(ref _nextSweep, now + 1, next) != next) return;
        foreach (var (mac, expires) in _accepted)
            if (expires < now) _accepted.TryRemove(mac, out _);
    }

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
