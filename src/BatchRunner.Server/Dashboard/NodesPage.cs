using System.Globalization;
using System.Text;
using BatchRunner.Core;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Storage;
using Hangfire.Dashboard;
using Hangfire.Dashboard.Pages;
using Microsoft.Extensions.Options;
using static BatchRunner.Server.Dashboard.Html;

namespace BatchRunner.Server.Dashboard;

/// <summary>
/// "BatchRunner nodes": the node records (liveness by the database's clock, labels, queues), each node's
/// capacity and what the jobs placed on it requested (both from the node records and the jobs' specs, as the
/// nodes API reports them: the same figures on every API process), the Hangfire servers with a heartbeat, and
/// the identity of the process serving this page.
/// </summary>
internal sealed class NodesPage : RazorPage
{
    private static readonly TimeSpan LookupTimeout = TimeSpan.FromSeconds(5);

    public override void Execute()
    {
        Layout = new LayoutPage("BatchRunner nodes");
        var services = Context.GetHttpContext().RequestServices;
        var sb = new StringBuilder();
        sb.Append("<div class=\"row\"><div class=\"col-md-12\"><h1 class=\"page-header\">BatchRunner nodes</h1>");

        IReadOnlyList<NodeInfo>? nodes = null;
        try
        {
            // Razor pages are synchronous; the read is one grouped query, bounded by a timeout.
            using var cts = new CancellationTokenSource(LookupTimeout);
            nodes = services.GetRequiredService<NodeStore>().ListAsync(aliveOnly: false, cts.Token).GetAwaiter().GetResult();
        }
        catch (Exception e) when (DatabaseErrors.IsOutage(e) || e is OperationCanceledException or TimeoutException)
        {
            sb.Append($"<div class=\"alert alert-warning\">Node records unavailable: {H(e.Message)}</div>");
        }

        if (nodes is not null)
        {
            sb.Append("<h3>Node records</h3>").Append(NodeRecordsHtml(nodes));
            sb.Append("<h3>Capacity and allocation</h3>").Append(CapacityHtml(nodes));
        }

        sb.Append("<h3>Worker processes (Hangfire servers)</h3>");
        var servers = Storage.GetMonitoringApi().Servers();
        if (servers.Count == 0) sb.Append("<div class=\"alert alert-warning\">No worker process has a live heartbeat: queued jobs will not start.</div>");
        else
        {
            sb.Append("<table class=\"table table-condensed\"><thead><tr><th>Server</th><th>Workers</th><th>Queues</th><th>Started (UTC)</th><th>Heartbeat (UTC)</th></tr></thead><tbody>");
            foreach (var s in servers)
                sb.Append($"<tr><td><code>{H(s.Name)}</code></td><td>{H(s.WorkersCount)}</td><td>{H(string.Join(", ", s.Queues))}</td><td>{H(Time(s.StartedAt))}</td><td>{H(Time(s.Heartbeat))}</td></tr>");
            sb.Append("</tbody></table>");
        }

        sb.Append("<h3>This process</h3>");
        var options = services.GetRequiredService<IOptions<BatchRunnerOptions>>().Value;
        var node = services.GetRequiredService<NodeIdentity>();
        var runtime = services.GetService<BatchRunner.Runtime.IContainerRuntime>();
        sb.Append("<table class=\"table table-condensed\"><tbody>");
        Row(sb, "Node", $"<code>{H(node.Name)}</code>");
        Row(sb, "Role", H(options.Role));
        Row(sb, "Queues", H(string.Join(", ", options.Queues)));
        Row(sb, "Workers", H(options.RunsWorker ? options.Workers : 0));
        Row(sb, "Runtime", runtime is null ? "<em>none (API only)</em>" : H($"{runtime.Name} {runtime.Version}"));
        Row(sb, "Host", H($"{Environment.MachineName}, {Environment.ProcessorCount} CPUs"));
        sb.Append("</tbody></table></div></div>");
        WriteLiteral(sb.ToString());
    }

    internal static string NodeRecordsHtml(IReadOnlyList<NodeInfo> nodes)
    {
        if (nodes.Count == 0) return "<p class=\"text-muted\">No node has registered yet: start a worker (role all or worker) against this database.</p>";
        var sb = new StringBuilder("<table class=\"table table-condensed table-striped\"><thead><tr>" +
            "<th>Node</th><th>State</th><th>Labels</th><th>Queues</th><th>Network modes</th><th>Running jobs</th><th>Started (UTC)</th><th>Heartbeat (UTC)</th>" +
            "</tr></thead><tbody>");
        foreach (var n in nodes)
        {
            var state = n.Alive ? "<span class=\"label label-success\">alive</span>" : "<span class=\"label label-default\">dead</span>";
            var labels = n.Labels.Count == 0 ? "-" : string.Join(", ", n.Labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}"));
            sb.Append($"<tr><td><code>{H(n.Name)}</code></td><td>{state}</td><td>{H(labels)}</td><td>{H(string.Join(", ", n.Queues))}</td>" +
                      $"<td>{H(string.Join(", ", n.Capacity.NetworkModes))}</td><td>{H(n.RunningJobs.Count)}</td><td>{H(Time(n.StartedAt))}</td><td>{H(Time(n.HeartbeatAt))}</td></tr>");
        }
        return sb.Append("</tbody></table>").ToString();
    }

    internal static string CapacityHtml(IReadOnlyList<NodeInfo> nodes)
    {
        var live = nodes.Where(n => n.Alive).ToList();
        if (live.Count == 0) return "<p class=\"text-muted\">No live node.</p>";
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder("<table class=\"table table-condensed\"><thead><tr><th>Node</th><th>CPUs allocated / capacity</th><th>Memory allocated / capacity</th><th>GPUs allocated / capacity</th></tr></thead><tbody>");
        foreach (var n in live)
        {
            var gpuModels = n.Capacity.GpuModels.Count == 0 ? "" : $" ({string.Join(", ", n.Capacity.GpuModels)})";
            sb.Append($"<tr><td><code>{H(n.Name)}</code></td>" +
                      $"<td>{H(n.Allocated.Cpus.ToString("0.###", ci))} / {H(n.Capacity.Cpus.ToString("0.###", ci))}</td>" +
                      $"<td>{H(Quantity.Human(n.Allocated.MemoryBytes))} / {H(Quantity.Human(n.Capacity.MemoryBytes))}</td>" +
                      $"<td>{H(n.Allocated.Gpus)} / {H(n.Capacity.Gpus)}{H(gpuModels)}</td></tr>");
        }
        return sb.Append("</tbody></table>").ToString();
    }
}
