using BatchRunner.Server.Auth;
using Hangfire;
using Hangfire.Dashboard;

namespace BatchRunner.Server.Dashboard;

/// <summary>
/// The Hangfire dashboard at /hangfire, made to answer an operator's questions about BatchRunner jobs:
/// each job's page shows the BatchRunner job (image and digest, command, resources, state and reason,
/// usage, outputs) and the last lines of its logs (<see cref="JobDetails"/>); a "BatchRunner nodes" page
/// lists the node records with their capacity and allocation, and the worker processes (<see cref="NodesPage"/>).
/// Every page reads what it shows from Storage; none writes.
/// For admins only (<see cref="DashboardAdminFilter"/>: Bearer, or Basic with an admin key as password); its
/// POSTs need the anti-forgery token of its pages.
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
            Authorization = [new DashboardAdminFilter()],
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
