using System.Globalization;
using System.Text;
using BatchRunner.Core;
using BatchRunner.Runtime.Logs;
using BatchRunner.Server.Storage;
using Hangfire.Dashboard;
using static BatchRunner.Server.Dashboard.Html;

namespace BatchRunner.Server.Dashboard;

/// <summary>
/// The block on a Hangfire job's page that shows the BatchRunner job: image and digest, command, resources,
/// state and reason, usage, outputs, and the last <see cref="LogTailLines"/> lines of its stdout and stderr
/// (from this node's data directory; a job that ran elsewhere says where to ask).
/// </summary>
public static class JobDetails
{
    public const int LogTailLines = 50;

    private static readonly TimeSpan LookupTimeout = TimeSpan.FromSeconds(5);

    public static NonEscapedString Render(JobDetailsRendererDto dto)
    {
        var services = dto.Page.Context.GetHttpContext().RequestServices;
        var store = services.GetRequiredService<JobStore>();
        Guid? id = null;
        JobRecord? job;
        string workflow;
        try
        {
            // Renderers are synchronous; the lookups are a few indexed queries, bounded by a timeout.
            using var cts = new CancellationTokenSource(LookupTimeout);
            id = JobIdOf(dto, store, cts.Token);
            if (id is not { } jobId) return new NonEscapedString("");
            job = store.GetAsync(jobId, cts.Token).GetAwaiter().GetResult();
            workflow = job is null ? "" : WorkflowDetails.Html(job, store, dto.Page.Url, cts.Token);
        }
        catch (Exception e) when (DatabaseErrors.IsOutage(e) || e is OperationCanceledException or TimeoutException)
        {
            return Block($"<div class=\"alert alert-warning\">BatchRunner job {H(id)}: the job database did not answer ({H(e.Message)}).</div>");
        }
        if (job is null) return Block($"<div class=\"alert alert-info\">BatchRunner job {H(id)} is not in the database (deleted?).</div>");
        return Block(JobHtml(job, services.GetRequiredService<DataPaths>(), workflow));
    }

    /// <summary>
    /// The BatchRunner job a Hangfire job stands for. IJobPerformer.RunAsync(Guid jobId, string displayName, ...): argument 0
    /// is the job id (the message names the interface, or, enqueued by an older version, the worker's class that implements
    /// it). IScheduleRunner.RunAsync(Guid scheduleId, ...): a schedule's firing, whose run has this Hangfire job as its message.
    /// </summary>
    private static Guid? JobIdOf(JobDetailsRendererDto dto, JobStore store, CancellationToken ct)
    {
        var job = dto.JobDetails?.Job;
        if (job is null || job.Args.Count == 0) return null;
        if (typeof(IScheduleRunner).IsAssignableFrom(job.Type)) return store.ScheduledRunOfAsync(dto.JobId, ct).GetAwaiter().GetResult();
        if (!typeof(IJobPerformer).IsAssignableFrom(job.Type)) return null;
        return job.Args[0] switch
        {
            Guid g => g,
            string s when Guid.TryParse(s, out var g) => g,
            _ => null,
        };
    }

    private static NonEscapedString Block(string inner) => new($"<div class=\"batchrunner-job\">{inner}</div>");

