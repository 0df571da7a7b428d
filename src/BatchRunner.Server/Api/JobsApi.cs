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
        api.MapGet("/{id}/children", ChildrenAsync).WithName("ListJobChildren");
        api.MapPost("/{id}/cancel", CancelAsync).WithName("CancelJob");
        api.MapGet("/{id}/logs", LogsAsync).WithName("GetJobLogs");
        api.MapGet("/{id}/outputs", ListOutputsAsync).WithName("ListJobOutputs");
        api.MapGet("/{id}/outputs/{**path}", GetOutputAsync).WithName("GetJobOutput");
        return api;
    }

    public const string IdempotencyKeyHeader = "Idempotency-Key";

    public static async Task<Results<Created<JobDto>, Ok<JobDto>, ValidationProblem, ProblemHttpResult>> SubmitAsync(
        HttpRequest request, JobStore store, LiveNodes liveNodes, JobQueue queue, IOptions<BatchRunnerOptions> options, CancellationToken ct)
    {
        // JSON, or multipart with a spec part and input files (staged, not yet the job's); node policy checked.
        var read = await JobSubmissionReader.ReadAsync(request, ct);
        if (read.Invalid is { } invalid) return invalid;
        if (read.Problem is { } problem) return problem;

        string? idempotencyKey = request.Headers[IdempotencyKeyHeader].FirstOrDefault();
        var headerErrors = new Dictionary<string, string[]>();
        if (idempotencyKey is not null && (idempotencyKey.Length is 0 or > 255))
            headerErrors[IdempotencyKeyHeader] = ["the Idempotency-Key header must be 1-255 characters"];
        var (spec, refused) = await JobSpecChecks.CheckAsync(read.Submission, "", options.Value, liveNodes, store, headerErrors, ct);
        if (refused is not null) return refused;

        var job = JobRecord.New(spec!);
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
        // Inputs are in the job's directory before any worker can pick the job up.
        JobSubmissionReader.CommitInputs(request, job.Id);
        // Enqueued; or Awaiting while it waits for dependencies; or, for an array, the parent's message (its children get
        // theirs from the dispatcher, within its parallelism).
        var hangfireId = await queue.CreateForAsync(job, CancellationToken.None);
        BatchRunnerMetrics.JobsSubmitted.WithLabels(spec!.Queue).Inc();
        var dto = JobDto.From(job with { HangfireJobId = hangfireId });
        if (job.IsArrayParent) dto = dto.WithChildCounts(new Dictionary<Guid, IReadOnlyDictionary<string, int>> { [job.Id] = new Dictionary<string, int> { [JobState.Queued] = spec.Array!.Size } });
        return TypedResults.Created($"/api/v1/jobs/{job.Id}", dto);
    }

    public static async Task<Results<Ok<JobListDto>, ValidationProblem>> ListAsync(
        JobStore store, JobNodeLiveness liveness, string? state, int? limit, string? cursor, string? schedule, CancellationToken ct)
    {
        var errors = new Dictionary<string, string[]>();
        if (state is not null && !JobState.IsKnown(state))
            errors["state"] = [$"unknown state \"{state}\"; one of {string.Join(", ", JobState.All)}"];
        if (limit is < 1 or > MaxPageSize)
            errors["limit"] = [$"limit must be between 1 and {MaxPageSize}"];
        if (cursor is not null && !JobStore.TryValidateCursor(cursor))
            errors["cursor"] = ["invalid cursor: pass the nextCursor of a previous page"];
        Guid? scheduleId = null;
        if (schedule is not null)
        {
            if (Guid.TryParse(schedule, out var sid)) scheduleId = sid;
            else errors["schedule"] = [$"\"{schedule}\" is not a schedule id"];
        }
        if (errors.Count > 0) return TypedResults.ValidationProblem(errors);

        var (items, next) = await store.ListAsync(state, limit ?? DefaultPageSize, cursor, ct, scheduleId);
        return TypedResults.Ok(new JobListDto(await DtosAsync(items, store, liveness, ct), next));
    }

    /// <summary>Jobs as the API shows them, with nodeAlive and (for arrays) children per state: two queries for the page.</summary>
    private static async Task<IReadOnlyList<JobDto>> DtosAsync(IReadOnlyList<JobRecord> items, JobStore store, JobNodeLiveness liveness, CancellationToken ct)
    {
        var alive = await liveness.GetAsync(items.Select(j => j.Id).ToList(), ct);
        var parents = items.Where(j => j.IsArrayParent).Select(j => j.Id).ToList();
        var counts = await store.CountChildrenAsync(parents, ct);
        return items.Select(j => JobDto.From(j).WithNodeAlive(alive).WithChildCounts(counts)).ToList();
    }

    public static async Task<Results<Ok<JobDto>, ProblemHttpResult>> GetAsync(string id, JobStore store, JobNodeLiveness liveness, CancellationToken ct)
    {
        var job = await FindAsync(id, store, ct);
        if (job is null) return NotFound(id);
        var dto = (await DtosAsync([job], store, liveness, ct))[0];
        return TypedResults.Ok(dto.WithAttempts(await store.GetAttemptsAsync(job.Id, ct)));
    }

    /// <summary>An array's children in index order: <c>?state=</c> filters, <c>nextCursor</c> pages.</summary>
    public static async Task<Results<Ok<JobListDto>, ValidationProblem, ProblemHttpResult>> ChildrenAsync(
        string id, JobStore store, JobNodeLiveness liveness, string? state, int? limit, string? cursor, CancellationToken ct)
    {
        var errors = new Dictionary<string, string[]>();
        if (state is not null && !JobState.IsKnown(state))
            errors["state"] = [$"unknown state \"{state}\"; one of {string.Join(", ", JobState.All)}"];
        if (limit is < 1 or > MaxPageSize)
            errors["limit"] = [$"limit must be between 1 and {MaxPageSize}"];
        var after = -1;
        if (cursor is not null && !TryDecodeIndexCursor(cursor, out after))
            errors["cursor"] = ["invalid cursor: pass the nextCursor of a previous page"];
        if (errors.Count > 0) return TypedResults.ValidationProblem(errors);
        var parent = await FindAsync(id, store, ct);
        if (parent is null) return NotFound(id);
        if (!parent.IsArrayParent)
            return TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Not an array", detail: $"job {id} is not an array: it has no children");
        var (items, next) = await store.ListChildrenAsync(parent.Id, state, limit ?? DefaultPageSize, after, ct);
        return TypedResults.Ok(new JobListDto(await DtosAsync(items, store, liveness, ct), next is { } n ? EncodeIndexCursor(n) : null));
    }

    private static string EncodeIndexCursor(int index) =>
        Convert.ToBase64String(System.Text.Encoding.ASCII.GetBytes($"i:{index}")).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    private static bool TryDecodeIndexCursor(string cursor, out int index)
    {
        index = -1;
        var s = cursor.Replace('-', '+').Replace('_', '/');
        s = s.PadRight(s.Length + (4 - s.Length % 4) % 4, '=');
        try
        {
            var text = System.Text.Encoding.ASCII.GetString(Convert.FromBase64String(s));
            return text.StartsWith("i:", StringComparison.Ordinal) && int.TryParse(text.AsSpan(2), System.Globalization.CultureInfo.InvariantCulture, out index) && index >= 0;
        }
        catch (FormatException) { return false; }
    }

    public static async Task<Results<Accepted<JobDto>, ProblemHttpResult>> CancelAsync(
        string id, JobStore store, JobNodeLiveness liveness, JobQueue queue, CancellationToken ct)
    {
        var target = await FindAsync(id, store, ct);
        if (target is null) return NotFound(id);
        // An array's parent takes its children with it; queued ones leave their queue, running ones are killed within a second.
        var outcome = await queue.CancelAsync(target.Id, ct);
        switch (outcome.Result)
        {
            case JobStore.CancelResult.NotFound:
                return NotFound(id);
            case JobStore.CancelResult.AlreadyFinal:
                var final = await store.GetAsync(target.Id, ct);
                return TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "The job has already ended",
                    detail: $"job {id} is {final?.State}; only waiting, queued, starting or running jobs can be cancelled");
        }
        foreach (var (queueName, count) in outcome.CancelledNow)
            BatchRunnerMetrics.JobsFinished.WithLabels(queueName, JobState.Cancelled, FailureReason.Cancelled).Inc(count);
        var job = await store.GetAsync(target.Id, ct);
        return TypedResults.Accepted($"/api/v1/jobs/{target.Id}", (await DtosAsync([job!], store, liveness, ct))[0]);
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
        var full = Path.Combine(paths.Outputs(job.Id), file.Path);
        if (!OutputScanner.IsRegularFile(full))
            return TypedResults.Problem(statusCode: 404, title: "No such output", detail: $"output \"{path}\" of job {id} is no longer on node {job.Node}");
        return TypedResults.PhysicalFile(full, "application/octet-stream", Path.GetFileName(file.Path), enableRangeProcessing: true);
    }

    public static Task<IResult> LogsAsync(
        string id, string? stream, bool? follow, HttpContext http, JobStore store, DataPaths paths, NodeIdentity node, CancellationToken ct) =>
        ServeLogsAsync(id, stream, follow, http.Request.QueryString.Value ?? "", store, paths, node, ct);

    /// <summary>The job's log files: from this node's data directory, or (with <paramref name="forwardFrom"/>)
    /// forwarded, query included, to the node that ran the job.</summary>
    internal static async Task<IResult> ServeLogsAsync(
        string id, string? stream, bool? follow, string query, JobStore store, DataPaths paths, NodeIdentity? forwardFrom, CancellationToken ct)
    {
        if (stream is not (null or "stdout" or "stderr" or "all"))
            return TypedResults.ValidationProblem(new Dictionary<string, string[]> { ["stream"] = ["stream must be stdout or stderr (omit it for both)"] });
        var job = await FindAsync(id, store, ct);
        if (job is null) return NotFound(id);
        if (forwardFrom is not null && NodeFilesApi.RanElsewhere(job, forwardFrom))
            return new ForwardToNodeResult(job.Node!, $"{NodeFilesApi.Prefix}/{job.Id}/logs{query}");
        var files = new List<string>();
        if (stream is null or "all" or "stdout") files.Add(paths.Stdout(job.Id));
        if (stream is null or "all" or "stderr") files.Add(paths.Stderr(job.Id));
        return new LogStreamResult(job.Id, files, follow == true, store);
    }

    /// <summary>A job by its id, or an array's child as <c>PARENT-ID:INDEX</c>.</summary>
    private static async Task<JobRecord?> FindAsync(string id, JobStore store, CancellationToken ct)
    {
        if (Guid.TryParse(id, out var jobId)) return await store.GetAsync(jobId, ct);
        var colon = id.LastIndexOf(':');
        return colon > 0 && Guid.TryParse(id.AsSpan(0, colon), out var parent)
               && int.TryParse(id.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var index)
            ? await store.GetChildAsync(parent, index, ct)
            : null;
    }

    private static ProblemHttpResult NotFound(string id) =>
        TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Job not found", detail: $"no job with id \"{id}\"");
}
