using BatchRunner.Core;
using BatchRunner.Server.Auth;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Notifications;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Api;

/// <summary>The body of <c>POST /api/v1/schedules</c> and (every field optional) of <c>PATCH</c>.</summary>
public sealed record ScheduleSubmission
{
    public string? Name { get; init; }
    public string? Cron { get; init; }
    public string? TimeZone { get; init; }
    public JobSubmission? Job { get; init; }
    public string? Concurrency { get; init; }
    public bool? Paused { get; init; }
}

/// <summary>A schedule as the API shows it.</summary>
public sealed record ScheduleDto(
    Guid Id, string Name, string Cron, string TimeZone, string Concurrency, bool Paused, ScheduleJobDto Job,
    DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt, DateTimeOffset? NextRunAt,
    int Runs, DateTimeOffset? LastRunAt, Guid? LastJobId, string? LastJobState,
    int SkippedRuns, DateTimeOffset? LastSkippedAt, string? LastSkipMessage,
    // The tenant its runs belong to, and the key that created it (each run's submittedBy).
    string Tenant = JobRecord.DefaultTenant, string? CreatedBy = null)
{
    public static ScheduleDto From(ScheduleRecord s) => new(
        s.Id, s.Name, s.Cron, s.TimeZone, s.Concurrency, s.Paused, ScheduleJobDto.From(s.Spec), s.CreatedAt, s.UpdatedAt,
        s.Paused ? null : ScheduleCron.NextRun(s.Cron, s.TimeZone), s.Runs, s.LastRunAt, s.LastJobId, s.LastJobState,
        s.SkippedRuns, s.LastSkippedAt, s.LastSkipMessage, s.Tenant, s.CreatedBy);
}

/// <summary>The job each run submits, as a job shows its spec (env values are not shown back).</summary>
public sealed record ScheduleJobDto(
    string? Name, string Image, IReadOnlyList<string>? Command, IReadOnlyList<string>? Args, IReadOnlyList<string> EnvNames,
    string Queue, ResourcesDto Resources, int TimeoutSeconds, IReadOnlyDictionary<string, string> Labels, ArrayDto? Array,
    IReadOnlyList<DependencyDto> DependsOn, IReadOnlyList<string>? SecretEnvNames = null)
{
    public static ScheduleJobDto From(JobSpec s) => new(
        s.Name, s.Image, s.Command, s.Args, s.Env.Keys.Order().ToList(), s.Queue,
        new ResourcesDto(s.Resources.Cpus, Quantity.FormatBytes(s.Resources.MemoryBytes), s.Resources.MemoryBytes, s.Resources.Pids, s.Resources.Gpus, s.Resources.GpuModel),
        s.TimeoutSeconds, s.Labels, s.Array is { } a ? new ArrayDto(a.Size, a.Parallelism, null) : null,
        s.DependsOn.Select(d => new DependencyDto(d.Job, d.Condition)).ToList(), s.SecretEnvNames);
}

public sealed record ScheduleListDto(IReadOnlyList<ScheduleDto> Items);

/// <summary>
/// HTTP API v1 for schedules: recurring jobs on a cron (Hangfire's syntax, in a time zone), each run an ordinary job
/// carrying <c>scheduleId</c> (<c>GET /api/v1/jobs?schedule=ID</c>). A public contract, like the jobs API.
/// </summary>
public static class SchedulesApi
{
    public const int MaxNameLength = 200;

    public static RouteGroupBuilder MapSchedulesApiV1(this IEndpointRouteBuilder app)
    {
        // As jobs: reading needs any key, changing needs submit (a viewer gets 403); schedules are then looked up within
        // the caller's tenant only (another tenant's is 404).
        var api = app.MapGroup("/api/v1/schedules").WithTags("Schedules");
        api.MapPost("/", CreateAsync).WithName("CreateSchedule").Accepts<ScheduleSubmission>("application/json").RequireAuthorization(Policies.Submit);
        api.MapGet("/", ListAsync).WithName("ListSchedules").RequireAuthorization(Policies.Read);
        api.MapGet("/{id}", GetAsync).WithName("GetSchedule").RequireAuthorization(Policies.Read);
        api.MapPatch("/{id}", UpdateAsync).WithName("UpdateSchedule").Accepts<ScheduleSubmission>("application/json").RequireAuthorization(Policies.Submit);
        api.MapDelete("/{id}", DeleteAsync).WithName("DeleteSchedule").RequireAuthorization(Policies.Submit);
        api.MapPost("/{id}/trigger", TriggerAsync).WithName("TriggerSchedule").RequireAuthorization(Policies.Submit);
        return api;
    }

