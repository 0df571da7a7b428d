using System.Text.Json;
using System.Text.Json.Serialization;
using BatchRunner.Core;
using BatchRunner.Oci;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Api;

/// <summary>HTTP API v1 for jobs. A public contract: extend it, never rename or remove paths or fields.</summary>
public static class JobsApi
{
    public const int DefaultPageSize = 50;
    public const int MaxPageSize = 1000;

    public static RouteGroupBuilder MapJobsApiV1(this IEndpointRouteBuilder app)
    {
        var api = app.MapGroup("/api/v1/jobs").WithTags("Jobs").RequireApiKey();
        api.MapPost("/", SubmitAsync).WithName("SubmitJob").Accepts<JobSubmission>("application/json", "multipart/form-data");
        api.MapGet("/", ListAsync).WithName("ListJobs");
        api.MapGet("/{id}", GetAsync).WithName("GetJob");
        api.MapPost("/{id}/cancel", CancelAsync).WithName("CancelJob");
        api.MapDelete("/{id}", DeleteAsync).WithName("DeleteJob");
        api.MapGet("/{id}/logs", LogsAsync).WithName("GetJobLogs");
        api.MapGet("/{id}/outputs", ListOutputsAsync).WithName("ListJobOutputs");
        api.MapGet("/{id}/outputs/{**path}", GetOutputAsync).WithName("GetJobOutput");
        return api;
    }

    public const string IdempotencyKeyHeader = "Idempotency-Key";

