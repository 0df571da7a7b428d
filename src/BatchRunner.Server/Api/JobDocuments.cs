using BatchRunner.Server.Notifications;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Api;

/// <summary>The job document of <c>GET /api/v1/jobs/{id}</c>, for the API and for webhooks, and the items of job lists:
/// one shape in one place.</summary>
public sealed class JobDocuments(JobStore store, JobNodeLiveness liveness) : IJobDocuments
{
    /// <summary>The job with its inputs, attempts, node liveness and (an array) children per state; null when there is no
    /// such job in <paramref name="scope"/> (a tenant; null: any tenant).</summary>
    public async Task<JobDto?> GetAsync(Guid id, string? scope, CancellationToken ct) =>
        await store.GetDocumentAsync(id, scope, ct) is { } d
            ? JobDto.From(d.Job).WithNodeAlive(d.NodeAlive).WithChildCounts(d.ChildCounts).WithInputs(d.Job).WithAttempts(d.Attempts)
            : null;

    /// <summary>The document of a job already read (found by the caller within its tenant).</summary>
    public async Task<JobDto> DocumentAsync(JobRecord job, CancellationToken ct) =>
        (await ListItemsAsync([job], ct))[0].WithInputs(job).WithAttempts(await store.GetAttemptsAsync(job.Id, ct));

    /// <summary>Jobs as lists show them, with nodeAlive and (for arrays) children per state: two queries for the page.</summary>
    public async Task<IReadOnlyList<JobDto>> ListItemsAsync(IReadOnlyList<JobRecord> items, CancellationToken ct)
    {
        var alive = await liveness.GetAsync(items.Select(j => j.Id).ToList(), ct);
        var parents = items.Where(j => j.IsArrayParent).Select(j => j.Id).ToList();
        var counts = await store.CountChildrenAsync(parents, ct);
        return items.Select(j => JobDto.From(j).WithNodeAlive(alive).WithChildCounts(counts)).ToList();
    }

    async Task<object?> IJobDocuments.GetAsync(Guid jobId, CancellationToken ct) => await GetAsync(jobId, scope: null, ct);
}
