using BatchRunner.Core;
using BatchRunner.Oci;
using BatchRunner.Server.Auth;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Api;

/// <summary>
/// <c>POST /api/v1/jobs/{id}/rerun</c>: a new job with the spec of a job that has ended, its image pinned to the digest
/// that job ran (<c>repo:tag@sha256:…</c>, so a moved tag cannot change what runs), its inputs given again, and
/// <c>rerunOf</c> naming it.
/// </summary>
/// <remarks>
/// Only an ended job can be rerun (409 otherwise): its digest is final and so is what it read, and a rerun of a job
/// still running is more likely a double click than a wish. A job that never resolved its image (the pull failed)
/// has no digest to pin: 409, submit it again. Its inputs are the original's tar, same digest (<see cref="JobInputs"/>:
/// packed again from the original's files where the tar is gone); when neither can be had, 409 says so and nothing is
/// created, so a rerun never starts without its inputs. The rerun belongs to the caller (its tenant, its
/// key as submittedBy), who can only rerun a job it can see (another tenant's job is 404), and carries the original's
/// secrets (secretEnv, the webhook's key), encrypted anew. An array is rerun whole (a new parent and children); one of
/// its children alone is not (409). A job with dependencies waits for them again (they have ended: it moves on at once).
/// </remarks>
public static class JobRerun
{
    public static async Task<Results<Created<JobDto>, ProblemHttpResult>> RerunAsync(
        string id, HttpContext http, JobStore store, JobSecretStore secrets, LiveNodes liveNodes, JobQueue queue, DataPaths paths,
        InputsStore inputsStore, NodeIdentity node, NodeAddress address,
        IOptions<BatchRunnerOptions> options, CancellationToken ct)
    {
        var caller = Caller.Of(http);
        var original = Guid.TryParse(id, out var originalId) ? await store.GetAsync(originalId, caller.Scope, ct) : null;
        if (original is null)
            return TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Job not found", detail: $"no job with id \"{id}\"");
        // A child runs as part of its array (its index, its slot): the array is what is rerun.
        if (original.ParentId is { } parent)
            return Conflict("The job is an array's child", $"job {id} is child {original.ArrayIndex} of array {parent}: rerun the array");
        if (!JobState.IsFinal(original.State))
            return Conflict("The job has not ended", $"job {id} is {original.State}: only a job that has ended can be rerun (wait for it, or cancel it)");
        if (original.ImageDigest is not { } digest || !ImageReference.TryParse(original.Spec.Image, out var reference, out _))
            return Conflict("The job's image was never resolved",
                $"job {id} ended {original.Reason ?? original.State} before its image {original.Spec.Image} was resolved to a digest: there is nothing to pin; submit it again");
        if (!options.Value.Queues.Contains(original.Queue))
            return Conflict("The job's queue is gone", $"queue \"{original.Queue}\" is no longer configured; configured queues: {string.Join(", ", options.Value.Queues)}");

        var pinned = (reference with { Digest = digest }).ToString();
        var spec = original.Spec with { Image = pinned };
        var misfit = await liveNodes.WhyNoNodeFitsAsync(spec, ct);
        if (misfit.Count > 0)
            return Conflict("No live node can run this job now", string.Join("; ", misfit.Select(m => $"{m.Key}: {string.Join(", ", m.Value)}")));

        RerunInputs inputs;
        try { inputs = await JobInputs.ForRerunAsync(original, inputsStore, paths, node.Name, address.Url, ct); }
        catch (InputsGoneException e) { return Conflict("The job's inputs are gone", $"{e.Message}: submit it again with its inputs"); }
        using (inputs)
        {
            var jobSecrets = await secrets.GetAsync(original.Id, ct);
            var job = JobsApi.NewJob(spec, original.Inputs, inputs.Tar, caller, jobSecrets.IsEmpty ? null : secrets.Protect(jobSecrets), rerunOf: original.Id);
            JobStore.InsertResult inserted;
            try { inserted = await store.InsertAsync(job, idempotencyKey: null, requestHash: "", ct, sharesInputsOf: inputs.SharedWith); }
            catch (InputsGoneException e) { return Conflict("The job's inputs are gone", $"{e.Message}: submit it again with its inputs"); }
            // Nothing was stored when the tenant is at its maxQueuedJobs: nothing may be queued either.
            if (inserted.QueuedLimit is { } limit) return TenantQuotaProblems.QueuedJobs(http.Response, caller.Tenant, limit);
            return await JobsApi.EnqueueAsync(job, queue);
        }
    }

    private static ProblemHttpResult Conflict(string title, string detail) =>
        TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: title, detail: detail);
}