    internal static string JobHtml(JobRecord job, DataPaths paths, string workflowHtml = "")
    {
        var spec = job.Spec;
        var sb = new StringBuilder();
        sb.Append("<h3>BatchRunner job</h3><table class=\"table table-condensed\"><tbody>");
        Row(sb, "Id", H(job.Id));
        if (job.Name is not null) Row(sb, "Name", H(job.Name));
        var state = $"<span class=\"label label-{WorkflowDetails.StateStyle(job.State)}\">{H(job.State)}</span>";
        if (job.Reason is not null) state += $" {H(job.Reason)}";
        if (job.Message is not null) state += $": {H(job.Message)}";
        Row(sb, "State", state);
        Row(sb, "Tenant / submitted by", H($"{job.Tenant} / key {job.SubmittedBy ?? "-"}"));
        Row(sb, "Image", $"<code>{H(job.Image)}</code>" + (job.ImageDigest is null ? "" : $"<br/><code>{H(job.ImageDigest)}</code>"));
        Row(sb, "Command", spec.Command is null && spec.Args is null
            ? "<em>the image's entrypoint and cmd</em>"
            : $"<code>{H(string.Join(' ', (spec.Command ?? []).Concat(spec.Args ?? []).Select(Quote)))}</code>");
        // Plain env values are shown, as in the API; secretEnv only by name (the record never holds their values).
        if (spec.Env.Count > 0 || spec.SecretEnvNames.Count > 0)
            Row(sb, "Environment", string.Join("<br/>", spec.Env.OrderBy(e => e.Key, StringComparer.Ordinal).Select(e => $"<code>{H(e.Key)}={H(e.Value)}</code>")
                .Concat(spec.SecretEnvNames.Select(n => $"<code>{H(n)}</code> <em>(secret)</em>"))));
        Row(sb, "Resources", H(string.Create(CultureInfo.InvariantCulture,
            $"{Quantity.Count(spec.Resources.Cpus, "CPU")}, {Quantity.Human(spec.Resources.MemoryBytes)} memory, {spec.Resources.Pids} pids, timeout {spec.TimeoutSeconds} s")));
        Row(sb, "Queue / node / attempt", H($"{job.Queue} / {job.Node ?? "-"} / {job.Attempt}"));
        Row(sb, "Times (UTC)", H(string.Create(CultureInfo.InvariantCulture,
            $"submitted {job.CreatedAt:u}, started {job.StartedAt?.ToString("u", CultureInfo.InvariantCulture) ?? "-"}, finished {job.FinishedAt?.ToString("u", CultureInfo.InvariantCulture) ?? "-"}")));
        if (job.PullProgress is { } p)
            Row(sb, "Image pull", H($"{Quantity.Human(p.BytesDone)} of {Quantity.Human(p.BytesTotal)}"));
        if (job.ExitCode is { } code) Row(sb, "Exit code", H(code));
        if (job.Usage is { } u) Row(sb, "Usage", H(UsageText(u)));
        if (job.Notify is { } n)
            Row(sb, "Webhook", H($"{n.State}, {n.Attempts} attempt(s)" + (n.LastError is null ? "" : $", last error: {n.LastError}")));
        if (job.Outputs.Count > 0)
        {
            var list = new StringBuilder("<ul class=\"list-unstyled\">");
            foreach (var o in job.Outputs.Take(100))
                list.Append($"<li><code>{H(o.Path)}</code> {H(Quantity.Human(o.Size))} <small>sha256:{H(o.Sha256)}</small></li>");
            if (job.Outputs.Count > 100) list.Append($"<li>… and {job.Outputs.Count - 100} more</li>");
            Row(sb, "Outputs", list.Append("</ul>").ToString());
        }
        sb.Append("</tbody></table>");
        sb.Append(workflowHtml);
        // An array's parent runs no container: no logs of its own.
        if (job.IsArrayParent) return sb.ToString();

        foreach (var (stream, path) in new[] { ("stdout", paths.Stdout(job.Id)), ("stderr", paths.Stderr(job.Id)) })
        {
            sb.Append($"<h4>{stream} <small>last {LogTailLines} lines</small></h4>");
            var tail = TailLines(path, stream, LogTailLines);
            sb.Append(tail is null
                ? $"<p class=\"text-muted\">No {stream} on this node (not started yet, or the job ran on another node: GET /api/v1/jobs/{H(job.Id)}/logs).</p>"
                : $"<pre class=\"batchrunner-log\" style=\"max-height:30em;overflow:auto\">{H(tail)}</pre>");
        }
        return sb.ToString();
    }

    private static string Quote(string arg) =>
        arg.Length > 0 && arg.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,@%+".Contains(c)) ? arg : "'" + arg.Replace("'", "'\\''") + "'";

    private static string UsageText(ResourceUsage u)
    {
        var parts = new List<string>();
        var ci = CultureInfo.InvariantCulture;
        if (u.CpuSeconds is { } cpu) parts.Add(string.Create(ci, $"CPU {cpu:0.###} s"));
        if (u.CpuThrottledSeconds is { } thr && thr > 0) parts.Add(string.Create(ci, $"throttled {thr:0.###} s"));
        if (u.MaxMemoryBytes is { } max) parts.Add($"peak memory {Quantity.Human(max)}");
        if (u.OomKills is { } oom && oom > 0) parts.Add(string.Create(ci, $"{oom} OOM kill(s)"));
        if (u.PidsLimitHits is { } hits && hits > 0) parts.Add(string.Create(ci, $"pids limit hit {hits} times"));
        return parts.Count == 0 ? "not measured" : string.Join(", ", parts);
    }

    /// <summary>The last <paramref name="lines"/> lines of a stored stream (a marker line where bytes were dropped),
    /// reading at most its last 64 KiB; null when the job has no log on this node.</summary>
    public static string? TailLines(string path, string stream, int lines)
    {
        const int MaxBytes = 64 * 1024;
        if (!File.Exists(path)) return null;
        try
        {
            // Renderers are synchronous; this reads a few local files.
            var text = StoredLog.TailAsync(path, stream, MaxBytes).GetAwaiter().GetResult();
            var all = text.Split('\n');
            // A final newline leaves an empty last item.
            return string.Join('\n', all.Take(all.Length - (text.EndsWith('\n') ? 1 : 0)).TakeLast(lines));
        }
        catch (IOException e) { return $"(cannot read the log: {e.Message})"; }
    }
}