    public static async Task<Results<Created<JobDto>, Ok<JobDto>, ValidationProblem, ProblemHttpResult>> SubmitAsync(
        HttpRequest request, JobStore store, LiveNodes liveNodes, JobQueue queue, NodeIdentity node, NodeAddress address,
        IOptions<BatchRunnerOptions> options, CancellationToken ct)
    {
        // JSON, or multipart with a spec part and input files (staged, not yet the job's).
        var read = await JobSubmissionReader.ReadAsync(request, ct);
        if (read.Invalid is { } invalid) return invalid;
        if (read.Problem is { } problem) return problem;
        JobSubmission? submission = read.Submission;

        var result = JobSpecValidator.Validate(submission);
        var errors = result.Errors.ToDictionary(e => e.Key, e => e.Value);
        if (!string.IsNullOrWhiteSpace(submission?.Image) && !ImageReference.TryParse(submission.Image, out _, out var refError))
            errors["image"] = [refError ?? "invalid image reference"];
        if (result.Spec?.Logs.MaxBytes is { } logCap && logCap > options.Value.MaxLogBytesValue())
            errors["logs.maxBytes"] = [$"logs.maxBytes ({Quantity.FormatBytes(logCap)}) must not exceed this node's MaxLogBytes ({Quantity.FormatBytes(options.Value.MaxLogBytesValue())})"];
        var queueName = submission?.Queue ?? JobDefaults.Queue;
        if (!errors.ContainsKey("queue") && !options.Value.Queues.Contains(queueName))
            errors["queue"] = [$"unknown queue \"{queueName}\"; configured queues: {string.Join(", ", options.Value.Queues)}"];
        string? idempotencyKey = request.Headers[IdempotencyKeyHeader].FirstOrDefault();
        if (idempotencyKey is not null && (idempotencyKey.Length is 0 or > 255))
            errors[IdempotencyKeyHeader] = ["the Idempotency-Key header must be 1-255 characters"];
        if (errors.Count > 0)
            return TypedResults.ValidationProblem(errors, title: "The job spec is invalid");

        var (spec, diskError) = DiskRequests.Settle(result.Spec!, options.Value.Disk);
        if (diskError is not null)
            return TypedResults.ValidationProblem(new Dictionary<string, string[]> { ["resources.disk"] = [diskError] }, title: "The job spec is invalid");
        // A job that no live node could ever run is refused now rather than queued forever.
        var misfit = await liveNodes.WhyNoNodeFitsAsync(spec, ct);
        if (misfit.Count > 0)
            return TypedResults.ValidationProblem(misfit, title: "No live node can run this job");
        // The inputs travel with the job: a tar kept here under its digest, which the job's record names and the
        // node that runs the job fetches. Held until the record names it, so that no removal slips in between.
        using var inputs = await JobSubmissionReader.PackInputsAsync(request, ct);
        var job = new JobRecord
        {
            Id = Guid.CreateVersion7(),
            Name = spec.Name,
            Image = spec.Image,
            Queue = spec.Queue,
            Spec = spec,
            State = JobState.Queued,
            CreatedAt = DateTimeOffset.UtcNow,
            Inputs = inputs is null ? null : new JobInputs(inputs.Digest, inputs.Bytes, node.Name, address.Url),
        };
        var requestHash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(JsonSerializer.SerializeToUtf8Bytes(spec, JobStore.Json)));
        var (id, created, sameRequest) = await store.InsertAsync(job, idempotencyKey, requestHash, ct);
        if (!created)
        {
            if (!sameRequest)
                return TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "Idempotency-Key reused",
                    detail: $"the Idempotency-Key \"{idempotencyKey}\" was used for a different job spec (job {id})");
            var existing = await store.GetAsync(id, ct);
            return TypedResults.Ok(JobDto.From(existing!));
        }
        // The job exists from the commit on: an outage now must not become a 503 for a job that will run anyway.
        var hangfireId = await queue.EnqueueAcceptedAsync(job.Id, job.Name ?? job.Image, spec.Queue, EnqueueDeadline);
        BatchRunnerMetrics.JobsSubmitted.WithLabels(spec.Queue).Inc();
        return TypedResults.Created($"/api/v1/jobs/{job.Id}", JobDto.From(job with { HangfireJobId = hangfireId }));
    }

    /// <summary>How long a submission waits for the database to come back to enqueue a job it has already recorded.</summary>
    private static readonly TimeSpan EnqueueDeadline = TimeSpan.FromSeconds(20);

    public static async Task<Results<Ok<JobListDto>, ValidationProblem>> ListAsync(
        JobStore store, JobNodeLiveness liveness, string? state, int? limit, string? cursor, CancellationToken ct)
    {
        var errors = new Dictionary<string, string[]>();
        if (state is not null && !JobState.IsKnown(state))
            errors["state"] = [$"unknown state \"{state}\"; one of {string.Join(", ", JobState.All)}"];
        if (limit is < 1 or > MaxPageSize)
            errors["limit"] = [$"limit must be between 1 and {MaxPageSize}"];
        if (cursor is not null && !JobStore.TryValidateCursor(cursor))
            errors["cursor"] = ["invalid cursor: pass the nextCursor of a previous page"];
        if (errors.Count > 0) return TypedResults.ValidationProblem(errors);

        var (items, next) = await store.ListAsync(state, limit ?? DefaultPageSize, cursor, ct);
        var alive = await liveness.GetAsync(items.Select(j => j.Id).ToList(), ct);
        return TypedResults.Ok(new JobListDto(items.Select(j => JobDto.From(j).WithNodeAlive(alive)).ToList(), next));
    }

    public static async Task<Results<Ok<JobDto>, ProblemHttpResult>> GetAsync(string id, JobStore store, JobNodeLiveness liveness, CancellationToken ct)
    {
        var job = await FindAsync(id, store, ct);
        if (job is null) return NotFound(id);
        return TypedResults.Ok(JobDto.From(job).WithAttempts(await store.GetAttemptsAsync(job.Id, ct)).WithNodeAlive(await liveness.GetAsync([job.Id], ct)));
    }

    public static async Task<Results<Accepted<JobDto>, ProblemHttpResult>> CancelAsync(
        string id, JobStore store, JobNodeLiveness liveness, JobQueue queue, CancellationToken ct)
    {
        if (!Guid.TryParse(id, out var jobId)) return NotFound(id);
        var (result, hangfireId) = await store.RequestCancelAsync(jobId, ct);
        switch (result)
        {
            case JobStore.CancelResult.NotFound:
                return NotFound(id);
            case JobStore.CancelResult.AlreadyFinal:
                var final = await store.GetAsync(jobId, ct);
                return TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "The job has already ended",
                    detail: $"job {id} is {final?.State}; only queued, starting or running jobs can be cancelled");
        }
        // Deleting the Hangfire job removes a queued one from its queue, and fires the cancellation
        // token of a running one on whichever worker runs it (checked every CancellationCheckInterval).
        if (hangfireId is not null) queue.Delete(hangfireId);
        if (result == JobStore.CancelResult.CancelledWhileQueued)
        {
            var q = (await store.GetAsync(jobId, ct))!;
            BatchRunnerMetrics.JobsFinished.WithLabels(q.Queue, JobState.Cancelled, FailureReason.Cancelled).Inc();
        }
        var job = await store.GetAsync(jobId, ct);
        return TypedResults.Accepted($"/api/v1/jobs/{id}", JobDto.From(job!).WithNodeAlive(await liveness.GetAsync([jobId], ct)));
    }

    /// <summary>
    /// Deletes a finished job: its record (attempts, outputs, idempotency keys), its Hangfire message, and its files
    /// (logs, outputs, inputs) on every node that holds some. The record goes first, in the same transaction that
    /// records which nodes owe a removal; this node removes its own files at once and asks the others to remove
    /// theirs. A node that cannot be reached removes them when it next sweeps (at start, then every
    /// Retention:SweepSeconds), so 204 means the job is gone and its files are going.
    /// </summary>
    public static async Task<Results<NoContent, ProblemHttpResult>> DeleteAsync(
        string id, JobStore store, JobQueue queue, JobFiles files, NodeIdentity node, NodeClient nodes, ILogger<NodeClient> log, CancellationToken ct)
    {
        if (!Guid.TryParse(id, out var jobId)) return NotFound(id);
        var (result, deleted) = await store.DeleteFinishedAsync(jobId, ct);
        switch (result)
        {
            case JobStore.DeleteResult.NotFound:
                return NotFound(id);
            case JobStore.DeleteResult.NotFinished:
                var state = await store.GetStateAsync(jobId, ct);
                return TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "The job has not ended",
                    detail: $"job {id} is {state ?? "being deleted"}; only succeeded, failed or cancelled jobs can be deleted (cancel it first)");
        }
        if (deleted!.HangfireJobId is { } hf) await queue.PurgeAsync(hf, CancellationToken.None);
        foreach (var holder in deleted.Nodes)
        {
            if (holder == node.Name) await files.RemoveOwedAsync(jobId, CancellationToken.None);
            else await NodeFilesApi.ForwardRemovalAsync(nodes, holder, deleted.InputsNode == holder ? deleted.InputsUrl : null, jobId, log);
        }
        return TypedResults.NoContent();
    }

    public static async Task<Results<Ok<IReadOnlyList<OutputDto>>, ProblemHttpResult>> ListOutputsAsync(string id, JobStore store, CancellationToken ct)
    {
        var job = await FindAsync(id, store, ct);
        if (job is null) return NotFound(id);
        return TypedResults.Ok<IReadOnlyList<OutputDto>>(job.Outputs.Select(o => new OutputDto(o.Path, o.Size, o.Sha256)).ToList());
    }

    public static Task<IResult> GetOutputAsync(string id, string path, JobStore store, DataPaths paths, NodeIdentity node, CancellationToken ct) =>
        ServeOutputAsync(id, path, store, paths, node, ct);

    /// <summary>An output file of the job: from this node's data directory, or (with <paramref name="forwardFrom"/>,
    /// the public API) forwarded to the node that ran the job. The node endpoint passes null: it never forwards.</summary>
    internal static async Task<IResult> ServeOutputAsync(string id, string path, JobStore store, DataPaths paths, NodeIdentity? forwardFrom, CancellationToken ct)
    {
        var job = await FindAsync(id, store, ct);
        if (job is null) return NotFound(id);
        if (forwardFrom is not null && NodeFilesApi.RanElsewhere(job, forwardFrom))
            return new ForwardToNodeResult(job.Node!, $"{NodeFilesApi.Prefix}/{job.Id}/outputs/{Uri.EscapeDataString(path).Replace("%2F", "/")}");
        // Only files recorded when the job ended are served; they were regular files, never symlinks.
        var file = job.Outputs.FirstOrDefault(o => o.Path == path);
        if (file is null)
            return TypedResults.Problem(statusCode: 404, title: "No such output",
                detail: $"job {id} has no output file \"{path}\"" + (JobState.IsFinal(job.State) ? "" : " (outputs are listed when the job ends)"));
        // Opened by the kernel beneath the outputs directory without following any link, not by path after a check:
        // a symlink planted there since the listing (or a directory swapped for one) is refused, never followed.
        var stream = OutputScanner.OpenOutput(paths.Outputs(job.Id), file.Path);
        if (stream is null)
            return TypedResults.Problem(statusCode: 404, title: "No such output", detail: $"output \"{path}\" of job {id} is no longer on node {job.Node} as the regular file it was");
        return TypedResults.File(stream, "application/octet-stream", Path.GetFileName(file.Path),
            lastModified: File.GetLastWriteTimeUtc(stream.SafeFileHandle), enableRangeProcessing: true);
    }

    public static Task<IResult> LogsAsync(
        string id, string? stream, bool? follow, bool? timestamps, bool? status, HttpContext http, JobStore store, DataPaths paths, NodeIdentity node, CancellationToken ct) =>
        ServeLogsAsync(id, stream, follow, timestamps, status, http.Request.QueryString.Value ?? "", store, paths, node, ct);

    private static readonly TimeSpan PlacementPollInterval = TimeSpan.FromMilliseconds(200);

    /// <summary>The job's logs: from this node's data directory, or (with <paramref name="forwardFrom"/>)
    /// forwarded, query included, to the node that ran the job.</summary>
    internal static async Task<IResult> ServeLogsAsync(
        string id, string? stream, bool? follow, bool? timestamps, bool? status, string query, JobStore store, DataPaths paths, NodeIdentity? forwardFrom, CancellationToken ct)
    {
        if (stream is not (null or "all" or "stdout" or "stderr" or "combined"))
            return TypedResults.ValidationProblem(new Dictionary<string, string[]> { ["stream"] = ["stream must be stdout, stderr or combined (omit it for stdout then stderr)"] });
        if (timestamps == true && stream is null or "all")
            return TypedResults.ValidationProblem(new Dictionary<string, string[]> { ["timestamps"] = ["timestamps need stream=stdout, stderr or combined"] });
        var job = await FindAsync(id, store, ct);
        if (job is null) return NotFound(id);
        // A follower of a job no node has taken yet waits until one has: its logs will be there, not here.
        while (follow == true && forwardFrom is not null && job is { Node: null } && !JobState.IsFinal(job.State))
        {
            await Task.Delay(PlacementPollInterval, ct);
            job = await store.GetAsync(job.Id, ct);
            if (job is null) return NotFound(id);
        }
        if (forwardFrom is not null && NodeFilesApi.RanElsewhere(job, forwardFrom))
            return new ForwardToNodeResult(job.Node!, $"{NodeFilesApi.Prefix}/{job.Id}/logs{query}");
        var streams = new List<(string, string)>();
        if (stream is null or "all" or "stdout" or "combined") streams.Add(("stdout", paths.Stdout(job.Id)));
        if (stream is null or "all" or "stderr" or "combined") streams.Add(("stderr", paths.Stderr(job.Id)));
        var ordered = stream == "combined" || timestamps == true;
        return new LogStreamResult(job, new LogRequest(streams, ordered, follow == true, timestamps == true, status == true), store);
    }

    private static async Task<JobRecord?> FindAsync(string id, JobStore store, CancellationToken ct) =>
        Guid.TryParse(id, out var jobId) ? await store.GetAsync(jobId, ct) : null;

    private static ProblemHttpResult NotFound(string id) =>
        TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Job not found", detail: $"no job with id \"{id}\"");
}
