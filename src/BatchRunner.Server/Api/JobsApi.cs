using System.Text.Json;
using System.Text.Json.Serialization;
using BatchRunner.Core;
using BatchRunner.Oci;
using BatchRunner.Server.Auth;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Notifications;
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
        // Every endpoint declares who may call it; jobs are then looked up within the caller's tenant only.
        var api = app.MapGroup("/api/v1/jobs").WithTags("Jobs");
        api.MapPost("/", SubmitAsync).WithName("SubmitJob").Accepts<JobSubmission>("application/json", "multipart/form-data")
            .RequireAuthorization(Policies.Submit);
        api.MapGet("/", ListAsync).WithName("ListJobs").RequireAuthorization(Policies.Read);
        api.MapGet("/{id}", GetAsync).WithName("GetJob").RequireAuthorization(Policies.Read);
        api.MapGet("/{id}/children", ChildrenAsync).WithName("ListJobChildren").RequireAuthorization(Policies.Read);
        api.MapPost("/{id}/cancel", CancelAsync).WithName("CancelJob").RequireAuthorization(Policies.Submit);
        api.MapPost("/{id}/rerun", JobRerun.RerunAsync).WithName("RerunJob").RequireAuthorization(Policies.Submit);
        api.MapDelete("/{id}", DeleteAsync).WithName("DeleteJob").RequireAuthorization(Policies.Submit);
        api.MapGet("/{id}/logs", LogsAsync).WithName("GetJobLogs").RequireAuthorization(Policies.Read);
        api.MapGet("/{id}/outputs", ListOutputsAsync).WithName("ListJobOutputs").RequireAuthorization(Policies.Read);
        api.MapGet("/{id}/outputs/{**path}", GetOutputAsync).WithName("GetJobOutput").RequireAuthorization(Policies.Read);
        api.MapGet("/{id}/" + OutputArchiveResult.ZipName, (string id, HttpContext http, JobStore store, DataPaths paths, NodeIdentity node, CancellationToken ct) =>
                ServeOutputArchiveAsync(id, OutputArchiveResult.Format.Zip, Caller.Of(http).Scope, store, paths, node, ct))
            .WithName("GetJobOutputsZip").RequireAuthorization(Policies.Read);
        api.MapGet("/{id}/" + OutputArchiveResult.TarGzName, (string id, HttpContext http, JobStore store, DataPaths paths, NodeIdentity node, CancellationToken ct) =>
                ServeOutputArchiveAsync(id, OutputArchiveResult.Format.TarGz, Caller.Of(http).Scope, store, paths, node, ct))
            .WithName("GetJobOutputsTarGz").RequireAuthorization(Policies.Read);
        return api;
    }

    public const string IdempotencyKeyHeader = "Idempotency-Key";

    public static async Task<Results<Created<JobDto>, Ok<JobDto>, ValidationProblem, ProblemHttpResult>> SubmitAsync(
        HttpRequest request, JobStore store, JobSecretStore secrets, JobDocuments documents, LiveNodes liveNodes, JobQueue queue,
        WebhookPolicy webhooks, NodeIdentity node, NodeAddress address, IOptions<BatchRunnerOptions> options, CancellationToken ct)
    {
        var caller = Caller.Of(request.HttpContext);
        // JSON, or multipart with a spec part and input files (staged, not yet the job's).
        var read = await JobSubmissionReader.ReadAsync(request, ct);
        if (read.Invalid is { } invalid) return invalid;
        if (read.Problem is { } problem) return problem;

        string? idempotencyKey = request.Headers[IdempotencyKeyHeader].FirstOrDefault();
        var headerErrors = new Dictionary<string, string[]>();
        if (idempotencyKey is not null && (idempotencyKey.Length is 0 or > 255))
            headerErrors[IdempotencyKeyHeader] = ["the Idempotency-Key header must be 1-255 characters"];
        // Every error at once: the document's shape, the spec's meaning, this node's hardware, the server's settings, the
        // live nodes' policies, and the jobs it names (within the caller's tenant).
        var (spec, refused) = await JobSpecChecks.CheckAsync(read.Submission, read.FieldErrors, "", caller.Tenant, options.Value, liveNodes, store, webhooks, headerErrors, ct);
        if (refused is not null) return refused;
        var jobSecrets = new JobSecrets(spec!.SecretEnv, spec.Notify?.Secret);
        // The inputs travel with the job: a tar kept here under its digest, which the job's record names and the
        // node that runs the job fetches. Held until the record names it, so that no removal slips in between.
        using var packed = await JobSubmissionReader.PackInputsAsync(request, ct);
        var inputsTar = packed is null ? null : new InputsTar(packed.Digest, packed.Bytes, node.Name, address.Url);
        var job = NewJob(spec, await JobSubmissionReader.StagedInputsAsync(request, ct), inputsTar, caller, jobSecrets.IsEmpty ? null : secrets.Protect(jobSecrets));
        // The stored spec (secret names included, secret values never) identifies the request; the secret values
        // are compared by decrypting the first job's, so no hash of a secret is ever stored.
        // Only a request with an Idempotency-Key is ever compared.
        var requestHash = idempotencyKey is null ? "" : Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(JsonSerializer.SerializeToUtf8Bytes(spec, JobStore.Json)));
        var (id, created, sameRequest, queuedLimit) = await store.InsertAsync(job, idempotencyKey, requestHash, ct);
        if (queuedLimit is { } limit)
            return TenantQuotaProblems.QueuedJobs(request.HttpContext.Response, caller.Tenant, limit);
        if (!created)
        {
            if (sameRequest && !jobSecrets.SameAs(await secrets.GetAsync(id, ct))) sameRequest = false;
            if (!sameRequest)
                return TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "Idempotency-Key reused",
                    detail: $"the Idempotency-Key \"{idempotencyKey}\" was used for a different job spec (job {id})");
            return TypedResults.Ok((await documents.GetAsync(id, caller.Tenant, ct))!);
        }
        return await EnqueueAsync(job, queue);
    }

    /// <summary>A new job of <paramref name="spec"/> (queued, or waiting when it has dependencies: <see cref="JobRecord.New"/>),
    /// given <paramref name="inputs"/> (packed in <paramref name="inputsTar"/>; an array's children share it), owned by the
    /// tenant of <paramref name="caller"/>, with its secrets already encrypted (<paramref name="protectedSecrets"/>).</summary>
    internal static JobRecord NewJob(JobSpec spec, IReadOnlyList<OutputFile> inputs, InputsTar? inputsTar, Caller caller, byte[]? protectedSecrets, Guid? rerunOf = null) => JobRecord.New(spec) with
    {
        Inputs = inputs,
        InputsTar = inputsTar,
        RerunOf = rerunOf,
        Tenant = caller.Tenant,
        SubmittedBy = caller.KeyId,
        ProtectedSecrets = protectedSecrets,
    };

    /// <summary>Gives a stored job (its inputs tar named by its record) its first Hangfire message and answers 201 with it:
    /// Enqueued; or Awaiting while it waits for dependencies; or, for an array, the parent's message (its children get
    /// theirs from the dispatcher, within its parallelism).</summary>
    internal static async Task<Created<JobDto>> EnqueueAsync(JobRecord job, JobQueue queue)
    {
        // The job exists from the commit on: an outage now must not become a 503 for a job that will run anyway.
        var hangfireId = await queue.CreateAcceptedAsync(job, EnqueueDeadline);
        BatchRunnerMetrics.JobsSubmitted.WithLabels(job.Queue).Inc();
        // What was stored, without reading it back: its webhook (if any) is waiting for the job to end.
        var notify = job.Spec.Notify is { } n ? new NotificationRecord(n.Url, NotificationState.Waiting, 0, null, null) : null;
        var dto = JobDto.From(job with { HangfireJobId = hangfireId, Notify = notify }).WithInputs(job);
        if (job.IsArrayParent) dto = dto.WithChildCounts(new Dictionary<Guid, IReadOnlyDictionary<string, int>> { [job.Id] = new Dictionary<string, int> { [JobState.Queued] = job.Spec.Array!.Size } });
        return TypedResults.Created($"/api/v1/jobs/{job.Id}", dto);
    }

    /// <summary>How long a submission waits for the database to come back to enqueue a job it has already recorded.</summary>
    private static readonly TimeSpan EnqueueDeadline = TimeSpan.FromSeconds(20);

    /// <summary>
    /// Jobs, newest first, narrowed by every filter given (<see cref="JobListQuery"/>), within the caller's tenant: a user
    /// or viewer sees its own tenant's jobs; an admin every tenant's, or one (<paramref name="tenant"/>). The default view
    /// lists a job's fields but args and env (bounded only by the submission limit; envNames has the names);
    /// <c>view=summary</c> also leaves out command and outputs. Arrays' children are listed under their parent
    /// (<see cref="ChildrenAsync"/>), not here; <paramref name="schedule"/>: only that schedule's runs.
    /// </summary>
    public static async Task<Results<Ok<JobListDto>, Ok<JobSummaryListDto>, ValidationProblem, ProblemHttpResult>> ListAsync(
        HttpContext http, JobStore store, JobDocuments documents, string? state, int? limit, string? cursor, string? tenant,
        string? name, string[]? label, string? since, string? until, string? queue, string? schedule, string? view, CancellationToken ct)
    {
        var caller = Caller.Of(http);
        if (tenant is not null && !caller.IsAdmin && tenant != caller.Tenant)
            return TypedResults.Problem(statusCode: StatusCodes.Status403Forbidden, title: "Forbidden",
                detail: $"only admin keys list another tenant's jobs; this key's tenant is \"{caller.Tenant}\"");
        var (filter, errors) = JobListQuery.Read(state, name, label, since, until, queue, schedule);
        var summary = JobListQuery.Summary(view, errors);
        if (limit is < 1 or > MaxPageSize)
            errors["limit"] = [$"limit must be between 1 and {MaxPageSize}"];
        if (cursor is not null && !JobStore.TryValidateCursor(cursor))
            errors["cursor"] = ["invalid cursor: pass the nextCursor of a previous page"];
        if (errors.Count > 0 || filter is null || summary is null) return TypedResults.ValidationProblem(errors, title: "The list query is invalid");

        var (items, next) = await store.ListAsync(filter with { Tenant = tenant ?? caller.Scope }, limit ?? DefaultPageSize, cursor, summary.Value, ct);
        var jobs = await documents.ListItemsAsync(items, ct);
        return summary.Value
            ? TypedResults.Ok(new JobSummaryListDto(jobs.Select(JobSummaryDto.From).ToList(), next))
            : TypedResults.Ok(new JobListDto(jobs, next));
    }

    /// <summary>
    /// A job by its id, or an array's child as <c>PARENT-ID:INDEX</c>. With <c>waitSeconds</c>, a long poll
    /// (<see cref="JobWait"/>): the answer comes once the job has ended (or, with <c>whileState</c>, once its state is no
    /// longer that one), or when the seconds are up, with the job as it is then.
    /// </summary>
    public static async Task<Results<Ok<JobDto>, ValidationProblem, ProblemHttpResult>> GetAsync(string id, HttpContext http, JobStore store, JobDocuments documents,
        JobStateSignal signal, TimeProvider time, IHostApplicationLifetime lifetime, double? waitSeconds, string? whileState, CancellationToken ct)
    {
        var scope = Caller.Of(http).Scope;
        var errors = JobWait.Check(waitSeconds, whileState);
        if (errors.Count > 0) return TypedResults.ValidationProblem(errors, title: "The wait is invalid");
        if (waitSeconds is { } seconds)
        {
            var jobId = Guid.TryParse(id, out var g) ? g : (await FindAsync(id, scope, store, ct))?.Id;
            if (jobId is null) return NotFound(id);
            var (dto, tooMany) = await JobWait.WaitAsync(c => documents.GetAsync(jobId.Value, scope, c), jobId.Value, TimeSpan.FromSeconds(seconds), whileState,
                signal, time, lifetime.ApplicationStopping, ct);
            if (tooMany)
            {
                http.Response.Headers.RetryAfter = "1";
                return TypedResults.Problem(statusCode: StatusCodes.Status429TooManyRequests, title: "Too many waiting requests",
                    detail: $"this server already holds {JobWait.MaxWaiting} requests waiting for jobs; ask again without waitSeconds, or later");
            }
            return dto is not null ? TypedResults.Ok(dto) : NotFound(id);
        }
        // A job id: the job and all its document shows in one round trip; a child's PARENT:INDEX is looked up first.
        if (Guid.TryParse(id, out var plainId))
            return await documents.GetAsync(plainId, scope, ct) is { } found ? TypedResults.Ok(found) : NotFound(id);
        return await FindAsync(id, scope, store, ct) is { } job ? TypedResults.Ok(await documents.DocumentAsync(job, ct)) : NotFound(id);
    }

    /// <summary>An array's children in index order: <c>?state=</c> filters, <c>nextCursor</c> pages.</summary>
    public static async Task<Results<Ok<JobListDto>, ValidationProblem, ProblemHttpResult>> ChildrenAsync(
        string id, HttpContext http, JobStore store, JobDocuments documents, string? state, int? limit, string? cursor, CancellationToken ct)
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
        // Children are their parent's tenant's: finding the parent within the caller's tenant scopes them.
        var parent = await FindAsync(id, Caller.Of(http).Scope, store, ct);
        if (parent is null) return NotFound(id);
        if (!parent.IsArrayParent)
            return TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Not an array", detail: $"job {id} is not an array: it has no children");
        var (items, next) = await store.ListChildrenAsync(parent.Id, state, limit ?? DefaultPageSize, after, ct);
        return TypedResults.Ok(new JobListDto(await documents.ListItemsAsync(items, ct), next is { } n ? EncodeIndexCursor(n) : null));
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
        string id, HttpContext http, JobStore store, JobDocuments documents, JobQueue queue, CancellationToken ct)
    {
        var scope = Caller.Of(http).Scope;
        var target = await FindAsync(id, scope, store, ct);
        if (target is null) return NotFound(id);
        // An array's parent takes its children with it; queued ones leave their queue, running ones are killed within a second.
        var outcome = await queue.CancelAsync(target.Id, scope, ct);
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
        return TypedResults.Accepted($"/api/v1/jobs/{target.Id}", await documents.DocumentAsync(job!, ct));
    }

    /// <summary>
    /// Deletes a finished job: its record (attempts, outputs, idempotency keys), its Hangfire message, and its files
    /// (logs, outputs, inputs) on every node that holds some. The record goes first, in the same transaction that
    /// records which nodes owe a removal; this node removes its own files at once and asks the others to remove
    /// theirs. A node that cannot be reached removes them when it next sweeps (at start, then every
    /// Retention:SweepSeconds), so 204 means the job is gone and its files are going. Only a job of the caller's
    /// tenant is found (another tenant's job is 404, as for every job endpoint). An array is deleted whole, its children
    /// with its parent, once it has ended (409 while any child has not); a child alone is refused (409).
    /// </summary>
    public static async Task<Results<NoContent, ProblemHttpResult>> DeleteAsync(
        string id, HttpContext http, JobStore store, JobQueue queue, JobFiles files, NodeIdentity node, NodeClient nodes, ILogger<NodeClient> log, CancellationToken ct)
    {
        var scope = Caller.Of(http).Scope;
        if (await FindAsync(id, scope, store, ct) is not { } target) return NotFound(id);
        // A child is part of its array (its index, its counts): the array is deleted whole, once it has ended.
        if (target.ParentId is { } parent)
            return TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "The job is an array's child",
                detail: $"job {id} is child {target.ArrayIndex} of array {parent}: delete the array (with all its children, once it has ended)");
        var jobId = target.Id;
        var (result, deleted) = await store.DeleteFinishedAsync(jobId, scope, ct);
        switch (result)
        {
            case JobStore.DeleteResult.NotFound:
                return NotFound(id);
            case JobStore.DeleteResult.NotFinished:
                var state = await store.GetStateAsync(jobId, ct);
                return TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "The job has not ended",
                    detail: $"job {id} is {state ?? "being deleted"}; only succeeded, failed or cancelled jobs can be deleted (cancel it first)");
        }
        // An array's parent comes with its children: each has its own message and files.
        foreach (var gone in deleted)
        {
            if (gone.HangfireJobId is { } hf) await queue.PurgeAsync(hf, CancellationToken.None);
            foreach (var holder in gone.Nodes)
            {
                if (holder == node.Name) await files.RemoveOwedAsync(gone.Id, CancellationToken.None);
                else await NodeFilesApi.ForwardRemovalAsync(nodes, holder, gone.InputsNode == holder ? gone.InputsUrl : null, gone.Id, log);
            }
        }
        return TypedResults.NoContent();
    }

    public static async Task<Results<Ok<IReadOnlyList<OutputDto>>, ProblemHttpResult>> ListOutputsAsync(string id, HttpContext http, JobStore store, CancellationToken ct)
    {
        var job = await FindAsync(id, Caller.Of(http).Scope, store, ct);
        if (job is null) return NotFound(id);
        return TypedResults.Ok<IReadOnlyList<OutputDto>>(job.Outputs.Select(o => new OutputDto(o.Path, o.Size, o.Sha256)).ToList());
    }

    public static Task<IResult> GetOutputAsync(string id, string path, HttpContext http, JobStore store, DataPaths paths, NodeIdentity node, CancellationToken ct) =>
        ServeOutputAsync(id, path, Caller.Of(http).Scope, store, paths, node, ct);

    /// <summary>An output file of the job: from this node's data directory, or (with <paramref name="forwardFrom"/>,
    /// the public API) forwarded to the node that ran the job. The node endpoint passes null: it never forwards.
    /// Only a job of tenant <paramref name="scope"/> (null: any) is found; the API node checks before it forwards.</summary>
    internal static async Task<IResult> ServeOutputAsync(string id, string path, string? scope, JobStore store, DataPaths paths, NodeIdentity? forwardFrom, CancellationToken ct)
    {
        var job = await FindAsync(id, scope, store, ct);
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

    /// <summary>Every output file of the job in one archive (<see cref="OutputArchiveResult"/>): from this node's data
    /// directory, or (with <paramref name="forwardFrom"/>) forwarded to the node that ran the job. Only a job of tenant
    /// <paramref name="scope"/> (null: any) is found; the API node checks before it forwards.</summary>
    internal static async Task<IResult> ServeOutputArchiveAsync(string id, OutputArchiveResult.Format format, string? scope, JobStore store, DataPaths paths,
        NodeIdentity? forwardFrom, CancellationToken ct)
    {
        var job = await FindAsync(id, scope, store, ct);
        if (job is null) return NotFound(id);
        var name = format == OutputArchiveResult.Format.Zip ? OutputArchiveResult.ZipName : OutputArchiveResult.TarGzName;
        if (forwardFrom is not null && NodeFilesApi.RanElsewhere(job, forwardFrom))
            return new ForwardToNodeResult(job.Node!, $"{NodeFilesApi.Prefix}/{job.Id}/{name}");
        if (!JobState.IsFinal(job.State))
            return TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "The job has not ended",
                detail: $"job {id} is {job.State}: its outputs are listed, and can be downloaded, once it ends");
        // Checked before the first byte goes out: once the archive streams, its status can no longer say a file is gone.
        var outputs = paths.Outputs(job.Id);
        if (job.Outputs.FirstOrDefault(o => !Servable(outputs, o.Path)) is { } missing)
            return TypedResults.Problem(statusCode: 404, title: "No such output", detail: $"output \"{missing.Path}\" of job {id} is no longer on node {job.Node}");
        return new OutputArchiveResult(job.Id, outputs, job.Outputs, format);
    }

    /// <summary>Whether the output can be opened as it is served (<see cref="OutputScanner.OpenOutput"/>).</summary>
    private static bool Servable(string outputsDir, string path)
    {
        using var stream = OutputScanner.OpenOutput(outputsDir, path);
        return stream is not null;
    }

    public static Task<IResult> LogsAsync(
        string id, string? stream, bool? follow, bool? timestamps, bool? status, HttpContext http, JobStore store, DataPaths paths, NodeIdentity node, CancellationToken ct) =>
        ServeLogsAsync(id, stream, follow, timestamps, status, http.Request.QueryString.Value ?? "", Caller.Of(http).Scope, store, paths, node, ct);

    private static readonly TimeSpan PlacementPollInterval = TimeSpan.FromMilliseconds(200);

    /// <summary>The job's logs: from this node's data directory, or (with <paramref name="forwardFrom"/>)
    /// forwarded, query included, to the node that ran the job. Only a job of tenant <paramref name="scope"/> (null:
    /// any) is found; the API node checks before it forwards.</summary>
    internal static async Task<IResult> ServeLogsAsync(
        string id, string? stream, bool? follow, bool? timestamps, bool? status, string query, string? scope, JobStore store, DataPaths paths, NodeIdentity? forwardFrom, CancellationToken ct)
    {
        if (stream is not (null or "all" or "stdout" or "stderr" or "combined"))
            return TypedResults.ValidationProblem(new Dictionary<string, string[]> { ["stream"] = ["stream must be stdout, stderr or combined (omit it for stdout then stderr)"] });
        if (timestamps == true && stream is null or "all")
            return TypedResults.ValidationProblem(new Dictionary<string, string[]> { ["timestamps"] = ["timestamps need stream=stdout, stderr or combined"] });
        var job = await FindAsync(id, scope, store, ct);
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

    /// <summary>The job, when it is one <paramref name="scope"/> may see: another tenant's job is not found (404, like a
    /// job that does not exist: a 403 would tell that it does). <paramref name="id"/>: a job id, or an array's child as
    /// <c>PARENT-ID:INDEX</c>.</summary>
    private static async Task<JobRecord?> FindAsync(string id, string? scope, JobStore store, CancellationToken ct)
    {
        if (Guid.TryParse(id, out var jobId)) return await store.GetAsync(jobId, scope, ct);
        var colon = id.LastIndexOf(':');
        return colon > 0 && Guid.TryParse(id.AsSpan(0, colon), out var parent)
               && int.TryParse(id.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var index)
            ? await store.GetChildAsync(parent, index, scope, ct)
            : null;
    }

    private static ProblemHttpResult NotFound(string id) =>
        TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Job not found", detail: $"no job with id \"{id}\"");
}