    public static async Task<Results<Created<ScheduleDto>, ValidationProblem, ProblemHttpResult>> CreateAsync(
        HttpRequest request, ScheduleStore schedules, ScheduleQueue recurring, JobStore jobs, JobSecretStore secrets, LiveNodes liveNodes,
        WebhookPolicy webhooks, IOptions<BatchRunnerOptions> options, CancellationToken ct)
    {
        var caller = Caller.Of(request.HttpContext);
        var read = await JsonBody.ReadAsync<ScheduleSubmission>(request.Body, "body", "a schedule (name, cron, timeZone, job, concurrency, paused)", request.ContentLength, ct);
        if (read.TooLarge is { } tooLarge) return tooLarge;
        if (read.Invalid is { } invalid) return invalid;
        var body = read.Value;
        var missing = new Dictionary<string, string[]>();
        if (body!.Name is null) missing["name"] = ["name is required"];
        if (body.Cron is null) missing["cron"] = ["cron is required, e.g. \"0 3 * * *\""];
        if (body.Job is null) missing["job"] = ["job is required: the job spec each run submits"];
        var now = DateTimeOffset.UtcNow;
        var draft = new ScheduleRecord
        {
            Id = Guid.CreateVersion7(), Name = body.Name ?? "", Cron = body.Cron ?? "", TimeZone = body.TimeZone ?? "UTC",
            Spec = null!, Concurrency = body.Concurrency ?? ScheduleConcurrency.Allow, Paused = body.Paused ?? false,
            CreatedAt = now, UpdatedAt = now, Tenant = caller.Tenant, CreatedBy = caller.KeyId,
        };
        var (schedule, problem) = await CheckAsync(draft, body.Job, missing, jobs, secrets, liveNodes, webhooks, options.Value, ct);
        if (problem is not null) return problem;
        await schedules.InsertAsync(schedule!, ct);
        try { await recurring.RegisterAsync(schedule!); }
        catch
        {
            await schedules.DeleteAsync(schedule!.Id, tenant: null, CancellationToken.None);
            throw;
        }
        return TypedResults.Created($"/api/v1/schedules/{schedule!.Id}", ScheduleDto.From((await schedules.GetAsync(schedule.Id, tenant: null, ct))!));
    }

    /// <summary>The caller's tenant's schedules (an admin's: every tenant's), newest first.</summary>
    public static async Task<Ok<ScheduleListDto>> ListAsync(HttpContext http, ScheduleStore schedules, CancellationToken ct) =>
        TypedResults.Ok(new ScheduleListDto((await schedules.ListAsync(Caller.Of(http).Scope, ct)).Select(ScheduleDto.From).ToList()));

    public static async Task<Results<Ok<ScheduleDto>, ProblemHttpResult>> GetAsync(string id, HttpContext http, ScheduleStore schedules, CancellationToken ct) =>
        await FindAsync(id, Caller.Of(http).Scope, schedules, ct) is { } s ? TypedResults.Ok(ScheduleDto.From(s)) : NotFound(id);

    /// <summary>Pauses or resumes (<c>paused</c>), or changes name, cron, time zone, concurrency or the job; what is not given stays.</summary>
    public static async Task<Results<Ok<ScheduleDto>, ValidationProblem, ProblemHttpResult>> UpdateAsync(
        string id, HttpRequest request, ScheduleStore schedules, ScheduleQueue recurring, JobStore jobs, JobSecretStore secrets, LiveNodes liveNodes,
        WebhookPolicy webhooks, IOptions<BatchRunnerOptions> options, CancellationToken ct)
    {
        var existing = await FindAsync(id, Caller.Of(request.HttpContext).Scope, schedules, ct);
        if (existing is null) return NotFound(id);
        var read = await JsonBody.ReadAsync<ScheduleSubmission>(request.Body, "body", "a schedule (name, cron, timeZone, job, concurrency, paused)", request.ContentLength, ct);
        if (read.TooLarge is { } tooLarge) return tooLarge;
        if (read.Invalid is { } invalid) return invalid;
        var body = read.Value;
        var draft = existing with
        {
            Name = body!.Name ?? existing.Name,
            Cron = body.Cron ?? existing.Cron,
            TimeZone = body.TimeZone ?? existing.TimeZone,
            Concurrency = body.Concurrency ?? existing.Concurrency,
            Paused = body.Paused ?? existing.Paused,
        };
        var (schedule, problem) = await CheckAsync(draft, body.Job, [], jobs, secrets, liveNodes, webhooks, options.Value, ct, keepSpec: body.Job is null ? existing.Spec : null);
        if (problem is not null) return problem;
        if (!await schedules.UpdateAsync(schedule!, newSecrets: body.Job is not null, ct)) return NotFound(id);
        await recurring.RegisterAsync(schedule!);
        return TypedResults.Ok(ScheduleDto.From((await schedules.GetAsync(schedule!.Id, tenant: null, ct))!));
    }

