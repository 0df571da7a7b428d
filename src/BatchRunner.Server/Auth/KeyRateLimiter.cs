using System.Collections.Concurrent;
using BatchRunner.Server.Hosting;

namespace BatchRunner.Server.Auth;

/// <summary>
/// Per-key request rates: one token bucket per key id, of its role's size (<see cref="AuthOptions.RateLimits"/>):
/// <c>Burst</c> requests at once, refilled continuously at <c>PermitsPerSecond</c>. A bucket is brought up to date when
/// its key calls, from the time since its last call, so nothing runs between requests.
/// </summary>
/// <remarks>
/// ASP.NET Core's rate limiter refilled its buckets on a 100 ms timer, and its middleware kept a second such timer for
/// endpoint policies this server has none of: 20 timer firings and as many thread-pool work items a second on every
/// node, idle or not. The buckets of keys that have not called for long enough to be full again are dropped when a new
/// key calls while <see cref="PruneAbove"/> are held; a dropped bucket comes back full, as it would have been.
/// </remarks>
public sealed class KeyRateLimiter(IReadOnlyDictionary<string, RateLimitOptions> limitsByRole, TimeProvider time)
{
    public const int PruneAbove = 4096;

    private readonly ConcurrentDictionary<string, Bucket> _buckets = new(StringComparer.Ordinal);

    /// <summary>Buckets held now (tests).</summary>
    internal int Buckets => _buckets.Count;

    /// <summary>Takes one request from <paramref name="caller"/>'s bucket. False when it is empty; then
    /// <paramref name="retryAfter"/> is how long until it holds one again. A role without a limit is never refused.</summary>
    public bool TryAcquire(Caller caller, out TimeSpan retryAfter)
    {
        retryAfter = TimeSpan.Zero;
        if (!limitsByRole.TryGetValue(caller.Role, out var limit)) return true;
        var now = time.GetTimestamp();
        if (!_buckets.TryGetValue(caller.KeyId, out var bucket))
        {
            if (_buckets.Count >= PruneAbove) Prune(now);
            bucket = _buckets.GetOrAdd(caller.KeyId, _ => new Bucket(limit, now));
        }
        return bucket.TryTake(now, limit, time.TimestampFrequency, out retryAfter);
    }

    private void Prune(long now)
    {
        foreach (var (key, bucket) in _buckets)
            if (bucket.IsFullAt(now, time.TimestampFrequency)) _buckets.TryRemove(new KeyValuePair<string, Bucket>(key, bucket));
    }

    private sealed class Bucket(RateLimitOptions limit, long at)
    {
        private readonly Lock _gate = new();
        private double _tokens = limit.Burst;
        private long _at = at;
        // The role's limit at the key's last call: what the bucket refills at until the next.
        private RateLimitOptions _limit = limit;

        public bool TryTake(long now, RateLimitOptions limit, long frequency, out TimeSpan retryAfter)
        {
            lock (_gate)
            {
                Refill(now, frequency);
                _limit = limit;
                _tokens = Math.Min(_tokens, limit.Burst);
                if (_tokens >= 1)
                {
                    _tokens -= 1;
                    retryAfter = TimeSpan.Zero;
                    return true;
                }
                retryAfter = TimeSpan.FromSeconds((1 - _tokens) / limit.PermitsPerSecond);
                return false;
            }
        }

        public bool IsFullAt(long now, long frequency)
        {
            lock (_gate)
            {
                Refill(now, frequency);
                return _tokens >= _limit.Burst;
            }
        }

        private void Refill(long now, long frequency)
        {
            if (now <= _at) return;
            _tokens = Math.Min(_limit.Burst, _tokens + (now - _at) / (double)frequency * _limit.PermitsPerSecond);
            _at = now;
        }
    }
}
