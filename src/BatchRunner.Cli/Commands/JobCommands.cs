using System.CommandLine;
using System.Text.Json;
using BatchRunner.Cli.Http;
using BatchRunner.Cli.Jobs;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Commands;

/// <summary><c>status</c>, <c>list</c>, <c>logs</c>, <c>cancel</c>, <c>rerun</c>, <c>delete</c> and <c>outputs</c>: one job at a time, by id.</summary>
internal static class JobCommands
{
    private static Argument<string> JobId() => new("id") { Description = "job id" };

    public static IEnumerable<Command> Create() => [Status(), List(), Logs(), Cancel(), Rerun(), Delete(), Outputs()];

    private static Command Status()
    {
        var id = JobId();
        var command = new Command("status", "Show a job: state, reason, exit code, usage, outputs, attempts") { id };
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
        var state = new Option<string?>("--state") { Description = "only jobs in these states, comma-separated (queued, starting, running, succeeded, failed, cancelled)" };
        var name = new Option<string?>("--name") { Description = "only jobs of this name, or whose name starts so when it ends in * (train-*)" };
        var label = new Option<string[]>("--label", "-l") { Description = "only jobs with this label (K=V; repeat: all must match)", AllowMultipleArgumentsPerToken = false };
        var since = new Option<string?>("--since") { Description = "only jobs created at or after this time (RFC 3339: 2025-01-31T12:00:00Z, or 2025-01-31)" };
        var until = new Option<string?>("--until") { Description = "only jobs created before this time" };
        var queue = new Option<string?>("--queue") { Description = "only jobs of this queue" };
        var limit = new Option<int?>("--limit", "-n") { Description = "at most this many (1-1000) [default: 50]" };
        var cursor = new Option<string?>("--cursor") { Description = "the nextCursor of a previous page" };
        var command = new Command("list", "List jobs, newest first") { state, name, label, since, until, queue, limit, cursor };
        command.Aliases.Add("ls");
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            // The summary view: what the table shows, without the jobs' command lines and outputs.
            var query = new List<string> { "view=summary" };
            if (ctx.Get(state) is { } s) query.Add("state=" + ApiClient.Escape(s));
            if (ctx.Get(name) is { } n) query.Add("name=" + ApiClient.Escape(n));
            foreach (var l in ctx.Get(label) ?? []) query.Add("label=" + ApiClient.Escape(l));
            if (ctx.Get(since) is { } from) query.Add("since=" + ApiClient.Escape(from));
            if (ctx.Get(until) is { } to) query.Add("until=" + ApiClient.Escape(to));
            if (ctx.Get(queue) is { } q) query.Add("queue=" + ApiClient.Escape(q));
            if (ctx.Get(limit) is { } lim) query.Add("limit=" + lim);
            if (ctx.Get(cursor) is { } c) query.Add("cursor=" + ApiClient.Escape(c));
            var page = await ctx.Api.GetJsonAsync("api/v1/jobs?" + string.Join('&', query), ct);
            if (ctx.Terminal.Json)
            {
                Terminal.WriteJson(page);
                return ExitCodes.Success;
            }
            var jobs = page.GetProperty("items").EnumerateArray().Select(j => new JobView(j)).ToList();
            Terminal.WriteTable(["ID", "NAME", "STATE", "REASON", "EXIT", "IMAGE", "CREATED"], jobs.Select(j => (IReadOnlyList<string?>)
            [
                j.Id, j.Name ?? "-", j.State, j.Reason ?? "-", j.ExitCode?.ToString() ?? "-", j.Image,
                j.Json.TryGetProperty("createdAt", out var at) ? at.GetDateTimeOffset().ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss") : "",
            ]));
            if (page.TryGetProperty("nextCursor", out var next) && next.ValueKind == JsonValueKind.String)
                ctx.Terminal.Info($"more: batchrunner list --cursor {next.GetString()}");
            return ExitCodes.Success;
        });
        return command;
    }

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
