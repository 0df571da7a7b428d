using System.Globalization;
using System.Net;
using System.Text;
using BatchRunner.Core;
using BatchRunner.Server.Api;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Storage;
using Hangfire;
using Hangfire.Dashboard;
using Hangfire.Dashboard.Pages;
using Microsoft.Extensions.Options;
using Npgsql;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// The Hangfire dashboard at /hangfire, made to answer an operator's questions about BatchRunner jobs:
/// each job's page shows the BatchRunner job (image and digest, command, resources, state and reason,
/// usage, outputs) and the last lines of its logs; a "BatchRunner nodes" page lists the nodes.
/// For admins only (<see cref="Auth.DashboardAdminFilter"/>: Bearer, or Basic with an admin key as password).
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
    public const int LogTailLines = 50;

    private static readonly TimeSpan LookupTimeout = TimeSpan.FromSeconds(5);
    private static int _registered;

    public static WebApplication UseBatchRunnerDashboard(this WebApplication app)
    {
        RegisterExtensionsOnce();
        app.UseHangfireDashboard(PathMatch, new DashboardOptions
        {
            Authorization = [new Auth.DashboardAdminFilter()],
            DashboardTitle = "BatchRunner",
            DisplayStorageConnectionString = false,
        });
        return app;
    }

    private static void RegisterExtensionsOnce()
    {
        if (Interlocked.Exchange(ref _registered, 1) == 1) return;
        // Order 5: above Hangfire's own blocks (parameters, state history), where an operator looks first.
        GlobalConfiguration.Configuration.UseJobDetailsRenderer(5, RenderJobDetails);
        DashboardRoutes.Routes.AddRazorPage(NodesRoute, _ => new NodesPage());
        NavigationMenu.Items.Add(page => new MenuItem("BatchRunner nodes", page.Url.To(NodesRoute))
        {
            Active = page.RequestPath.StartsWith(NodesRoute, StringComparison.Ordinal),
            Metric = ServersMetric,
        });
    }

    private static readonly DashboardMetric ServersMetric = new("batchrunner:servers", "Worker processes",
        page => new Metric(page.Statistics.Servers) { Style = page.Statistics.Servers == 0 ? MetricStyle.Danger : MetricStyle.Default });

    // ---- job details ---------------------------------------------------------------------------------------------

    private static NonEscapedString RenderJobDetails(JobDetailsRendererDto dto)
    {
        if (JobIdOf(dto) is not { } jobId) return new NonEscapedString("");
        var services = dto.Page.Context.GetHttpContext().RequestServices;
        JobRecord? job;
        try
        {
            // Renderers are synchronous; the lookup is one indexed query, bounded by a timeout.
            using var cts = new CancellationTokenSource(LookupTimeout);
            job = services.GetRequiredService<JobStore>().GetAsync(jobId, cts.Token).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is NpgsqlException or OperationCanceledException or TimeoutException)
        {
            return Block($"<div class=\"alert alert-warning\">BatchRunner job {H(jobId)}: the job database did not answer ({H(e.Message)}).</div>");
        }
        if (job is null) return Block($"<div class=\"alert alert-info\">BatchRunner job {H(jobId)} is not in the database (deleted?).</div>");
        return Block(JobHtml(job, services.GetRequiredService<DataPaths>()));
    }

    /// <summary>JobPerformer.RunAsync(Guid jobId, string displayName, ...): argument 0 is the BatchRunner job id.</summary>
    private static Guid? JobIdOf(JobDetailsRendererDto dto)
    {
        var job = dto.JobDetails?.Job;
        if (job?.Type != typeof(JobPerformer) || job.Args.Count == 0) return null;
        return job.Args[0] switch
        {
            Guid g => g,
            string s when Guid.TryParse(s, out var g) => g,
            _ => null,
        };
    }

    private static NonEscapedString Block(string inner) => new($"<div class=\"batchrunner-job\">{inner}</div>");

    internal static string JobHtml(JobRecord job, DataPaths paths)
    {
        var spec = job.Spec;
        var sb = new StringBuilder();
        sb.Append("<h3>BatchRunner job</h3><table class=\"table table-condensed\"><tbody>");
        Row(sb, "Id", H(job.Id));
        if (job.Name is not null) Row(sb, "Name", H(job.Name));
        var state = $"<span class=\"label label-{StateStyle(job.State)}\">{H(job.State)}</span>";
        if (job.Reason is not null) state += $" {H(job.Reason)}";
        if (job.Message is not null) state += $": {H(job.Message)}";
        Row(sb, "State", state);
        Row(sb, "Image", $"<code>{H(job.Image)}</code>" + (job.ImageDigest is null ? "" : $"<br/><code>{H(job.ImageDigest)}</code>"));
        Row(sb, "Command", spec.Command is null && spec.Args is null
            ? "<em>the image's entrypoint and cmd</em>"
            : $"<code>{H(string.Join(' ', (spec.Command ?? []).Concat(spec.Args ?? []).Select(Quote)))}</code>");
        Row(sb, "Resources", H(string.Create(CultureInfo.InvariantCulture,
            $"{spec.Resources.Cpus:0.###} CPUs, {Quantity.FormatBytes(spec.Resources.MemoryBytes)} memory, {spec.Resources.Pids} pids, timeout {spec.TimeoutSeconds} s")));
        Row(sb, "Queue / node / attempt", H($"{job.Queue} / {job.Node ?? "-"} / {job.Attempt}"));
        Row(sb, "Times (UTC)", H(string.Create(CultureInfo.InvariantCulture,
            $"submitted {job.CreatedAt:u}, started {job.StartedAt?.ToString("u", CultureInfo.InvariantCulture) ?? "-"}, finished {job.FinishedAt?.ToString("u", CultureInfo.InvariantCulture) ?? "-"}")));
        if (job.PullProgress is { } p)
            Row(sb, "Image pull", H($"{Quantity.FormatBytes(p.BytesDone)} of {Quantity.FormatBytes(p.BytesTotal)}"));
        if (job.ExitCode is { } code) Row(sb, "Exit code", H(code));
        if (job.Usage is { } u) Row(sb, "Usage", H(UsageText(u)));
        if (job.Outputs.Count > 0)
        {
            var list = new StringBuilder("<ul class=\"list-unstyled\">");
            foreach (var o in job.Outputs.Take(100))
                list.Append($"<li><code>{H(o.Path)}</code> {H(Quantity.FormatBytes(o.Size))} <small>sha256:{H(o.Sha256)}</small></li>");
            if (job.Outputs.Count > 100) list.Append($"<li>… and {job.Outputs.Count - 100} more</li>");
            Row(sb, "Outputs", list.Append("</ul>").ToString());
        }
        sb.Append("</tbody></table>");

        foreach (var (stream, path) in new[] { ("stdout", paths.Stdout(job.Id)), ("stderr", paths.Stderr(job.Id)) })
        {
            sb.Append($"<h4>{stream} <small>last {LogTailLines} lines</small></h4>");
            var tail = TailLines(path, LogTailLines);
            sb.Append(tail is null
                ? $"<p class=\"text-muted\">No {stream} on this node (not started yet, or the job ran on another node: GET /api/v1/jobs/{H(job.Id)}/logs).</p>"
                : $"<pre class=\"batchrunner-log\" style=\"max-height:30em;overflow:auto\">{H(tail)}</pre>");
        }
        return sb.ToString();
    }

    private static void Row(StringBuilder sb, string name, string html) => sb.Append($"<tr><th style=\"width:14em\">{H(name)}</th><td>{html}</td></tr>");

    private static string StateStyle(string state) => state switch
    {
        JobState.Succeeded => "success",
        JobState.Failed => "danger",
        JobState.Running or JobState.Starting => "primary",
        JobState.Cancelled => "warning",
        _ => "default",
    };

    private static string Quote(string arg) =>
        arg.Length > 0 && arg.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,@%+".Contains(c)) ? arg : "'" + arg.Replace("'", "'\\''") + "'";

    private static string UsageText(ResourceUsage u)
    {
        var parts = new List<string>();
        var ci = CultureInfo.InvariantCulture;
        if (u.CpuSeconds is { } cpu) parts.Add(string.Create(ci, $"CPU {cpu:0.###} s"));
        if (u.CpuThrottledSeconds is { } thr && thr > 0) parts.Add(string.Create(ci, $"throttled {thr:0.###} s"));
        if (u.MaxMemoryBytes is { } max) parts.Add($"peak memory {Quantity.FormatBytes(max)}");
        if (u.OomKills is { } oom && oom > 0) parts.Add(string.Create(ci, $"{oom} OOM kill(s)"));
        if (u.PidsLimitHits is { } hits && hits > 0) parts.Add(string.Create(ci, $"pids limit hit {hits} times"));
        return parts.Count == 0 ? "not measured" : string.Join(", ", parts);
    }

    /// <summary>The last <paramref name="lines"/> lines of a file, reading at most its last 64 KiB; null when there is no file.</summary>
    internal static string? TailLines(string path, int lines)
    {
        const int MaxBytes = 64 * 1024;
        try
        {
            using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            var start = Math.Max(0, f.Length - MaxBytes);
            f.Seek(start, SeekOrigin.Begin);
            var buffer = new byte[f.Length - start];
            f.ReadExactly(buffer);
            var text = Encoding.UTF8.GetString(buffer);
            var all = text.Split('\n');
            // A read that started mid-file drops its first, partial line; a final newline leaves an empty last item.
            var skip = start > 0 ? 1 : 0;
            var take = all.Length - skip - (text.EndsWith('\n') ? 1 : 0);
            var kept = all.Skip(skip).Take(take).TakeLast(lines);
            return string.Join('\n', kept);
        }
        catch (FileNotFoundException) { return null; }
        catch (DirectoryNotFoundException) { return null; }
        catch (IOException e) { return $"(cannot read the log: {e.Message})"; }
    }

    private static string H(object? value) => WebUtility.HtmlEncode(Convert.ToString(value, CultureInfo.InvariantCulture) ?? "");

    // ---- nodes page ------------------------------------------------------------------------------------------------

    /// <summary>
    /// Nodes: the scheduler's node records (table batchrunner.nodes, all its columns, when it exists),
    /// capacity and allocation as exported to Prometheus, the Hangfire servers with a heartbeat, and the
    /// identity of the process serving this page.
    /// </summary>
    private sealed class NodesPage : RazorPage
    {
        public override void Execute()
        {
            Layout = new LayoutPage("BatchRunner nodes");
            var services = Context.GetHttpContext().RequestServices;
            var sb = new StringBuilder();
            sb.Append("<div class=\"row\"><div class=\"col-md-12\"><h1 class=\"page-header\">BatchRunner nodes</h1>");

            sb.Append("<h3>Node records</h3>");
            sb.Append(NodeRecordsHtml(services.GetRequiredService<NpgsqlDataSource>()));

            sb.Append("<h3>Capacity and allocation</h3>");
            sb.Append(CapacityHtml());

            sb.Append("<h3>Worker processes (Hangfire servers)</h3>");
            var servers = Storage.GetMonitoringApi().Servers();
            if (servers.Count == 0) sb.Append("<div class=\"alert alert-warning\">No worker process has a live heartbeat: queued jobs will not start.</div>");
            else
            {
                sb.Append("<table class=\"table table-condensed\"><thead><tr><th>Server</th><th>Workers</th><th>Queues</th><th>Started (UTC)</th><th>Heartbeat (UTC)</th></tr></thead><tbody>");
                foreach (var s in servers)
                    sb.Append($"<tr><td><code>{H(s.Name)}</code></td><td>{H(s.WorkersCount)}</td><td>{H(string.Join(", ", s.Queues))}</td><td>{H(s.StartedAt.ToString("u", CultureInfo.InvariantCulture))}</td><td>{H(s.Heartbeat?.ToString("u", CultureInfo.InvariantCulture) ?? "-")}</td></tr>");
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

        private static string NodeRecordsHtml(NpgsqlDataSource db)
        {
            try
            {
                using var conn = db.OpenConnection();
                using (var exists = new NpgsqlCommand("select to_regclass('batchrunner.nodes') is not null", conn))
                {
                    if (exists.ExecuteScalar() is not true)
                        return "<p class=\"text-muted\">This database has no node records yet; the worker processes below are the nodes.</p>";
                }
                // The table's columns belong to the scheduler: show them all, as they are.
                using var cmd = new NpgsqlCommand("select * from batchrunner.nodes order by 1 limit 500", conn) { CommandTimeout = 5 };
                using var rd = cmd.ExecuteReader();
                var sb = new StringBuilder("<table class=\"table table-condensed table-striped\"><thead><tr>");
                for (var i = 0; i < rd.FieldCount; i++) sb.Append($"<th>{H(rd.GetName(i))}</th>");
                sb.Append("</tr></thead><tbody>");
                var rows = 0;
                while (rd.Read())
                {
                    rows++;
                    sb.Append("<tr>");
                    for (var i = 0; i < rd.FieldCount; i++) sb.Append($"<td>{(rd.IsDBNull(i) ? "" : H(rd.GetValue(i)))}</td>");
                    sb.Append("</tr>");
                }
                if (rows == 0) sb.Append($"<tr><td colspan=\"{rd.FieldCount}\" class=\"text-muted\">no nodes registered</td></tr>");
                return sb.Append("</tbody></table>").ToString();
            }
            catch (Exception e) when (e is NpgsqlException or TimeoutException or InvalidOperationException)
            {
                return $"<div class=\"alert alert-warning\">Node records unavailable: {H(e.Message)}</div>";
            }
        }

        private static string CapacityHtml()
        {
            static Dictionary<string, double> Values(Prometheus.Gauge g)
            {
                var d = new Dictionary<string, double>();
                foreach (var labels in g.GetAllLabelValues()) d[labels[0]] = g.WithLabels(labels).Value;
                return d;
            }
            var capCpu = Values(NodeMetrics.CapacityCpus);
            var capMem = Values(NodeMetrics.CapacityMemoryBytes);
            var capGpu = Values(NodeMetrics.CapacityGpus);
            var allocCpu = Values(NodeMetrics.AllocatedCpus);
            var allocMem = Values(NodeMetrics.AllocatedMemoryBytes);
            var allocGpu = Values(NodeMetrics.AllocatedGpus);
            var nodes = capCpu.Keys.Concat(allocCpu.Keys).Distinct().Order(StringComparer.Ordinal).ToList();
            if (nodes.Count == 0) return "<p class=\"text-muted\">This process exports no node capacity (an API-only process without node records).</p>";
            var ci = CultureInfo.InvariantCulture;
            var sb = new StringBuilder("<table class=\"table table-condensed\"><thead><tr><th>Node</th><th>CPUs allocated / capacity</th><th>Memory allocated / capacity</th><th>GPUs allocated / capacity</th></tr></thead><tbody>");
            foreach (var n in nodes)
            {
                string Mem(Dictionary<string, double> d) => d.TryGetValue(n, out var v) ? Quantity.FormatBytes((long)v) : "-";
                string Num(Dictionary<string, double> d) => d.TryGetValue(n, out var v) ? v.ToString("0.###", ci) : "-";
                sb.Append($"<tr><td><code>{H(n)}</code></td><td>{H(Num(allocCpu))} / {H(Num(capCpu))}</td><td>{H(Mem(allocMem))} / {H(Mem(capMem))}</td><td>{H(Num(allocGpu))} / {H(Num(capGpu))}</td></tr>");
            }
            return sb.Append("</tbody></table>").ToString();
        }
    }
}
