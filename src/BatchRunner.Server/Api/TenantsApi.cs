using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using BatchRunner.Core;
using BatchRunner.Server.Auth;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace BatchRunner.Server.Api;

/// <summary>The body of <c>PUT /api/v1/tenants/{name}</c>: every limit it omits is no limit, an omitted weight is 1.</summary>
public sealed record TenantQuotaRequest(int? MaxQueuedJobs, RunningLimitRequest? MaxRunning, double? Weight);

/// <summary>Limits on what a tenant's starting and running jobs ask for together, cluster-wide; <c>memory</c> as in a job spec.</summary>
public sealed record RunningLimitRequest(double? Cpus, JsonElement? Memory, int? Gpus);

public sealed record RunningLimitDto(double? Cpus, string? Memory, long? MemoryBytes, int? Gpus);

public sealed record TenantUsageDto(long QueuedJobs, long RunningJobs, double Cpus, long MemoryBytes, int Gpus);

public sealed record TenantDto(string Name, DateTimeOffset CreatedAt, int? MaxQueuedJobs, RunningLimitDto MaxRunning, double Weight, TenantUsageDto Usage)
{
    public static TenantDto From(TenantRecord t) => new(t.Name, t.CreatedAt, t.Quota.MaxQueuedJobs,
        new RunningLimitDto(t.Quota.MaxRunningCpus, t.Quota.MaxRunningMemoryBytes is { } m ? Quantity.FormatBytes(m) : null, t.Quota.MaxRunningMemoryBytes, t.Quota.MaxRunningGpus),
        t.Quota.Weight,
        new TenantUsageDto(t.Usage.QueuedJobs, t.Usage.RunningJobs, Math.Round(t.Usage.RunningCpus, 6), t.Usage.RunningMemoryBytes, t.Usage.RunningGpus));
}

/// <summary>
/// HTTP API v1 for tenants: their quotas and fair-share weights (set by admins), and what they use now (every key
/// reads its own tenant; admins read all). A public contract: extend it, never rename or remove.
/// </summary>
public static partial class TenantsApi
{
    public const double MaxWeight = 1000;

    [GeneratedRegex("^[a-z0-9]([a-z0-9_-]{0,62})$")]
    private static partial Regex TenantName();

    public const string NameRule = "tenant must be 1-63 characters of lowercase letters, digits, '_', '-' and start with a letter or digit";

    public static bool IsValidName(string name) => TenantName().IsMatch(name);

    public static IEndpointRouteBuilder MapTenantsApiV1(this IEndpointRouteBuilder app)
    {
        var api = app.MapGroup("/api/v1/tenants").WithTags("Tenants");
        api.MapGet("/", ListAsync).WithName("ListTenants").RequireAuthorization(Policies.Read);
        api.MapPut("/{name}", PutAsync).WithName("PutTenant").Accepts<TenantQuotaRequest>("application/json").RequireAuthorization(Policies.Admin);
        return app;
    }

    /// <summary>An admin sees every tenant; any other key only its own.</summary>
    public static async Task<Ok<IReadOnlyList<TenantDto>>> ListAsync(HttpContext http, TenantStore store, CancellationToken ct) =>
        TypedResults.Ok<IReadOnlyList<TenantDto>>((await store.ListAsync(Caller.Of(http).Scope, ct)).Select(TenantDto.From).ToList());

    /// <summary>Sets the tenant's quota and weight, creating the tenant when it does not exist yet (its keys can come later).</summary>
    public static async Task<Results<Ok<TenantDto>, ValidationProblem, ProblemHttpResult>> PutAsync(
        string name, HttpRequest request, TenantStore store, CancellationToken ct)
    {
        var read = await JsonBody.ReadAsync<TenantQuotaRequest>(request.Body, "body", "a tenant quota (maxQueuedJobs, maxRunning, weight)", request.ContentLength, ct);
        if (read.Invalid is { } invalid) return invalid;
        if (read.TooLarge is { } tooLarge) return tooLarge;
        var body = read.Value ?? new TenantQuotaRequest(null, null, null);
        var errors = new Dictionary<string, string[]>();
        if (!IsValidName(name)) errors["name"] = [NameRule];
        if (body.MaxQueuedJobs is < 0) errors["maxQueuedJobs"] = ["maxQueuedJobs must be 0 or more (omit it for no limit)"];
        var running = body.MaxRunning;
        if (running?.Cpus is { } cpus && (double.IsNaN(cpus) || cpus < 0 || cpus > 1_000_000))
            errors["maxRunning.cpus"] = ["maxRunning.cpus must be a number of CPUs from 0 (omit it for no limit)"];
        long? memory = null;
        if (running?.Memory is { ValueKind: not JsonValueKind.Null } m)
        {
            if (JobSpecValidator.TryMemory(m, out var bytes, out var why)) memory = bytes;
            else errors["maxRunning.memory"] = [why.Replace("memory", "maxRunning.memory", StringComparison.Ordinal)];
        }
        if (running?.Gpus is < 0) errors["maxRunning.gpus"] = ["maxRunning.gpus must be 0 or more (omit it for no limit)"];
        if (body.Weight is { } w && (double.IsNaN(w) || w <= 0 || w > MaxWeight))
            errors["weight"] = [$"weight must be a number above 0 and at most {MaxWeight.ToString(CultureInfo.InvariantCulture)} (default 1)"];
        if (errors.Count > 0) return TypedResults.ValidationProblem(errors, title: "The tenant quota is invalid");

        var quota = new TenantQuota(body.MaxQueuedJobs, running?.Cpus, memory, running?.Gpus, body.Weight ?? TenantQuota.DefaultWeight);
        return TypedResults.Ok(TenantDto.From(await store.PutAsync(name, quota, ct)));
    }
}

/// <summary>The answers to a submission past its tenant's quota.</summary>
public static class TenantQuotaProblems
{
    /// <summary>How long a client is told to wait (<c>Retry-After</c>) before submitting again past maxQueuedJobs: a hint only,
    /// since room comes when some of the tenant's queued jobs start, which nothing here can foresee.</summary>
    public const int QueuedJobsRetryAfterSeconds = 5;

    /// <summary>429 with <c>Retry-After</c>: the tenant has <paramref name="limit"/> jobs queued, its maxQueuedJobs. Retrying
    /// later works once some start.</summary>
    public static ProblemHttpResult QueuedJobs(HttpResponse response, string tenant, int limit)
    {
        response.Headers.RetryAfter = QueuedJobsRetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return TypedResults.Problem(statusCode: StatusCodes.Status429TooManyRequests, title: "Tenant quota exceeded: maxQueuedJobs",
            detail: $"tenant \"{tenant}\" already has {limit} queued {(limit == 1 ? "job" : "jobs")}, its maxQueuedJobs quota; submit again once some have started",
            extensions: new Dictionary<string, object?> { ["quota"] = "maxQueuedJobs", ["tenant"] = tenant, ["limit"] = limit });
    }
}
