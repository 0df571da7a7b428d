using BatchRunner.Server.Auth;
using BatchRunner.Server.Hosting;
using Microsoft.Extensions.Time.Testing;

namespace BatchRunner.Server.Tests.Auth;

/// <summary>The token buckets' logic, on a fake clock (the 429 itself, through the server: RequestLimitsFacts).</summary>
public sealed class KeyRateLimiterFacts
{
    private readonly FakeTimeProvider _time = new();

    private KeyRateLimiter Limiter(double permitsPerSecond = 2, int burst = 3) =>
        new(new Dictionary<string, RateLimitOptions> { ["viewer"] = new() { PermitsPerSecond = permitsPerSecond, Burst = burst } }, _time);

    private static Caller Viewer(string key = "k1") => new(key, "t", "viewer");

    [Fact]
    public void ABurst_IsLetThrough_ThenTheNextWaitsForItsToken()
    {
        var limiter = Limiter();
        for (var i = 0; i < 3; i++) Assert.True(limiter.TryAcquire(Viewer(), out _));

        Assert.False(limiter.TryAcquire(Viewer(), out var retryAfter));
        Assert.Equal(0.5, retryAfter.TotalSeconds, precision: 6); // one token at 2 per second
    }

    [Fact]
    public void TheBucket_RefillsWithTheTimeBetweenCalls_UpToItsBurst()
    {
        var limiter = Limiter();
        for (var i = 0; i < 3; i++) limiter.TryAcquire(Viewer(), out _);

        _time.Advance(TimeSpan.FromMilliseconds(500));
        Assert.True(limiter.TryAcquire(Viewer(), out _));
        Assert.False(limiter.TryAcquire(Viewer(), out _));

        _time.Advance(TimeSpan.FromHours(1)); // full again, and no more than full
        for (var i = 0; i < 3; i++) Assert.True(limiter.TryAcquire(Viewer(), out _));
        Assert.False(limiter.TryAcquire(Viewer(), out _));
    }

    [Fact]
    public void EachKey_HasItsOwnBucket_AndARoleWithoutALimitIsNeverRefused()
    {
        var limiter = Limiter(burst: 1);
        Assert.True(limiter.TryAcquire(Viewer("a"), out _));
        Assert.False(limiter.TryAcquire(Viewer("a"), out _));
        Assert.True(limiter.TryAcquire(Viewer("b"), out _));

        for (var i = 0; i < 100; i++) Assert.True(limiter.TryAcquire(new Caller("admin-key", "t", "admin"), out _));
    }

    [Fact]
    public void ARateBelowOnePerSecond_SaysHowLongTheNextTokenTakes()
    {
        var limiter = Limiter(permitsPerSecond: 0.1, burst: 1);
        Assert.True(limiter.TryAcquire(Viewer(), out _));
        _time.Advance(TimeSpan.FromSeconds(4));

        Assert.False(limiter.TryAcquire(Viewer(), out var retryAfter));
        Assert.Equal(6, retryAfter.TotalSeconds, precision: 6);
    }

    /// <summary>Buckets of keys gone quiet (full again) are dropped past the threshold; a busy key's is kept, empty.</summary>
    [Fact]
    public void QuietKeysBuckets_AreDropped_OnceThereAreMany_ABusyKeysIsKept()
    {
        var limiter = Limiter(permitsPerSecond: 1, burst: 1);
        for (var i = 0; i < KeyRateLimiter.PruneAbove - 1; i++) limiter.TryAcquire(Viewer("quiet-" + i), out _);
        _time.Advance(TimeSpan.FromSeconds(10)); // all full again
        Assert.True(limiter.TryAcquire(Viewer("busy"), out _)); // its bucket empty now

        Assert.True(limiter.TryAcquire(Viewer("one-more"), out _)); // a new key at the threshold: the full ones go

        Assert.Equal(2, limiter.Buckets);
        Assert.False(limiter.TryAcquire(Viewer("busy"), out _)); // still empty: not handed a fresh bucket
    }
}
