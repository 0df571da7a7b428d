using System.Collections.Concurrent;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Auth;

/// <summary>
/// What presented keys stand for, remembered for <see cref="AuthOptions.KeyCacheSeconds"/> (3 s by default) so
/// that most requests cost no database round trip, while a key revoked on any node is refused on every node within
/// that time. Unknown keys are remembered too (a client retrying a wrong key costs one lookup per period).
/// </summary>
/// <remarks>
/// Keyed by the SHA-256 of the key, never the key itself. Bounded: past <see cref="MaxEntries"/> the cache is
/// emptied (rather than evicting one by one: entries live seconds anyway). A key revoked on this node is dropped
/// at once (<see cref="Forget"/>).
/// </remarks>
public sealed class KeyCache(ApiKeyStore store, IOptions<BatchRunnerOptions> options, TimeProvider time)
{
    public const int MaxEntries = 10_000;

    private sealed record Entry(KeyIdentity? Identity, long ExpiresAt);

    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly TimeSpan _ttl = TimeSpan.FromSeconds(options.Value.Auth.KeyCacheSeconds);

    /// <summary>The identity of the key with this hash; null when there is no such key, or it was revoked.</summary>
    public async ValueTask<KeyIdentity?> FindAsync(byte[] keyHash, CancellationToken ct)
    {
        var slot = Convert.ToBase64String(keyHash);
        var now = time.GetTimestamp();
        if (_entries.TryGetValue(slot, out var entry) && now < entry.ExpiresAt) return entry.Identity;
        var identity = await store.FindAsync(keyHash, ct);
        if (_entries.Count >= MaxEntries) _entries.Clear();
        _entries[slot] = new Entry(identity, now + (long)(_ttl.TotalSeconds * time.TimestampFrequency));
        return identity;
    }

    /// <summary>Drops what is remembered of key <paramref name="keyId"/> (revoked here: refused at once on this node).</summary>
    public void Forget(string keyId)
    {
        foreach (var (slot, entry) in _entries)
            if (entry.Identity?.KeyId == keyId) _entries.TryRemove(slot, out _);
    }
}
