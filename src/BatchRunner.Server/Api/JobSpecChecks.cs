using BatchRunner.Core;
using BatchRunner.Oci;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace BatchRunner.Server.Api;

/// <summary>
/// Everything a job spec is checked against before it is stored, for <c>POST /api/v1/jobs</c> and a schedule's <c>job</c>
/// alike: its shape (<see cref="JobSpecValidator"/>), the image reference, the node's queues, a live node that could run it,
/// and the jobs it names in <c>dependsOn</c> and <c>inputsFrom</c>, which must exist. Errors name the field, under
/// <paramref name="prefix"/> ("job." in a schedule).
/// </summary>
/// <remarks>
/// A dependency cycle cannot be built through the API: ids are given by the server, a job may only name jobs that exist
/// when it is submitted, and dependencies never change afterwards, so every edge points from a newer job to an older one.
/// </remarks>
internal static class JobSpecChecks
{
    public static async Task<(JobSpec? Spec, ValidationProblem? Problem)> CheckAsync(
        JobSubmission? submission, string prefix, BatchRunnerOptions options, LiveNodes liveNodes, JobStore store,
        IReadOnlyDictionary<string, string[]>? moreErrors, CancellationToken ct)
    {
        var result = JobSpecValidator.Validate(submission);
        var errors = result.Errors.ToDictionary(e => prefix + e.Key, e => e.Value);
        if (!string.IsNullOrWhiteSpace(submission?.Image) && !ImageReference.TryParse(submission.Image, out _, out var refError))
            errors[prefix + "image"] = [refError ?? "invalid image reference"];
        var queueName = submission?.Queue ?? JobDefaults.Queue;
        if (!errors.ContainsKey(prefix + "queue") && !options.Queues.Contains(queueName))
            errors[prefix + "queue"] = [$"unknown queue \"{queueName}\"; configured queues: {string.Join(", ", options.Queues)}"];
        foreach (var (k, v) in moreErrors ?? new Dictionary<string, string[]>()) errors[k] = v;
        if (errors.Count > 0) return (null, TypedResults.ValidationProblem(errors, title: "The job spec is invalid"));

        var spec = result.Spec!;
        // A job that no live node could ever run is refused now rather than queued forever.
        var misfit = await liveNodes.WhyNoNodeFitsAsync(spec, ct);
        if (misfit.Count > 0)
            return (null, TypedResults.ValidationProblem(misfit.ToDictionary(e => prefix + e.Key, e => e.Value), title: "No live node can run this job"));

        var unknown = await UnknownJobsAsync(submission!, prefix, store, ct);
        if (unknown.Count > 0)
            return (null, TypedResults.ValidationProblem(unknown, title: "The job names jobs that do not exist"));
        return (spec, null);
    }

    /// <summary>Each <c>dependsOn[i].job</c> and <c>inputsFrom[i].job</c> that names no job (one query for all).</summary>
    private static async Task<Dictionary<string, string[]>> UnknownJobsAsync(JobSubmission s, string prefix, JobStore store, CancellationToken ct)
    {
        var named = new List<(string Field, Guid Job)>();
        for (var i = 0; i < (s.DependsOn?.Count ?? 0); i++)
            if (Guid.TryParse(s.DependsOn![i]?.Job, out var job)) named.Add(($"{prefix}dependsOn[{i}].job", job));
        for (var i = 0; i < (s.InputsFrom?.Count ?? 0); i++)
            if (Guid.TryParse(s.InputsFrom![i]?.Job, out var job)) named.Add(($"{prefix}inputsFrom[{i}].job", job));
        if (named.Count == 0) return [];
        var states = await store.StatesAsync(named.Select(n => n.Job).Distinct().ToList(), ct);
        return named.Where(n => !states.ContainsKey(n.Job))
            .ToDictionary(n => n.Field, n => new[] { $"no job with id {n.Job}" });
    }
}
