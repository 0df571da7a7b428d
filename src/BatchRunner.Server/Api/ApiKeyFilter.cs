namespace BatchRunner.Server.Api;

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
