using System.Text.Json.Nodes;
using BatchRunner.Cli.Jobs;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Commands;

/// <summary>How a submitted job is watched: not at all (detach), to its end, or with its logs streamed.</summary>
internal enum Watch { Detach, Wait, Follow }

/// <summary>Submitting a job and watching it: what <c>run</c> and <c>submit</c> share.</summary>
internal static class JobSession
{
    public static async Task<JobView> SubmitAsync(CliContext ctx, JsonObject spec, IReadOnlyList<string> inputs, CancellationToken ct)
    {
        JobInputs.Check(inputs);
        using var request = new HttpRequestMessage(HttpMethod.Post, "api/v1/jobs") { Content = JobInputs.Content(spec, inputs) };
        // Inputs can be large: no request timeout while they upload.
        return new JobView(await ctx.Api.SendForJsonAsync(request, ct, timeout: inputs.Count == 0));
    }

    /// <summary>
    /// Watches the job as asked and returns the exit code that stands for it. With <paramref name="cancelOnInterrupt"/>
    /// Ctrl-C cancels the job (run); otherwise it only stops the watching (submit).
    /// </summary>
    public static async Task<int> WatchAsync(CliContext ctx, JobView job, Watch watch, bool cancelOnInterrupt, string? outputDir, CancellationToken ct)
    {
        var term = ctx.Terminal;
        if (watch == Watch.Detach)
        {
            if (term.Json) Terminal.WriteJson(job.Json);
            else Console.Out.WriteLine(job.Id);
            return ExitCodes.Success;
        }

        term.Info($"job {job.Id} submitted" + (job.Name is { } n ? $" ({n})" : ""));
        var watcher = new JobWatcher(ctx.Api, term);
        using var interrupt = new JobInterrupt(ctx.Api, term, job.Id, cancelOnInterrupt);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, interrupt.Abandoned);
        var token = linked.Token;
        try
        {
            job = await watcher.WaitUntilStartedAsync(job, token);
            // An array runs no container itself: its progress stands for its logs (each child has its own: logs ID:INDEX).
            if (job.Array is not null) job = await watcher.FollowArrayAsync(job.Id, token);
            else if (watch == Watch.Follow)
            {
                // With --output json, stdout carries only the final job document; the job's stdout goes to stderr.
                // Not disposed: they are the process's own descriptors.
                var stdout = term.Json ? Console.OpenStandardError() : Console.OpenStandardOutput();
                var stderr = Console.OpenStandardError();
                await watcher.StreamLogsAsync(job.Id, stdout, stderr, token);
            }
            job = await watcher.WaitForFinalAsync(job.Id, token);
        }
        catch (OperationCanceledException) when (interrupt.Abandoned.IsCancellationRequested)
        {
            return ExitCodes.Cancelled;
        }
        watcher.ReportEnd(job);
        if (interrupt.CancelFailure is { } why && job.State != "cancelled")
            term.Info($"the cancel request failed: {why}", "yellow");
        if (outputDir is not null && job.Array is not null)
        {
            var (files, bytes) = await watcher.DownloadChildrenOutputsAsync(job, outputDir, ct);
            term.Info($"downloaded {files} output file(s) of the children, {Units.Bytes(bytes)}, to {outputDir}/INDEX/ (sha256 checked)");
        }
        else if (outputDir is not null && job.Outputs.Count > 0)
        {
            var bytes = await watcher.DownloadOutputsAsync(job, outputDir, ct);
            term.Info($"downloaded {job.Outputs.Count} output file(s), {Units.Bytes(bytes)}, to {outputDir} (sha256 checked)");
        }
        if (term.Json) Terminal.WriteJson(job.Json);
        return ExitCodes.ForJob(job);
    }
}
