using System.Threading.RateLimiting;
using BatchRunner.Server.Auth;
using Microsoft.AspNetCore.RateLimiting;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// Per-key request rates (ASP.NET Core's rate limiter): one token bucket per key id, sized by the key's role
/// (<see cref="AuthOptions.RateLimits"/>). A request past it gets 429 problem details with Retry-After. Requests
/// without a key (health, metrics, refused ones) and node-to-node calls are not limited here.
/// </summary>
public static class RateLimiting
{
    public static IServiceCollection AddBatchRunnerRateLimits(this IServiceCollection services, AuthOptions auth)
    {
        var limits = auth.RateLimits.ToDictionary(kv => kv.Key.ToLowerInvariant(), kv => Bucket(kv.Value));
        return services.AddRateLimiter(o =>
        {
            o.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(http =>
                Caller.From(http.User) is { } caller && limits.TryGetValue(caller.Role, out var bucket)
                    ? RateLimitPartition.GetTokenBucketLimiter(caller.KeyId, _ => bucket)
                    : RateLimitPartition.GetNoLimiter(""));
            o.OnRejected = RejectAsync;
        });
    }

    /// <summary>The partitioned limiter refills its buckets on a 100 ms timer, one period's tokens per refill:
    /// whole seconds with the rate's tokens (at least one), or one token per period below one per second.</summary>
    private static TokenBucketRateLimiterOptions Bucket(RateLimitOptions l) => new()
    {
        TokenLimit = l.Burst,
        TokensPerPeriod = l.PermitsPerSecond >= 1 ? (int)Math.Round(l.PermitsPerSecond) : 1,
        ReplenishmentPeriod = l.PermitsPerSecond >= 1 ? TimeSpan.FromSeconds(1) : TimeSpan.FromSeconds(1 / l.PermitsPerSecond),
        QueueLimit = 0,
        AutoReplenishment = true,
    };

    private static async ValueTask RejectAsync(OnRejectedContext ctx, CancellationToken ct)
    {
        var http = ctx.HttpContext;
        var retryAfter = ctx.Lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds)) : 1;
        http.Response.Headers.RetryAfter = retryAfter.ToString(System.Globalization.CultureInfo.InvariantCulture);
        await TypedResults.Problem(statusCode: StatusCodes.Status429TooManyRequests, title: "Too many requests",
            detail: $"this key sent more requests than its role allows (BatchRunner:Auth:RateLimits); retry in {retryAfter} s").ExecuteAsync(http);
    }
}
