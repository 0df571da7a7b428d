using System.ComponentModel;
using Hangfire;
using Hangfire.States;

namespace BatchRunner.Server.Storage;

/// <summary>
/// The Hangfire job that runs a BatchRunner job. Its only argument is the BatchRunner job id (the spec lives in
/// batchrunner.jobs), and its display name is the BatchRunner job's name, not a C# signature. Implemented by the
/// worker (Execution/JobPerformer); the API and the nodes enqueue it through <see cref="JobQueue"/> without
/// knowing the worker.
/// </summary>
public interface IJobPerformer
{
    // BatchRunner records every outcome itself; Hangfire must not re-run a job that failed by its own
    // fault (a non-zero exit). Shutdown requeues happen through the cancellation path, not retries.
    // (Hangfire reads these attributes from the enqueued type's method: this interface's, for new messages.)
    [AutomaticRetry(Attempts = 0, OnAttemptsExceeded = AttemptsExceededAction.Fail)]
    [JobDisplayName("{1}")]
    [DisplayName("{1}")]
    Task RunAsync(Guid jobId, string displayName, CancellationToken cancellationToken);
}

/// <summary>
/// The Hangfire side of a job's life: the message that makes a worker run it, removed on cancel, handed back
/// when its node was lost. Hangfire delivers each message at least once; the job record fences every attempt.
/// </summary>
/// <remarks>
/// Messages enqueued before this type existed name <c>BatchRunner.Server.Execution.JobPerformer</c>, the class
/// that implements <see cref="IJobPerformer"/>: it is kept, and registered, so that they still run.
/// </remarks>
public sealed class JobQueue(IBackgroundJobClient hangfire, JobStore store, Npgsql.NpgsqlDataSource db)
{
    /// <summary>
    /// The Hangfire queue that holds <paramref name="tenant"/>'s jobs of BatchRunner queue <paramref name="queue"/>: one per
    /// tenant, so that workers can pick the tenant whose turn it is (<see cref="FairShareQueue"/>). The default tenant's is
    /// the queue's own name, the one every message had before tenants existed, so that those still run and a single-tenant
    /// installation keeps its queue names. Unique: queue names never contain "--" (BatchRunnerOptions.Validate).
    /// </summary>
    public static string PhysicalQueue(string queue, string tenant) => tenant == JobRecord.DefaultTenant ? queue : $"{queue}--{tenant}";

    /// <summary>Creates the message for the stored job <paramref name="id"/> in its tenant's Hangfire queue for <paramref name="queue"/>
    /// and records its Hangfire id on the job (what cancel deletes). Call once the job and its inputs are in place.</summary>
    public async Task<string> EnqueueAsync(Guid id, string displayName, string queue, string tenant, CancellationToken ct)
    {
        var hangfireId = Create(id, displayName, PhysicalQueue(queue, tenant));
        await store.SetHangfireJobIdAsync(id, hangfireId, ct);
        return hangfireId;
    }

    /// <summary>Gives a queued job whose message will never run (<see cref="JobStore.FindOrphanedQueuedAsync"/>) a new one.
    /// Of several nodes doing this at once, one wins; the others delete the message they made. False when this one lost.</summary>
    public async Task<bool> ReplaceAsync(OrphanedJob orphan, CancellationToken ct)
    {
        var hangfireId = Create(orphan.Id, orphan.DisplayName, PhysicalQueue(orphan.Queue, orphan.Tenant));
        if (await store.ReplaceHangfireJobIdAsync(orphan.Id, orphan.HangfireJobId, hangfireId, ct)) return true;
        hangfire.Delete(hangfireId);
        return false;
    }

    /// <summary>
    /// <see cref="EnqueueAsync"/> for a job whose row is committed, so a job that exists: a database outage is
    /// waited out for up to <paramref name="deadline"/>, the message's creation and the record of its id each
    /// retried (a duplicate message runs nothing: attempts are fenced). Null when the database stayed away:
    /// a worker enqueues the job once it is back (NodeRegistry's rescue of stranded jobs). So an API answers
    /// 503 only when nothing was created, never for a job that will run.
    /// </summary>
    public async Task<string?> EnqueueAcceptedAsync(Guid id, string displayName, string queue, string tenant, TimeSpan deadline)
    {
        try
        {
            var hangfireId = await Durably.RunAsync(_ => Task.FromResult(Create(id, displayName, PhysicalQueue(queue, tenant))), deadline: deadline);
            await Durably.RunAsync(c => store.SetHangfireJobIdAsync(id, hangfireId, c), deadline: deadline);
            return hangfireId;
        }
        catch (Exception e) when (DatabaseErrors.IsOutage(e))
        {
            return null;
        }
    }

    /// <summary>The message names its queue itself (Hangfire's Job.Queue), so that it goes back to the same queue when it is
    /// bounced, rescheduled or retried; a message without one would go back to Hangfire's "default".</summary>
    private string Create(Guid id, string displayName, string physicalQueue) =>
        hangfire.Create<IJobPerformer>(physicalQueue, p => p.RunAsync(id, displayName, CancellationToken.None), new EnqueuedState(physicalQueue));

    /// <summary>Removes a queued message, or fires the cancellation token of the worker running it.</summary>
    public void Delete(string hangfireJobId) => hangfire.Delete(hangfireJobId);

    /// <summary>Hands the message back to its queue (its node was lost).</summary>
    public void Requeue(string hangfireJobId) => hangfire.Requeue(hangfireJobId);

    /// <summary>
    /// Removes a finished job's message from Hangfire's tables at once (its states and parameters go with it, by
    /// Hangfire's own foreign keys), as Hangfire's expiration would a day later: a deleted job leaves nothing in the
    /// dashboard. A message that is not a number (not Hangfire.PostgreSql's) is left alone.
    /// </summary>
    public async Task PurgeAsync(string hangfireJobId, CancellationToken ct)
    {
        if (!long.TryParse(hangfireJobId, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var id)) return;
        await using var cmd = db.CreateCommand("""
            delete from hangfire.jobqueue where jobid = @id;
            delete from hangfire.job where id = @id;
            """);
        cmd.Parameters.AddWithValue("id", id);
        await cmd.ExecuteNonQueryAsync(ct);
    }
}
