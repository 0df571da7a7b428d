using System.CommandLine;
using System.Text.Json;
using BatchRunner.Cli.Http;
using BatchRunner.Cli.Jobs;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Commands;

/// <summary><c>status</c>, <c>list</c>, <c>children</c>, <c>logs</c>, <c>cancel</c>, <c>rerun</c>, <c>delete</c> and
/// <c>outputs</c>: one job at a time, by id (an array's child as <c>PARENT:INDEX</c>).</summary>
internal static class JobCommands
{
    private static Argument<string> JobId() => new("id") { Description = "job id" };

    public static IEnumerable<Command> Create() => [Status(), List(), Children(), Logs(), Cancel(), Rerun(), Delete(), Outputs()];

    private const string States = "waiting, queued, starting, running, succeeded, failed, cancelled";

    private static Command Status()
    {
        var id = JobId();
        var command = new Command("status", "Show a job: state, reason, exit code, usage, outputs, attempts; an array's progress, dependencies (a child: ID:INDEX)") { id };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var job = await new JobWatcher(ctx.Api, ctx.Terminal).GetAsync(ctx.Get(id)!, ct);
            if (ctx.Terminal.Json) Terminal.WriteJson(job.Json);
            else JobText.Write(job);
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command List()
    {
        var state = new Option<string?>("--state") { Description = $"only jobs in these states, comma-separated ({States})" };
        var name = new Option<string?>("--name") { Description = "only jobs of this name, or whose name starts so when it ends in * (train-*)" };
        var label = new Option<string[]>("--label", "-l") { Description = "only jobs with this label (K=V; repeat: all must match)", AllowMultipleArgumentsPerToken = false };
        var since = new Option<string?>("--since") { Description = "only jobs created at or after this time (RFC 3339: 2025-01-31T12:00:00Z, or 2025-01-31)" };
        var until = new Option<string?>("--until") { Description = "only jobs created before this time" };
        var queue = new Option<string?>("--queue") { Description = "only jobs of this queue" };
        var schedule = new Option<string?>("--schedule") { Description = "only the runs of this schedule (its id)" };
        var limit = new Option<int?>("--limit", "-n") { Description = "at most this many (1-1000) [default: 50]" };
        var cursor = new Option<string?>("--cursor") { Description = "the nextCursor of a previous page" };
        var command = new Command("list", "List jobs, newest first (an array's children: batchrunner children ID)") { state, name, label, since, until, queue, schedule, limit, cursor };
        command.Aliases.Add("ls");
        CliContext.SetAction(command, (ctx, ct) =>
        {
            // The summary view: what the table shows, without the jobs' command lines and outputs (an array's counts stay).
            var query = new List<string> { "view=summary" };
            if (ctx.Get(name) is { } n) query.Add("name=" + ApiClient.Escape(n));
            foreach (var l in ctx.Get(label) ?? []) query.Add("label=" + ApiClient.Escape(l));
            if (ctx.Get(since) is { } from) query.Add("since=" + ApiClient.Escape(from));
            if (ctx.Get(until) is { } to) query.Add("until=" + ApiClient.Escape(to));
            if (ctx.Get(queue) is { } q) query.Add("queue=" + ApiClient.Escape(q));
            if (ctx.Get(schedule) is { } sid) query.Add("schedule=" + ApiClient.Escape(sid));
            return ListPageAsync(ctx, "api/v1/jobs", "batchrunner list", Filters(ctx, state, limit, cursor, query), withIndex: false, ct);
        });
        return command;
    }

    private static Command Children()
    {
        var id = JobId();
        var state = new Option<string?>("--state") { Description = $"only children in this state ({States})" };
        var limit = new Option<int?>("--limit", "-n") { Description = "at most this many (1-1000) [default: 50]" };
        var cursor = new Option<string?>("--cursor") { Description = "the nextCursor of a previous page" };
        var command = new Command("children", "List an array's children in index order (one child: batchrunner status ID:INDEX)") { id, state, limit, cursor };
        CliContext.SetAction(command, (ctx, ct) =>
            ListPageAsync(ctx, $"api/v1/jobs/{ApiClient.Escape(ctx.Get(id)!)}/children", $"batchrunner children {ctx.Get(id)}",
                Filters(ctx, state, limit, cursor, []), withIndex: true, ct));
        return command;
    }

    private static List<string> Filters(CliContext ctx, Option<string?> state, Option<int?> limit, Option<string?> cursor, List<string> query)
    {
        if (ctx.Get(state) is { } s) query.Add("state=" + ApiClient.Escape(s));
        if (ctx.Get(limit) is { } l) query.Add("limit=" + l);
        if (ctx.Get(cursor) is { } c) query.Add("cursor=" + ApiClient.Escape(c));
        return query;
    }

    /// <summary>One page of jobs as a table (an array's STATE carries its children's progress), or the API's JSON.</summary>
    private static async Task<int> ListPageAsync(CliContext ctx, string path, string again, List<string> query, bool withIndex, CancellationToken ct)
    {
        var page = await ctx.Api.GetJsonAsync(path + (query.Count > 0 ? "?" + string.Join('&', query) : ""), ct);
        if (ctx.Terminal.Json)
        {
            Terminal.WriteJson(page);
            return ExitCodes.Success;
        }
        var jobs = page.GetProperty("items").EnumerateArray().Select(j => new JobView(j)).ToList();
        IReadOnlyList<string> head = ["ID", "NAME", "STATE", "REASON", "EXIT", "IMAGE", "CREATED"];
        Terminal.WriteTable(withIndex ? ["INDEX", .. head] : head, jobs.Select(j =>
        {
            IReadOnlyList<string?> row =
            [
                j.Id, j.Name ?? "-", StateCell(j), j.Reason ?? "-", j.ExitCode?.ToString() ?? "-", j.Image,
                j.Json.TryGetProperty("createdAt", out var at) ? at.GetDateTimeOffset().ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss") : "",
            ];
            return withIndex ? [j.Json.TryGetProperty("arrayIndex", out var i) ? i.ToString() : "-", .. row] : row;
        }));
        if (page.TryGetProperty("nextCursor", out var next) && next.ValueKind == JsonValueKind.String)
            ctx.Terminal.Info($"more: {again} --cursor {next.GetString()}");
        return ExitCodes.Success;
    }

    /// <summary>"running (4/10 ended)" for an array's parent, else the state.</summary>
    private static string StateCell(JobView job) => job.Array is { } a
        ? $"{job.State} ({a.Counts.Where(c => JobView.FinalStates.Contains(c.Key)).Sum(c => c.Value)}/{a.Size} ended)"
        : job.State;

    private static Command Logs()
    {
        var id = JobId();
        var follow = new Option<bool>("--follow", "-f") { Description = "keep streaming until the job ends" };
        var stream = new Option<string?>("--stream") { Description = "stdout, stderr or combined (interleaved as written) [default: stdout then stderr]" };
        stream.AcceptOnlyFromAmong("stdout", "stderr", "combined");
        var timestamps = new Option<bool>("--timestamps", "-t") { Description = "prefix each line with when it was written (RFC 3339, UTC) [default stream: combined]" };
        var command = new Command("logs", "Print a job's logs (text: --output json does not change them)") { id, follow, stream, timestamps };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var query = new List<string>();
            if ((ctx.Get(stream) ?? (ctx.Get(timestamps) ? "combined" : null)) is { } s) query.Add("stream=" + s);
            if (ctx.Get(timestamps)) query.Add("timestamps=true");
            if (ctx.Get(follow)) query.Add("follow=true");
            using var request = new HttpRequestMessage(HttpMethod.Get, $"api/v1/jobs/{ApiClient.Escape(ctx.Get(id)!)}/logs" + (query.Count > 0 ? "?" + string.Join('&', query) : ""));
            using var response = await ctx.Api.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
            await using var body = await response.Content.ReadAsStreamAsync(ct);
            await LiveCopy.CopyAsync(body, Console.OpenStandardOutput(), ct);
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command Cancel()
    {
        var id = JobId();
        var command = new Command("cancel", "Cancel a job (queued or running); it ends cancelled") { id };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var job = await ctx.Api.PostJsonAsync($"api/v1/jobs/{ApiClient.Escape(ctx.Get(id)!)}/cancel", null, ct);
            if (ctx.Terminal.Json) Terminal.WriteJson(job);
            else ctx.Terminal.Info($"cancelling job {ctx.Get(id)}");
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command Rerun()
    {
        var id = JobId();
        var command = new Command("rerun", "Submit a job that has ended again: same spec, image pinned to the digest it ran, same inputs") { id };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var job = await ctx.Api.PostJsonAsync($"api/v1/jobs/{ApiClient.Escape(ctx.Get(id)!)}/rerun", null, ct);
            if (ctx.Terminal.Json) Terminal.WriteJson(job);
            else Console.Out.WriteLine(job.GetProperty("id").GetString());
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command Delete()
    {
        var id = JobId();
        var command = new Command("delete", "Delete a finished job with its logs, outputs and inputs") { id };
        command.Aliases.Add("rm");
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            await ctx.Api.SendJsonAsync(HttpMethod.Delete, $"api/v1/jobs/{ApiClient.Escape(ctx.Get(id)!)}", null, ct);
            if (ctx.Terminal.Json) Terminal.WriteJson(JsonSerializer.SerializeToElement(new { id = ctx.Get(id), deleted = true }));
            else ctx.Terminal.Info($"deleted job {ctx.Get(id)}");
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command Outputs()
    {
        var id = JobId();
        var download = new Option<string?>("--download") { Description = "download every output file into this directory (sha256 checked)" };
        var command = new Command("outputs", "List the files a job left in /outputs, or download them") { id, download };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var watcher = new JobWatcher(ctx.Api, ctx.Terminal);
            var list = await ctx.Api.GetJsonAsync($"api/v1/jobs/{ApiClient.Escape(ctx.Get(id)!)}/outputs", ct);
            if (ctx.Get(download) is { } dir)
            {
                var job = await watcher.GetAsync(ctx.Get(id)!, ct);
                var bytes = await watcher.DownloadOutputsAsync(job, dir, ct);
                ctx.Terminal.Info($"downloaded {job.Outputs.Count} file(s), {Units.Bytes(bytes)}, to {dir} (sha256 checked)");
            }
            if (ctx.Terminal.Json) Terminal.WriteJson(list);
            else if (ctx.Get(download) is null)
                Terminal.WriteTable(["PATH", "SIZE", "SHA256"], list.EnumerateArray().Select(OutputFile.From)
                    .Select(o => (IReadOnlyList<string?>)[o.Path, Units.Bytes(o.Size), o.Sha256]));
            return ExitCodes.Success;
        });
        return command;
    }
}
