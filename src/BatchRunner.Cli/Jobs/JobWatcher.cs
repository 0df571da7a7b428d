using System.Diagnostics;
using System.Text.Json;
using System.Security.Cryptography;
using BatchRunner.Cli.Http;
using BatchRunner.Cli.Output;
using Spectre.Console;

namespace BatchRunner.Cli.Jobs;

/// <summary>
/// Follows one job from submission to its end, as <c>docker run</c> does: state changes and the image pull's progress
/// on stderr while it starts, then its stdout and stderr live, then how it ended; optionally its outputs downloaded.
/// </summary>
internal sealed class JobWatcher(ApiClient api, Terminal term)
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan PlainProgressInterval = TimeSpan.FromSeconds(2);

    /// <summary>How long one long-polling request waits while a job is queued or waiting (its message may change meanwhile).</summary>
    private static readonly TimeSpan QueuedWait = TimeSpan.FromSeconds(2);

    /// <summary>How long one long-polling request waits for a job's end.</summary>
    private static readonly TimeSpan FinalWait = TimeSpan.FromSeconds(30);

    /// <summary>Whether the server takes <c>GET ?waitSeconds=&amp;whileState=</c>: false once one older than the long poll refused it.</summary>
    private bool _longPoll = true;

    public async Task<JobView> GetAsync(string id, CancellationToken ct) =>
        new(await api.GetJsonAsync($"api/v1/jobs/{ApiClient.Escape(id)}", ct));

    /// <summary>
    /// The job as soon as its state is no longer <paramref name="job"/>'s, or after <paramref name="wait"/>: one request the
    /// server answers at the change (its long poll), so that a state change shows within milliseconds; against a server
    /// without it, the next poll after <see cref="PollInterval"/>.
    /// </summary>
    private async Task<JobView> NextAsync(JobView job, TimeSpan wait, CancellationToken ct)
    {
        if (_longPoll)
        {
            var clock = Stopwatch.StartNew();
            try
            {
                var seconds = wait.TotalSeconds.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture);
                var next = new JobView(await api.GetJsonAsync($"api/v1/jobs/{ApiClient.Escape(job.Id)}?waitSeconds={seconds}&whileState={ApiClient.Escape(job.State)}", ct));
                // An answer without a change that came early (the server stops) is not asked again in a tight loop.
                if (next.State == job.State && clock.Elapsed < PollInterval) await Task.Delay(PollInterval - clock.Elapsed, ct);
                return next;
            }
            catch (CliException e) when (e.Details.Any(d => d.StartsWith("waitSeconds:", StringComparison.Ordinal) || d.StartsWith("whileState:", StringComparison.Ordinal)))
            {
                _longPoll = false;
            }
        }
        await Task.Delay(PollInterval, ct);
        return await GetAsync(job.Id, ct);
    }

    /// <summary>While it starts, the pull's progress is shown every <see cref="PollInterval"/>; while it is queued, its message every few seconds.</summary>
    private static TimeSpan StartWait(JobView job) => job.State == "starting" ? PollInterval : QueuedWait;

    /// <summary>Waits until the job runs or has ended, showing each state change and the pull's bytes.</summary>
    public async Task<JobView> WaitUntilStartedAsync(JobView job, CancellationToken ct)
    {
        if (IsStarted(job)) return job;
        if (!term.Interactive) return await WaitPlainAsync(job, ct);
        var current = job;
        await term.Err.Progress()
            .AutoClear(true)
            .Columns(new SpinnerColumn(), new TaskDescriptionColumn { Alignment = Justify.Left },
                new PullColumn(new ProgressBarColumn()), new PullColumn(new PercentageColumn()), new PullColumn(new DownloadedColumn()))
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(current.State), maxValue: 1);
                task.IsIndeterminate = true;
                string? shown = null;
                while (true)
                {
                    if (current.State != shown)
                    {
                        term.Err.MarkupLine($"{term.StateMarkup(current.State)}{Markup.Escape(StateDetail(current))}");
                        shown = current.State;
                    }
                    if (current.PullProgress is { Total: > 0 } pull)
                    {
                        task.Description = "pulling " + Markup.Escape(current.Image);
                        task.IsIndeterminate = false;
                        task.MaxValue = pull.Total;
                        task.Value = pull.Done;
                    }
                    else task.Description = Markup.Escape(current.State);
                    if (IsStarted(current)) break;
                    current = await NextAsync(current, StartWait(current), ct);
                }
                task.StopTask();
            });
        return current;
    }

    private async Task<JobView> WaitPlainAsync(JobView job, CancellationToken ct)
    {
        string? shown = null;
        (long Done, long Total)? lastPull = null;
        var sincePull = Stopwatch.StartNew();
        while (true)
        {
            if (job.State != shown)
            {
                Console.Error.WriteLine(job.State + StateDetail(job));
                shown = job.State;
            }
            if (job.PullProgress is { Total: > 0 } pull && pull != lastPull
                && (lastPull is null || pull.Done == pull.Total || sincePull.Elapsed >= PlainProgressInterval))
            {
                Console.Error.WriteLine($"pulling {job.Image}: {Units.Bytes(pull.Done)} of {Units.Bytes(pull.Total)} ({100.0 * pull.Done / pull.Total:0}%)");
                lastPull = pull;
                sincePull.Restart();
            }
            if (IsStarted(job)) return job;
            job = await NextAsync(job, StartWait(job), ct);
        }
    }

    private static bool IsStarted(JobView job) => job.State == "running" || job.IsFinal;

    private static string StateDetail(JobView job) => job.State switch
    {
        "running" when job.Node is { } node => $" on node {node}",
        "queued" or "starting" or "waiting" when job.Message is { Length: > 0 } m => $": {m}",
        _ => "",
    };

    /// <summary>
    /// Streams the job's stdout to <paramref name="stdout"/> and its stderr to <paramref name="stderr"/> as they are
    /// written, until the job has ended (the server closes each stream then). A broken stream is reported, not fatal.
    /// </summary>
    public async Task StreamLogsAsync(string id, Stream stdout, Stream stderr, CancellationToken ct)
    {
        await Task.WhenAll(FollowAsync(id, "stdout", stdout, ct), FollowAsync(id, "stderr", stderr, ct));
    }

    private async Task FollowAsync(string id, string stream, Stream target, CancellationToken ct)
    {
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"api/v1/jobs/{ApiClient.Escape(id)}/logs?stream={stream}&follow=true");
            using var response = await api.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
            await using var body = await response.Content.ReadAsStreamAsync(ct);
            await LiveCopy.CopyAsync(body, target, ct);
        }
        catch (Exception e) when (e is HttpRequestException or IOException && !ct.IsCancellationRequested)
        {
            term.Info($"the {stream} log stream of job {id} broke ({e.Message}); `batchrunner logs {id}` shows it all", "yellow");
        }
    }

    /// <summary>An array's progress, one line on stderr each time its children's counts change, until it has ended.</summary>
    public async Task<JobView> FollowArrayAsync(string id, CancellationToken ct)
    {
        string? shown = null;
        while (true)
        {
            var job = await GetAsync(id, ct);
            if (job.Array is { } array)
            {
                var line = ArrayProgress(array.Size, array.Counts);
                if (line != shown) term.Info(line);
                shown = line;
            }
            if (job.IsFinal) return job;
            await Task.Delay(PollInterval, ct);
        }
    }

    /// <summary>"array: 4 of 6 ended (3 succeeded, 1 failed, 0 cancelled); 2 running, 0 queued".</summary>
    internal static string ArrayProgress(int size, IReadOnlyDictionary<string, int> counts)
    {
        int N(string state) => counts.TryGetValue(state, out var n) ? n : 0;
        var ended = N("succeeded") + N("failed") + N("cancelled");
        return $"array: {ended} of {size} ended ({N("succeeded")} succeeded, {N("failed")} failed, {N("cancelled")} cancelled); " +
               $"{N("running") + N("starting")} running, {N("queued") + N("waiting")} queued";
    }

    /// <summary>Downloads each child's outputs of array <paramref name="parent"/> into <c>DIR/INDEX/</c>; returns files and bytes.</summary>
    public async Task<(int Files, long Bytes)> DownloadChildrenOutputsAsync(JobView parent, string dir, CancellationToken ct)
    {
        var files = 0;
        long bytes = 0;
        string? cursor = null;
        do
        {
            var page = await api.GetJsonAsync($"api/v1/jobs/{ApiClient.Escape(parent.Id)}/children?limit=1000" + (cursor is null ? "" : "&cursor=" + ApiClient.Escape(cursor)), ct);
            foreach (var listed in page.GetProperty("items").EnumerateArray().Select(c => new JobView(c)))
            {
                // A listed job carries no outputs (the API lists them only for one job): ask for each child itself.
                var child = await GetAsync(listed.Id, ct);
                if (child.Outputs.Count == 0) continue;
                var index = child.Json.GetProperty("arrayIndex").GetInt32().ToString(System.Globalization.CultureInfo.InvariantCulture);
                bytes += await DownloadOutputsAsync(child, Path.Combine(dir, index), ct);
                files += child.Outputs.Count;
            }
            cursor = page.TryGetProperty("nextCursor", out var next) && next.ValueKind == JsonValueKind.String ? next.GetString() : null;
        } while (cursor is not null);
        return (files, bytes);
    }

    /// <summary>Waits until the job reaches a final state (the server's long poll, one request per change or per <see cref="FinalWait"/>).</summary>
    public async Task<JobView> WaitForFinalAsync(string id, CancellationToken ct)
    {
        var job = await GetAsync(id, ct);
        while (!job.IsFinal) job = await NextAsync(job, FinalWait, ct);
        return job;
    }

    /// <summary>One line on stderr saying how the job ended, with the reason and the server's message when it failed.</summary>
    public void ReportEnd(JobView job)
    {
        var took = job is { StartedAt: { } s, FinishedAt: { } f } ? $" after {Units.Duration(f - s)}" : "";
        var line = job.State switch
        {
            "succeeded" => $"job {job.Id} succeeded{took}",
            "cancelled" => $"job {job.Id} cancelled{took}",
            _ => $"job {job.Id} failed{took}: {job.Reason ?? "unknown reason"}" + (job.ExitCode is { } c ? $" (exit code {c})" : "") + (job.Message is { Length: > 0 } m ? $": {m}" : ""),
        };
        term.Info(line, job.State == "succeeded" ? "green" : job.State == "failed" ? "red" : "grey");
    }

    /// <summary>
    /// Downloads every output file into <paramref name="dir"/> (keeping sub-directories) and checks each against the
    /// size and sha256 the server recorded; a file is renamed into place only once it matched, so a failed download
    /// never leaves a wrong file under its real name.
    /// </summary>
    public async Task<long> DownloadOutputsAsync(JobView job, string dir, CancellationToken ct)
    {
        var root = Path.GetFullPath(dir);
        Directory.CreateDirectory(root);
        long total = 0;
        foreach (var file in job.Outputs)
        {
            var target = Path.GetFullPath(Path.Combine(root, file.Path));
            if (!target.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                throw new CliException($"job {job.Id}: output path \"{file.Path}\" leads outside {dir}; not downloaded");
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            var path = string.Join('/', file.Path.Split('/').Select(ApiClient.Escape));
            using var request = new HttpRequestMessage(HttpMethod.Get, $"api/v1/jobs/{ApiClient.Escape(job.Id)}/outputs/{path}");
            using var response = await api.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
            var partial = target + ".partial";
            string sha;
            long size;
            await using (var body = await response.Content.ReadAsStreamAsync(ct))
            await using (var output = new FileStream(partial, FileMode.Create, FileAccess.Write))
            using (var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
            {
                var buffer = new byte[64 * 1024];
                int n;
                while ((n = await body.ReadAsync(buffer, ct)) > 0)
                {
                    hash.AppendData(buffer, 0, n);
                    await output.WriteAsync(buffer.AsMemory(0, n), ct);
                }
                sha = Convert.ToHexStringLower(hash.GetHashAndReset());
                size = output.Length;
            }
            if (size != file.Size || !string.Equals(sha, file.Sha256, StringComparison.OrdinalIgnoreCase))
            {
                File.Delete(partial);
                throw new CliException($"job {job.Id}: output {file.Path} arrived as {size} bytes with sha256 {sha}, but the server recorded {file.Size} bytes, sha256 {file.Sha256}; not kept");
            }
            File.Move(partial, target, overwrite: true);
            total += size;
        }
        return total;
    }
}