    /// <summary>Removes the schedule and its recurring job; its runs stay (and keep their <c>scheduleId</c>).</summary>
    public static async Task<Results<NoContent, ProblemHttpResult>> DeleteAsync(string id, HttpContext http, ScheduleStore schedules, ScheduleQueue recurring, CancellationToken ct)
    {
        var scope = Caller.Of(http).Scope;
        if (await FindAsync(id, scope, schedules, ct) is not { } s || !await schedules.DeleteAsync(s.Id, scope, ct)) return NotFound(id);
        await recurring.RemoveAsync(s.Id);
        return TypedResults.NoContent();
    }

    /// <summary>Starts a run now, by the schedule's concurrency rule (a paused schedule too): <c>201</c> with the job, or
    /// <c>409</c> when forbid skipped it (the skip is recorded on the schedule).</summary>
    public static async Task<Results<Created<JobDto>, ProblemHttpResult>> TriggerAsync(
        string id, HttpContext http, ScheduleStore schedules, JobQueue queue, CancellationToken ct)
    {
        if (await FindAsync(id, Caller.Of(http).Scope, schedules, ct) is not { } s) return NotFound(id);
        var run = await schedules.StartRunAsync(s.Id, hangfireJobId: null, r => JobRecord.New(r.Spec with { Name = r.Spec.Name ?? r.Name }), ct);
        switch (run)
        {
            case ScheduleRun.Started started:
                BatchRunnerMetrics.JobsSubmitted.WithLabels(started.Job.Queue).Inc();
                if (started.Replaces is { } previous)
                {
                    var cancelled = await queue.CancelAsync(previous, tenant: null, CancellationToken.None);
                    foreach (var (queueName, count) in cancelled.CancelledNow)
                        BatchRunnerMetrics.JobsFinished.WithLabels(queueName, JobState.Cancelled, FailureReason.Cancelled).Inc(count);
                }
                var hangfireId = await queue.CreateForAsync(started.Job, CancellationToken.None);
                return TypedResults.Created($"/api/v1/jobs/{started.Job.Id}", JobDto.From(started.Job with { HangfireJobId = hangfireId }));
            case ScheduleRun.Skipped skipped:
                return TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "Run skipped", detail: skipped.Message);
            default:
                return NotFound(id);
        }
    }

    /// <summary>
    /// The schedule as it would be stored, or the 400 naming every bad field: name, cron (Hangfire's syntax), time zone,
    /// concurrency, and the job under <c>job.</c>, checked as a submitted job is (<see cref="JobSpecChecks"/>, the jobs it
    /// names within the schedule's tenant) but for inputs, which a run cannot carry. <paramref name="keepSpec"/>: the job
    /// is unchanged (a PATCH without one). A new job's secrets are encrypted into the schedule.
    /// </summary>
    private static async Task<(ScheduleRecord? Schedule, ValidationProblem? Problem)> CheckAsync(
        ScheduleRecord draft, JobSubmission? job, Dictionary<string, string[]> errors, JobStore jobs, JobSecretStore secrets, LiveNodes liveNodes,
        WebhookPolicy webhooks, BatchRunnerOptions options, CancellationToken ct, JobSpec? keepSpec = null)
    {
        if (draft.Name.Length is 0 or > MaxNameLength || draft.Name.Any(char.IsControl))
            errors.TryAdd("name", [$"name must be 1-{MaxNameLength} printable characters"]);
        if (!errors.ContainsKey("cron") && ScheduleCron.TryParse(draft.Cron, out var cronError) is null) errors["cron"] = [cronError!];
        if (ScheduleCron.TryTimeZone(draft.TimeZone, out var zoneError) is null) errors["timeZone"] = [zoneError!];
        if (!ScheduleConcurrency.All.Contains(draft.Concurrency))
            errors["concurrency"] = [$"concurrency must be one of {string.Join(", ", ScheduleConcurrency.All)}"];
        if (keepSpec is not null)
            return errors.Count > 0 ? (null, TypedResults.ValidationProblem(errors, title: "The schedule is invalid")) : (draft with { Spec = keepSpec }, null);
        if (job is null)
            return (null, TypedResults.ValidationProblem(errors, title: "The schedule is invalid"));
        var (spec, problem) = await JobSpecChecks.CheckAsync(job, null, "job.", draft.Tenant, options, liveNodes, jobs, webhooks, errors, ct);
        if (problem is not null) return (null, problem);
        var jobSecrets = new JobSecrets(spec!.SecretEnv, spec.Notify?.Secret);
        return (draft with { Spec = spec, ProtectedSecrets = jobSecrets.IsEmpty ? null : secrets.Protect(jobSecrets) }, null);
    }

    /// <summary>The schedule, when it is one <paramref name="scope"/> may see (another tenant's is not found: 404).</summary>
    private static async Task<ScheduleRecord?> FindAsync(string id, string? scope, ScheduleStore schedules, CancellationToken ct) =>
        Guid.TryParse(id, out var sid) ? await schedules.GetAsync(sid, scope, ct) : null;

    private static ProblemHttpResult NotFound(string id) =>
        TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Schedule not found", detail: $"no schedule with id \"{id}\"");
}
