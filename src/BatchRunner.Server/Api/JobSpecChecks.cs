using BatchRunner.Core;
using BatchRunner.Oci;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Notifications;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace BatchRunner.Server.Api;

/// <summary>
/// Everything a job spec is checked against before it is stored, for <c>POST /api/v1/jobs</c> and a schedule's <c>job</c>
/// alike: its shape (<see cref="JobSpecValidator"/>), the image reference, the node's queues and log cap, the webhook
/// policy, the disk it may have, a live node that could run it, and the jobs it names in <c>dependsOn</c> and
/// <c>inputsFrom</c>, which must exist in the job's tenant. Errors name the field, under <paramref name="prefix"/>
/// ("job." in a schedule).
/// </summary>
/// <remarks>
/// A dependency cycle cannot be built through the API: ids are given by the server, a job may only name jobs that exist
/// when it is submitted, and dependencies never change afterwards, so every edge points from a newer job to an older one.
/// </remarks>
internal static class JobSpecChecks
{
    /// <param name="shapeErrors">What reading the document found (fields of the wrong shape), reported first.</param>
    /// <param name="tenant">The tenant the job will belong to: a job it names must be one of this tenant's (another
    /// tenant's is refused as one that does not exist, so that its existence is never revealed).</param>
    /// <param name="moreErrors">The caller's own errors (a header, a schedule's fields), named as they are.</param>
    public static async Task<(JobSpec? Spec, ValidationProblem? Problem)> CheckAsync(
        JobSubmission? submission, IReadOnlyDictionary<string, string[]>? shapeErrors, string prefix, string tenant, BatchRunnerOptions options,
        LiveNodes liveNodes, JobStore store, WebhookPolicy webhooks, IReadOnlyDictionary<string, string[]>? moreErrors, CancellationToken ct)
    {
        // Every error at once: the document's shape, the spec's meaning, this node's hardware, the server's settings.
        var errors = new FieldErrors().Add(shapeErrors ?? new Dictionary<string, string[]>());
        var result = submission is null ? null : JobSpecValidator.Validate(submission);
        if (result is not null) errors.Add(result.Errors);
        if (submission is not null)
        {
            // This node's CPUs (cpuset); network modes, capabilities and datasets are checked below, against the
            // policies the live nodes publish (Scheduling/NodeFit), not this API node's settings.
            errors.Add(JobSubmissionReader.NodeHardwareErrors(submission));
            if (!string.IsNullOrWhiteSpace(submission.Image) && !ImageReference.TryParse(submission.Image, out _, out var refError))
                errors.Add("image", refError ?? "invalid image reference");
            var queueName = submission.Queue ?? JobDefaults.Queue;
            if (!errors.Has("queue") && !options.Queues.Contains(queueName))
                errors.Add("queue", $"unknown queue \"{queueName}\"; configured queues: {string.Join(", ", options.Queues)}");
        }
        if (submission?.StopGraceSeconds > options.MaxStopGraceSeconds && !errors.Has("stopGraceSeconds"))
            errors.Add("stopGraceSeconds", $"stopGraceSeconds must be at most {options.MaxStopGraceSeconds} on this cluster (MaxStopGraceSeconds)");
        if (result?.Spec?.Logs.MaxBytes is { } logCap && logCap > options.MaxLogBytesValue())
            errors.Add("logs.maxBytes", $"logs.maxBytes ({Quantity.Human(logCap)}) must not exceed this node's MaxLogBytes ({Quantity.Human(options.MaxLogBytesValue())})");
        foreach (var (field, message) in WebhookErrors(result?.Spec?.Notify, webhooks, options.Webhooks))
            errors.Add(field, message);
        // resources.disk settled (this node's default when omitted) and checked against its maximum.
        JobSpec? settled = null;
        if (result?.Spec is { } valid)
        {
            (settled, var diskError) = DiskRequests.Settle(valid, options.Disk);
            if (diskError is not null) errors.Add("resources.disk", diskError);
        }

        // The node's default stop grace is written into the job: what it will get is on the job, whichever node runs it.
        var spec = settled is null ? null : settled with { StopGraceSeconds = settled.StopGraceSeconds ?? options.StopGraceSeconds };
        // A job that no live node could ever run (too large for every one, or asking for a network mode, capability or
        // dataset none allows) is refused now rather than queued forever, in the same answer as the other errors. It
        // needs a valid spec: with a spec that is not, those fields are checked once it is.
        var misfit = spec is not null && !errors.Has("resources.disk") ? await liveNodes.WhyNoNodeFitsAsync(spec, ct) : new Dictionary<string, string[]>();
        if (errors.Count > 0 || spec is null || moreErrors is { Count: > 0 })
        {
            var all = errors.Add(misfit).ToDictionary().ToDictionary(e => prefix + e.Key, e => e.Value);
            foreach (var (k, v) in moreErrors ?? new Dictionary<string, string[]>()) all[k] = v;
            return (null, TypedResults.ValidationProblem(all, title: "The job spec is invalid"));
        }
        if (misfit.Count > 0)
            return (null, TypedResults.ValidationProblem(misfit.ToDictionary(e => prefix + e.Key, e => e.Value), title: "No live node can run this job"));

        var unknown = await UnknownJobsAsync(submission!, prefix, tenant, store, ct);
        if (unknown.Count > 0)
            return (null, TypedResults.ValidationProblem(unknown, title: "The job names jobs that do not exist"));
        return (spec, null);
    }

    /// <summary>What the server has against a job's webhook: a host its policy refuses, or no key to sign with.</summary>
    private static IEnumerable<(string Field, string Message)> WebhookErrors(JobNotify? notify, WebhookPolicy policy, WebhookOptions settings)
    {
        if (notify is null) yield break;
        if (Uri.TryCreate(notify.Url, UriKind.Absolute, out var url) && policy.CheckUrl(url) is { } refused)
            yield return ("notify.url", refused);
        if (notify.Secret is null && string.IsNullOrEmpty(settings.Secret))
            yield return ("notify.secret", "notify.secret is required: this server has no BatchRunner:Webhooks:Secret to sign the call with");
    }

    /// <summary>Each <c>dependsOn[i].job</c> and <c>inputsFrom[i].job</c> that names no job of <paramref name="tenant"/>
    /// (one query for all). The message is the same whether the job does not exist or is another tenant's.</summary>
    private static async Task<Dictionary<string, string[]>> UnknownJobsAsync(JobSubmission s, string prefix, string tenant, JobStore store, CancellationToken ct)
    {
        var named = new List<(string Field, Guid Job)>();
        for (var i = 0; i < (s.DependsOn?.Count ?? 0); i++)
            if (Guid.TryParse(s.DependsOn![i]?.Job, out var job)) named.Add(($"{prefix}dependsOn[{i}].job", job));
        for (var i = 0; i < (s.InputsFrom?.Count ?? 0); i++)
            if (Guid.TryParse(s.InputsFrom![i]?.Job, out var job)) named.Add(($"{prefix}inputsFrom[{i}].job", job));
        if (named.Count == 0) return [];
        var states = await store.StatesAsync(named.Select(n => n.Job).Distinct().ToList(), tenant, ct);
        return named.Where(n => !states.ContainsKey(n.Job))
            .ToDictionary(n => n.Field, n => new[] { $"no job with id {n.Job} was found" });
    }
}
