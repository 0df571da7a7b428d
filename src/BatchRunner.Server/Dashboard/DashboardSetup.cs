using BatchRunner.Server.Api;
using Hangfire;
using Hangfire.Dashboard;

namespace BatchRunner.Server.Dashboard;

/// <summary>
/// The Hangfire dashboard at /hangfire, made to answer an operator's questions about BatchRunner jobs:
/// each job's page shows the BatchRunner job (image and digest, command, resources, state and reason,
/// usage, outputs) and the last lines of its logs (<see cref="JobDetails"/>); a "BatchRunner nodes" page
/// lists the node records with their capacity and allocation, and the worker processes (<see cref="NodesPage"/>).
/// Every page reads what it shows from Storage; none writes.
/// Protected by the API key (<see cref="DashboardApiKeyFilter"/>: Bearer, or Basic with the key as password).
/// </summary>
/// <remarks>
/// Hangfire's renderers, routes and navigation items are process-wide statics: they are registered once
/// per process and find the host's services through each request (several hosts in one test process
/// each see their own database).
/// </remarks>
public static class DashboardSetup
{
    public const string PathMatch = "/hangfire";
    public const string NodesRoute = "/batchrunner/nodes";

    private static int _registered;

    public static WebApplication UseBatchRunnerDashboard(this WebApplication app)
    {
        RegisterExtensionsOnce();
        app.UseHangfireDashboard(PathMatch, new DashboardOptions
        {
            Authorization = [new DashboardApiKeyFilter(app.Services.GetRequiredService<ApiKey>())],
            DashboardTitle = "BatchRunner",
            DisplayStorageConnectionString = false,
        });
        return app;
    }

    private static void RegisterExtensionsOnce()
    {
        if (Interlocked.Exchange(ref _registered, 1) == 1) return;
        // Order 5: above Hangfire's own blocks (parameters, state history), where an operator looks first.
        GlobalConfiguration.Configuration.UseJobDetailsRenderer(5, JobDetails.Render);
        DashboardRoutes.Routes.AddRazorPage(NodesRoute, _ => new NodesPage());
        NavigationMenu.Items.Add(page => new MenuItem("BatchRunner nodes", page.Url.To(NodesRoute))
        {
            Active = page.RequestPath.StartsWith(NodesRoute, StringComparison.Ordinal),
            Metric = ServersMetric,
        });
    }

    private static readonly DashboardMetric ServersMetric = new("batchrunner:servers", "Worker processes",
        page => new Metric(page.Statistics.Servers) { Style = page.Statistics.Servers == 0 ? MetricStyle.Danger : MetricStyle.Default });
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
