using BatchRunner.Server.Notifications;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Api;

/// <summary>The job document of <c>GET /api/v1/jobs/{id}</c>, for the API and for webhooks: one shape in one place.</summary>
public sealed class JobDocuments(JobStore store, JobNodeLiveness liveness) : IJobDocuments
{
    /// <summary>The job with its inputs, attempts and node liveness; null when there is no such job in <paramref name="scope"/>
    /// (a tenant; null: any tenant).</summary>
    public async Task<JobDto?> GetAsync(Guid id, string? scope, CancellationToken ct)
    {
        var job = await store.GetAsync(id, scope, ct);
        if (job is null) return null;
        return JobDto.From(job).WithInputs(job).WithAttempts(await store.GetAttemptsAsync(job.Id, ct)).WithNodeAlive(await liveness.GetAsync([job.Id], ct));
    }

    async Task<object?> IJobDocuments.GetAsync(Guid jobId, CancellationToken ct) => await GetAsync(jobId, scope: null, ct);
}
