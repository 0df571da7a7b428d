using BatchRunner.Server.Auth;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// Per-key request rates (<see cref="KeyRateLimiter"/>): a request past its key's role's rate gets 429 problem details
/// with Retry-After. Requests without a key (health, metrics, refused ones) and node-to-node calls are not limited here.
/// </summary>
public static class RateLimiting
{
    public static IServiceCollection AddBatchRunnerRateLimits(this IServiceCollection services, AuthOptions auth)
    {
        var limits = auth.RateLimits.ToDictionary(kv => kv.Key.ToLowerInvariant(), kv => kv.Value);
        return services.AddSingleton(sp => new KeyRateLimiter(limits, sp.GetRequiredService<TimeProvider>()));
    }

    /// <summary>After authentication and authorization: the caller is known, and only callers that may call get this far.</summary>
    public static IApplicationBuilder UseBatchRunnerRateLimits(this IApplicationBuilder app)
    {
        var limiter = app.ApplicationServices.GetRequiredService<KeyRateLimiter>();
        return app.Use((http, next) =>
            Caller.From(http.User) is { } caller && !limiter.TryAcquire(caller, out var retryAfter)
                ? RejectAsync(http, retryAfter)
                : next(http));
    }

    private static async Task RejectAsync(HttpContext http, TimeSpan wait)
    {
        var retryAfter = Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds));
        http.Response.StatusCode = StatusCodes.Status429TooManyRequests;
        http.Response.Headers.RetryAfter = retryAfter.ToString(System.Globalization.CultureInfo.InvariantCulture);
        await TypedResults.Problem(statusCode: StatusCodes.Status429TooManyRequests, title: "Too many requests",
            detail: $"this key sent more requests than its role allows (BatchRunner:Auth:RateLimits); retry in {retryAfter} s").ExecuteAsync(http);
    }
}
