using System.Diagnostics;
using BatchRunner.Server.Auth;
using Microsoft.AspNetCore.Diagnostics;

namespace BatchRunner.Server.Api;

/// <summary>
/// One Information line per HTTP request, in category <see cref="Category"/>, written once the response
/// is complete: method, route template, status, duration in milliseconds and the id of the key that
/// authenticated the request. This replaces ASP.NET Core's own five or six lines per request, which the
/// shipped appsettings.json turns down to Warning.
/// </summary>
/// <remarks>
/// The route template (<c>/api/v1/jobs/{id}/logs</c>), never the raw path: lines group by endpoint and
/// what a client put in a path (ids, file names, stray bytes) never reaches the operator's log. A request
/// that matched no endpoint (the Hangfire dashboard is middleware, a scanner's probe) is shown by its first
/// path segment only, reduced to safe characters (<c>/hangfire/*</c>). The key id is <c>-</c> when no key
/// was presented or accepted; the id of the API key that authenticated the request (<see cref="Caller.KeyId"/>:
/// <see cref="BootstrapKeyId"/> for the configured key, a key's uuid otherwise); <see cref="NodeKeyId"/> for
/// node-to-node calls (<see cref="SetKeyId"/>).
/// Silence it with <c>Logging:LogLevel:BatchRunner.Requests=Warning</c>.
/// </remarks>
public static partial class RequestLog
{
    public const string Category = "BatchRunner.Requests";
    public const string BootstrapKeyId = BootstrapKey.KeyId;
    public const string NodeKeyId = "node";
    private const int MaxSegmentChars = 40;

    /// <summary>Must come first in the pipeline, so that it sees the status the exception handler wrote.</summary>
    public static IApplicationBuilder UseBatchRunnerRequestLog(this IApplicationBuilder app)
    {
        var log = app.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger(Category);
        return app.Use(async (ctx, next) =>
        {
            if (!log.IsEnabled(LogLevel.Information))
            {
                await next(ctx);
                return;
            }
            var started = Stopwatch.GetTimestamp();
            try
            {
                await next(ctx);
            }
            finally
            {
                // The exception handler clears the endpoint before writing its problem; it keeps it in its feature.
                var endpoint = ctx.GetEndpoint() ?? ctx.Features.Get<IExceptionHandlerFeature>()?.Endpoint;
                var route = (endpoint as RouteEndpoint)?.RoutePattern.RawText is { } raw ? "/" + raw.Trim('/') : Unrouted(ctx.Request.Path);
                LogRequest(log, ctx.Request.Method, route, ctx.Response.StatusCode, Stopwatch.GetElapsedTime(started).TotalMilliseconds,
                    ctx.Features.Get<KeyIdFeature>()?.KeyId ?? Caller.From(ctx.User)?.KeyId ?? "-");
            }
        });
    }

    /// <summary>Records who a request that is not authenticated with an API key came from (node-to-node calls).</summary>
    public static void SetKeyId(HttpContext ctx, string keyId) => ctx.Features.Set(new KeyIdFeature(keyId));

    /// <summary>"/hangfire/*" for "/hangfire/jobs/details/7": the first segment, reduced to safe characters.</summary>
    public static string Unrouted(PathString path)
    {
        var value = path.Value ?? "";
        if (value.Length <= 1) return "/";
        var rest = value.AsSpan(1);
        var slash = rest.IndexOf('/');
        var segment = slash < 0 ? rest : rest[..slash];
        var safe = new string(segment.ToString().Where(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_').Take(MaxSegmentChars).ToArray());
        return slash < 0 || slash == rest.Length - 1 ? $"/{safe}" : $"/{safe}/*";
    }

    private sealed record KeyIdFeature(string KeyId);

    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "HTTP {Method} {Route} {StatusCode} in {DurationMs:0.0} ms, key {KeyId}")]
    private static partial void LogRequest(ILogger log, string method, string route, int statusCode, double durationMs, string keyId);
}
