namespace BatchRunner.Server.Hosting;

/// <summary>Section "BatchRunner:Auth": API keys and per-key request rates.</summary>
public sealed class AuthOptions
{
    /// <summary>How long a node trusts what it looked up about a key: a key revoked on any node is refused on every
    /// node within this time. Between 0 (a lookup per request) and 60.</summary>
    public double KeyCacheSeconds { get; set; } = 3;

    /// <summary>Per-key request rates by role (token buckets: <c>Burst</c> requests at once, refilled at
    /// <c>PermitsPerSecond</c>); past them a request gets 429 with Retry-After. A role left out is not limited.</summary>
    public Dictionary<string, RateLimitOptions> RateLimits { get; set; } = new(StringComparer.OrdinalIgnoreCase)
    {
        // Generous: a CLI following logs and polling, or a script submitting a sweep, stays far below these.
        ["admin"] = new() { PermitsPerSecond = 200, Burst = 1000 },
        ["user"] = new() { PermitsPerSecond = 50, Burst = 500 },
        ["viewer"] = new() { PermitsPerSecond = 50, Burst = 500 },
    };

    public void Validate()
    {
        if (KeyCacheSeconds is < 0 or > 60) throw new InvalidOperationException("BatchRunner:Auth:KeyCacheSeconds must be between 0 and 60");
        foreach (var (role, limit) in RateLimits)
        {
            if (!Auth.Roles.All.Contains(role.ToLowerInvariant()))
                throw new InvalidOperationException($"BatchRunner:Auth:RateLimits:{role}: not a role (admin, user, viewer)");
            if (limit.PermitsPerSecond <= 0 || limit.Burst < 1)
                throw new InvalidOperationException($"BatchRunner:Auth:RateLimits:{role} needs PermitsPerSecond > 0 and Burst >= 1");
        }
    }
}

public sealed class RateLimitOptions
{
    public double PermitsPerSecond { get; set; }
    public int Burst { get; set; }
}
