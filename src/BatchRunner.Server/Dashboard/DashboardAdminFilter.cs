using Hangfire.Dashboard;

using BatchRunner.Server.Auth;

namespace BatchRunner.Server.Dashboard;

/// <summary>
/// The Hangfire dashboard shows every tenant's jobs and can delete them: admins only. The request was authenticated
/// by <see cref="ApiKeyAuthentication"/> (Bearer, or HTTP Basic with the key as password, so a browser can log in
/// with any user name). Hangfire answers 401 without a key and 403 for a key that is not an admin's; its
/// state-changing POSTs also need the anti-forgery token its pages carry (IAntiforgery is registered).
/// </summary>
public sealed class DashboardAdminFilter : IDashboardAuthorizationFilter
{
    public bool Authorize(DashboardContext context)
    {
        var http = context.GetHttpContext();
        if (Caller.From(http.User) is { } caller) return caller.IsAdmin;
        http.Response.Headers.WWWAuthenticate = "Basic realm=\"BatchRunner dashboard (password: an admin API key)\"";
        return false;
    }
}
