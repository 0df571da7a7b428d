using System.Text;
using BatchRunner.Core;
using BatchRunner.Server.Storage;
using Hangfire.Dashboard;
using static BatchRunner.Server.Dashboard.Html;

namespace BatchRunner.Server.Dashboard;

/// <summary>
/// The workflow part of a job's block on its Hangfire page: an array's children (per state, and the first ones), a
/// child's parent, the jobs it depends on and those that depend on it, each linked to its own Hangfire page, and the
/// schedule that started it.
/// </summary>
internal static class WorkflowDetails
{
    public const int ChildrenShown = 20;

    public static string Html(JobRecord job, JobStore store, UrlHelper url, CancellationToken ct)
    {
        var sb = new StringBuilder();
        if (job.IsArrayParent)
        {
            var counts = store.CountChildrenAsync([job.Id], ct).GetAwaiter().GetResult().GetValueOrDefault(job.Id) ?? new Dictionary<string, int>();
            var (children, more) = store.ListChildrenAsync(job.Id, null, ChildrenShown, -1, ct).GetAwaiter().GetResult();
            sb.Append($"<h4>Array <small>{H(job.Spec.Array!.Size)} children, at most {H(job.Spec.Array.Parallelism)} at once</small></h4><p>");
            foreach (var state in JobState.All.Where(s => counts.GetValueOrDefault(s) > 0))
                sb.Append($"<span class=\"label label-{StateStyle(state)}\">{H(state)} {H(counts[state])}</span> ");
            sb.Append("</p><table class=\"table table-condensed\"><thead><tr><th>Index</th><th>Job</th><th>State</th></tr></thead><tbody>");
            foreach (var c in children)
                sb.Append($"<tr><td>{H(c.ArrayIndex)}</td><td>{Link(url, c.Id, c.HangfireJobId)}</td><td>{StateHtml(c.State, c.Reason)}</td></tr>");
            sb.Append("</tbody></table>");
            if (more is not null)
                sb.Append($"<p class=\"text-muted\">The other children: <code>GET /api/v1/jobs/{H(job.Id)}/children</code>.</p>");
        }
        if (job.ParentId is { } parentId)
        {
            var parent = store.GetAsync(parentId, ct).GetAwaiter().GetResult();
            sb.Append($"<h4>Array child</h4><p>Index {H(job.ArrayIndex)} of {H(job.Spec.Array?.Size)} in array {Link(url, parentId, parent?.HangfireJobId)}" +
                      (parent is null ? "" : $" ({StateHtml(parent.State, parent.Reason)})") + "</p>");
        }
        AppendLinks(sb, "Depends on", store.DependencyLinksAsync(job.Id, dependents: false, ct).GetAwaiter().GetResult(), url);
        AppendLinks(sb, "Needed by", store.DependencyLinksAsync(job.Id, dependents: true, ct).GetAwaiter().GetResult(), url);
        if (job.ScheduleId is { } schedule)
            sb.Append($"<h4>Schedule</h4><p>A run of schedule <code>{H(schedule)}</code> (<code>GET /api/v1/schedules/{H(schedule)}</code>).</p>");
        return sb.ToString();
    }

    private static void AppendLinks(StringBuilder sb, string title, IReadOnlyList<JobStore.DependencyLink> links, UrlHelper url)
    {
        if (links.Count == 0) return;
        sb.Append($"<h4>{H(title)}</h4><table class=\"table table-condensed\"><thead><tr><th>Job</th><th>Condition</th><th>State</th></tr></thead><tbody>");
        foreach (var l in links)
            sb.Append($"<tr><td>{Link(url, l.Job, l.HangfireJobId)}{(l.Name is null ? "" : $" {H(l.Name)}")}</td><td>{H(l.Condition)}</td>" +
                      $"<td>{(l.State is null ? "<em>no longer exists</em>" : StateHtml(l.State, null))}</td></tr>");
        sb.Append("</tbody></table>");
    }

    /// <summary>The job's id, linked to its Hangfire page when it has a message.</summary>
    private static string Link(UrlHelper url, Guid id, string? hangfireJobId) =>
        hangfireJobId is null ? $"<code>{H(id)}</code>" : $"<a href=\"{H(url.JobDetails(hangfireJobId))}\"><code>{H(id)}</code></a>";

    private static string StateHtml(string state, string? reason) =>
        $"<span class=\"label label-{StateStyle(state)}\">{H(state)}</span>" + (reason is null ? "" : $" {H(reason)}");

    public static string StateStyle(string state) => state switch
    {
        JobState.Succeeded => "success",
        JobState.Failed => "danger",
        JobState.Running or JobState.Starting => "primary",
        JobState.Cancelled => "warning",
        JobState.Waiting => "info",
        _ => "default",
    };
}
