using System.ComponentModel;
using BatchRunner.Core;
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
    void Run(Guid jobId, string displayName, CancellationToken cancellationToken);

    /// <summary>What messages enqueued before <see cref="Run"/> existed name (up to 2026-12-01): kept so that they still run.</summary>
    [AutomaticRetry(Attempts = 0, OnAttemptsExceeded = AttemptsExceededAction.Fail)]
    [JobDisplayName("{1}")]
    [DisplayName("{1}")]
    Task RunAsync(Guid jobId, string displayName, CancellationToken cancellationToken);
}

/// <summary>
/// The Hangfire side of a job's life: the message that makes a worker run it, removed on cancel, handed back
/// when its node was lost, and its state kept in line with the job's. Hangfire delivers each message at least once;
/// the job record fences every attempt.
/// </summary>
/// <remarks>
/// <para>What each BatchRunner state is in Hangfire: queued → Enqueued (an array's parent: <see cref="ArrayParentState"/>;
/// its children get a message only when dispatched), waiting → Awaiting, a retry's back-off → Scheduled, starting and
/// running → Processing, succeeded → Succeeded, failed → Failed (reason and message), cancelled → Deleted. A worker
/// sets these for the jobs it runs; <see cref="SyncStatesAsync"/> for jobs that change outside a worker.</para>
/// <para>Messages enqueued before this type existed name <c>BatchRunner.Server.Execution.JobPerformer</c>, the class
/// that implements <see cref="IJobPerformer"/>: it is kept, and registered, so that they still run.</para>
/// <para>Hangfire's client is synchronous: every call to it here runs on <see cref="HangfireCalls"/>' threads, never blocking the
/// thread pool.</para>
/// </remarks>
public sealed class JobQueue(IBackgroundJobClient hangfire, JobStorage storage, JobStore store, Npgsql.NpgsqlDataSource db, HangfireCalls calls)
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
    public Task<string> EnqueueAsync(Guid id, string displayName, string queue, string tenant, CancellationToken ct) =>
        CreateAsync(id, displayName, PhysicalQueue(queue, tenant), new EnqueuedState(PhysicalQueue(queue, tenant)), ct);

    /// <summary>
    /// Creates the message of a stored job in the Hangfire state its row calls for: Awaiting while it waits for
    /// dependencies, <see cref="ArrayParentState"/> for an array's parent, Enqueued otherwise (in its tenant's Hangfire
    /// queue). The state may move on before the message exists (a dependency ended meanwhile): the row's sync flag catches
    /// that up.
    /// </summary>
    public async Task<string> CreateForAsync(JobRecord job, CancellationToken ct)
    {
        var physical = PhysicalQueue(job.Queue, job.Tenant);
        return await CreateAsync(job.Id, job.DisplayName, physical, await InitialStateAsync(job.Id, job.State, physical, job.Message, job.IsArrayParent ? job.Spec.Array : null, ct), ct);
    }

    /// <summary>As <see cref="CreateForAsync(JobRecord, CancellationToken)"/>, for a job found without a message.</summary>
    public async Task<string> CreateForAsync(NodeStore.StrandedJob job, CancellationToken ct)
    {
        ArraySpec? array = null;
        if (job.IsArrayParent) array = (await store.GetAsync(job.Id, ct))?.Spec.Array;
        var physical = PhysicalQueue(job.Queue, job.Tenant);
        return await CreateAsync(job.Id, job.DisplayName, physical, await InitialStateAsync(job.Id, job.State, physical, null, array, ct), ct);
    }

    private async Task<IState> InitialStateAsync(Guid id, string state, string physicalQueue, string? message, ArraySpec? array, CancellationToken ct)
    {
        if (state == JobState.Waiting) return HangfireStates.Awaiting(await AwaitingParentAsync(id, ct), physicalQueue, message);
        return array is { } a ? new ArrayParentState(a.Size, a.Parallelism) : new EnqueuedState(physicalQueue);
    }

    private async Task<string> CreateAsync(Guid id, string displayName, string physicalQueue, IState state, CancellationToken ct)
    {
        var (hangfireId, recorded) = await CreateRecordedMessageAsync(id, displayName, physicalQueue, state);
        if (!recorded) await store.SetHangfireJobIdAsync(id, hangfireId, ct);
        return hangfireId;
    }

    /// <summary>The parent Hangfire's Awaiting page shows for a waiting job: the first dependency that has a Hangfire
    /// message, else the first dependency's BatchRunner id. BatchRunner, not Hangfire, moves the job on (see
    /// <c>HangfireSetup</c>): the parent is for people to follow.</summary>
    private async Task<string> AwaitingParentAsync(Guid id, CancellationToken ct)
    {
        var links = await store.DependencyLinksAsync(id, dependents: false, ct);
        return links.FirstOrDefault(l => l.HangfireJobId is not null)?.HangfireJobId ?? links.FirstOrDefault()?.Job.ToString() ?? id.ToString();
    }

    /// <summary>
    /// Cancels a job (<see cref="JobStore.RequestCancelAsync"/>: an array's children with it) and deletes the messages that
    /// must stop: queued ones leave their queue, a running one's worker gets its cancellation token fired. The flag in the
    /// row is the backstop of both (a worker checks it, a delivered cancelled job runs nothing).
    /// </summary>
    /// <remarks>Only a job of <paramref name="tenant"/> (null: any tenant) is found.</remarks>
    public async Task<JobStore.CancelOutcome> CancelAsync(Guid id, string? tenant, CancellationToken ct)
    {
        var outcome = await store.RequestCancelAsync(id, tenant, ct);
        foreach (var hangfireId in outcome.HangfireJobIds) await DeleteAsync(hangfireId);
        return outcome;
    }

    /// <summary>Gives a queued job whose message will never run (<see cref="JobStore.FindOrphanedQueuedAsync"/>) a new one.
    /// Of several nodes doing this at once, one wins; the others delete the message they made. False when this one lost.</summary>
    public async Task<bool> ReplaceAsync(OrphanedJob orphan, CancellationToken ct)
    {
        var physical = PhysicalQueue(orphan.Queue, orphan.Tenant);
        var hangfireId = await CreateMessageAsync(orphan.Id, orphan.DisplayName, physical, new EnqueuedState(physical));
        if (await store.ReplaceHangfireJobIdAsync(orphan.Id, orphan.HangfireJobId, hangfireId, ct)) return true;
        await DeleteAsync(hangfireId);
        return false;
    }

    /// <summary>
    /// <see cref="CreateForAsync(JobRecord, CancellationToken)"/> for a job whose row is committed, so a job that exists: a
    /// database outage is waited out for up to <paramref name="deadline"/>, the message's creation and the record of its id
    /// each retried (a duplicate message runs nothing: attempts are fenced). Null when the database stayed away: a worker
    /// creates the message once it is back (NodeRegistry's rescue of stranded jobs). So an API answers 503 only when
    /// nothing was created, never for a job that will run.
    /// </summary>
    public async Task<string?> CreateAcceptedAsync(JobRecord job, TimeSpan deadline)
    {
        try
        {
            var physical = PhysicalQueue(job.Queue, job.Tenant);
            var state = await Durably.RunAsync(c => InitialStateAsync(job.Id, job.State, physical, job.Message, job.IsArrayParent ? job.Spec.Array : null, c), deadline: deadline);
            var (hangfireId, recorded) = await Durably.RunAsync(_ => CreateRecordedMessageAsync(job.Id, job.DisplayName, physical, state), deadline: deadline);
            if (!recorded) await Durably.RunAsync(c => store.SetHangfireJobIdAsync(job.Id, hangfireId, c), deadline: deadline);
            return hangfireId;
        }
        catch (Exception e) when (DatabaseErrors.IsOutage(e))
        {
            return null;
        }
    }

    /// <summary><see cref="CreateMessageAsync"/>, recording the message's id on the job in the same transaction where it can
    /// (<see cref="HangfireMessageIds"/>): true when it did, else the caller records it.</summary>
    private Task<(string HangfireId, bool Recorded)> CreateRecordedMessageAsync(Guid id, string displayName, string physicalQueue, IState state) =>
        calls.RunAsync(() =>
        {
            using var recording = HangfireMessageIds.Begin(id, store);
            var hangfireId = hangfire.Create<IJobPerformer>(physicalQueue, p => p.Run(id, displayName, CancellationToken.None), state);
            return (hangfireId, recording.Recorded == hangfireId);
        });

    /// <summary>The message names its queue itself (Hangfire's Job.Queue), so that it goes back to the same queue when it is
    /// bounced, rescheduled or retried; a message without one would go back to Hangfire's "default".</summary>
    private Task<string> CreateMessageAsync(Guid id, string displayName, string physicalQueue, IState state) =>
        calls.RunAsync(() => hangfire.Create<IJobPerformer>(physicalQueue, p => p.Run(id, displayName, CancellationToken.None), state));

    /// <summary>Removes a queued message, or fires the cancellation token of the worker running it.</summary>
    private Task DeleteAsync(string hangfireJobId) => calls.RunAsync(() => hangfire.Delete(hangfireJobId));

    /// <summary>Hands the message back to its queue (its node was lost).</summary>
    public Task RequeueAsync(string hangfireJobId) => calls.RunAsync(() => hangfire.Requeue(hangfireJobId));

    /// <summary>A job that failed outside a worker (its node was lost for good): Hangfire's Failed, with the reason.</summary>
    public Task FailAsync(string hangfireJobId, string reason, string message) =>
        calls.RunAsync(() => hangfire.ChangeState(hangfireJobId, HangfireStates.Failed(reason, message)));

    /// <summary>
    /// Brings the Hangfire state of every job flagged by a transition made outside a worker (a dependency resolved, an
    /// array ended) in line with its row. Idempotent: a message already in the right state is left alone, and a message
    /// a worker holds (Processing) is never moved to Enqueued again. Returns how many were looked at.
    /// </summary>
    public Task<int> SyncStatesAsync(CancellationToken ct) => store.SyncHangfireStatesAsync(item => calls.RunAsync(() =>
    {
        using var connection = storage.GetConnection();
        var current = connection.GetStateData(item.HangfireJobId)?.Name;
        IState? target = item.State switch
        {
            JobState.Queued or JobState.Running when current == AwaitingState.StateName =>
                item.Array is { } a ? new ArrayParentState(a.Size, a.Parallelism) : new EnqueuedState(PhysicalQueue(item.Queue, item.Tenant)),
            JobState.Succeeded when current != SucceededState.StateName => HangfireStates.Succeeded(item.Message),
            JobState.Failed when current != FailedState.StateName => HangfireStates.Failed(item.Reason, item.Message),
            JobState.Cancelled when current != DeletedState.StateName => HangfireStates.Deleted(item.Reason, item.Message),
            _ => null,
        };
        if (target is not null && current is not null) hangfire.ChangeState(item.HangfireJobId, target, current);
    }), ct);

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
