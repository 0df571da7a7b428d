using BatchRunner.Server.Api;
using Hangfire.Dashboard;

namespace BatchRunner.Server.Hosting;

public static class ApiKeyEndpointExtensions
{
    /// <summary>Every endpoint of the group needs <c>Authorization: Bearer KEY</c>; otherwise 401 problem details.</summary>
    public static RouteGroupBuilder RequireApiKey(this RouteGroupBuilder group)
    {
        group.AddEndpointFilter(async (ctx, next) =>
        {
            var key = ctx.HttpContext.RequestServices.GetRequiredService<ApiKey>();
            if (key.IsAuthorized(ctx.HttpContext))
            {
                RequestLog.SetKeyId(ctx.HttpContext, RequestLog.BootstrapKeyId);
                return await next(ctx);
            }
            ctx.HttpContext.Response.Headers.WWWAuthenticate = "Bearer realm=\"batchrunner\"";
            return TypedResults.Problem(statusCode: StatusCodes.Status401Unauthorized, title: "Unauthorized",
                detail: "send the API key as \"Authorization: Bearer <key>\" (BATCHRUNNER_API_KEY or DATA/api-key)");
        });
        return group;
    }
}

/// <summary>
/// The Hangfire dashboard shows job specs and logs, and can delete jobs: it takes the API key, as a
/// bearer token or as the password of HTTP Basic auth (so a browser can log in with any user name).
/// </summary>
public sealed class DashboardApiKeyFilter(ApiKey key) : IDashboardAuthorizationFilter
{
    public bool Authorize(DashboardContext context)
    {
        var http = context.GetHttpContext();
        if (key.IsAuthorized(http))
        {
            RequestLog.SetKeyId(http, RequestLog.BootstrapKeyId);
            return true;
        }
        http.Response.Headers.WWWAuthenticate = "Basic realm=\"BatchRunner dashboard (password: the API key)\"";
        return false;
    }
}
