using System.Collections.Concurrent;
using BatchRunner.Core;
using BatchRunner.Runtime;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Runs one delivery of one job on this node: admission (<see cref="NodeFit"/>, a <see cref="NodeReservations"/>
/// reservation) → the attempt's begin in the store → the <see cref="AttemptRunner"/> and its phases → recording
/// how the attempt ended (<see cref="AttemptEnd"/>). The phases own the attempt's resources (rootfs mount, run
/// directory, bundle, container, cgroup) and this class the reservation; each is released on every path, and
/// after a crash by the <see cref="ContainerWatchdog"/> (containers) and the <see cref="NodeJanitor"/> (the rest).
/// </summary>
/// <remarks>
/// Delivery is at least once (Hangfire). Every write is fenced by the attempt number, and a new attempt
/// starts only when the previous one's node instance is dead, so a duplicate delivery runs nothing.
/// How an attempt leaves this method:
/// <list type="bullet">
/// <item>returns: the job succeeded (<see cref="AttemptEnd.Finished"/>, recorded unless a newer attempt or a final state
/// exists), or it had already succeeded;</item>
/// <item><see cref="JobFailedException"/>: the job failed (recorded, or already so): Hangfire's Failed, with its reason and
/// message (Hangfire's own retry is off for these jobs);</item>
/// <item><see cref="JobStateException"/>: the job was cancelled, waits for dependencies, or is an array's parent: its Hangfire
/// message goes to the state that says so (<see cref="HangfireStateMirror"/>), never Succeeded;</item>
/// <item><see cref="JobRescheduleException"/>: this node cannot run it now (can never fit it, is full, the queue
/// is at its limit, the tenant at its maxRunning quota: the job's message says which, in words), it failed and will be
/// retried after a back-off (<see cref="AttemptEnd.Retry"/>), this node is fenced (<see cref="AttemptEnd.Fenced"/>:
/// nothing recorded; the next attempt closes this one as node_lost; or fenced already when the job came, so no attempt
/// begins, and the job waits a heartbeat), or the job runs on another live node or already in
/// this process (a duplicate delivery looks again later);</item>
/// <item><see cref="OperationCanceledException"/>: this worker is shutting down; the job was requeued
/// (<see cref="AttemptEnd.Requeue"/>);</item>
/// <item>a database outage (<see cref="DatabaseErrors.IsOutage"/>) that outlasted <see cref="Durably"/>'s retries:
/// nothing more could be recorded; the attempt stays open until its node instance is dead or delivers it again.</item>
/// </list>
/// </remarks>
public sealed partial class JobExecutor(
    IAttemptStore store,
    AttemptRunner runner,
    NodeReservations reservations,
    IClusterAllocation cluster,
    NodeIdentity node,
    INodeFence fence,
    IHostApplicationLifetime lifetime,
    IOptions<BatchRunnerOptions> options,
    ILogger<JobExecutor> log)
{
    private static readonly TimeSpan AdmissionWait = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan NeverFitsDelay = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan QueueFullDelay = TimeSpan.FromSeconds(1);

    private readonly ConcurrentDictionary<Guid, byte> _active = new();

    /// <param name="turn">This process's turn to admit a job, when the delivery came with one: given back as soon as the
    /// job's attempt has begun or it went back to the queue, so that the next job is fetched against the new shares.</param>
    public async Task ExecuteAsync(Guid jobId, CancellationToken hangfireToken, FetchTurn? turn = null)
    {
        using var heldTurn = turn;
        // One delivery of a job at a time in this process (Hangfire may deliver again while an attempt still
        // runs here, e.g. after a requeue); a duplicate leaves the running attempt alone.
        if (!_active.TryAdd(jobId, 0))
        {
            LogAlreadyRunningHere(log, jobId);
            throw new JobRescheduleException("an attempt of this job runs in this process; this delivery looks again later", HangfireStateMirror.RunningElsewhereDelay);
        }
        try { await ExecuteOnceAsync(jobId, hangfireToken, turn); }
        finally { _active.TryRemove(jobId, out _); }
    }

    private async Task ExecuteOnceAsync(Guid jobId, CancellationToken hangfireToken, FetchTurn? turn)
    {
        // As the fetch that delivered it read it, in the fetch's round trip; else (a delivery of another kind) read now.
        var job = turn?.FetchedJob is { } fetched && fetched.Id == jobId ? fetched : await Durably.RunAsync(c => store.GetForAttemptAsync(jobId, c));
        if (job is null)
        {
            LogNothingToRun(log, jobId);
            return;
        }
        if (JobState.IsFinal(job.State) || job.CancelRequested || job.State == JobState.Waiting || job.IsArrayParent)
        {
            LogNothingToRun(log, jobId);
            await EndAsync(job, redelivered: JobState.IsFinal(job.State));
            return;
        }
        using var scope = log.BeginScope(new Dictionary<string, object> { ["JobId"] = jobId });
        // A fenced node begins nothing: its attempt would be stopped at once and count as lost, and the job, back in the
        // queue, fetched here again, so that a node fenced for a heartbeat's time used up a job's retries in milliseconds.
        // The fence lifts with the next heartbeat that succeeds; until then the job waits a heartbeat, for any node.
        if (fence.Fenced.IsCancellationRequested)
        {
            LogNotWhileFenced(log, jobId, node.Name);
            throw new JobRescheduleException($"node {node.Name} is fenced (its heartbeats failed); it begins no attempt until one succeeds",
                TimeSpan.FromSeconds(options.Value.HeartbeatSeconds));
        }
        var reservation = await AdmitAsync(job, turn, hangfireToken);
        try
        {
            int? queueLimit = options.Value.QueueLimits.TryGetValue(job.Queue, out var l) ? l : null;
            var begun = await Durably.RunAsync(c => store.BeginAttemptAsync(jobId, node.Name, fence.Instance, job.Queue, queueLimit, c));
            // The job is starting (its tenant's share counts it) or goes back: the next fetch may decide.
            turn?.Dispose();
            switch (begun)
            {
                case AttemptStart.QueueFull full:
                    await SayWhyItWaitsAsync(job, WaitReasons.QueueLimit(job.Queue, full.Limit));
                    throw new JobRescheduleException($"queue {job.Queue} is at its limit of {full.Limit} running jobs", QueueFullDelay);
                case AttemptStart.TenantQuotaFull quota:
                    var why = WaitReasons.TenantQuota(quota);
                    await SayWhyItWaitsAsync(job, why);
                    throw new JobRescheduleException(why, QueueFullDelay);
                case AttemptStart.NothingToRun:
                    LogNothingToRun(log, jobId);
                    await EndAsync(await Durably.RunAsync(c => store.GetForAttemptAsync(jobId, c)) ?? job, redelivered: false);
                    return;
                case AttemptStart.Started start:
                    if (start.Attempt == 1)
                        BatchRunnerMetrics.JobQueueWaitSeconds.WithLabels(job.Queue).Observe(Math.Max(0, (DateTimeOffset.UtcNow - job.CreatedAt).TotalSeconds));
                    LogAttemptStarted(log, jobId, start.Attempt, node.Name);
                    if (Outcomes.BeforeRun(job.Spec, start.LostAttempts) is { } ended) await RecordAsync(job, start.Attempt, ended);
                    else await runner.RunAsync(job, start.Attempt, reservation, hangfireToken, lifetime.ApplicationStopping, fence.Fenced,
                        end => RecordAsync(job, start.Attempt, end));
                    return;
            }
        }
        finally
        {
            // Every exit path gives the node's CPUs, memory and GPUs back.
            reservations.Release(jobId);
        }
    }

    /// <summary>
    /// A job this node can never run goes back for another node; one that fits but not now waits briefly for
    /// capacity here, then goes back to its queue (keeping its place: Hangfire's PostgreSQL queue is ordered by job id).
    /// </summary>
    private async Task<Reservation> AdmitAsync(JobRecord job, FetchTurn? turn, CancellationToken hangfireToken)
    {
        // Against this node's own settings, whatever the API node that accepted the job allowed.
        var offer = reservations.Offer(options.Value.Labels) with { Policy = NodeOffer.PolicyOf(options.Value.Isolation) };
        if (NodeFit.WhyNever(job.Spec, offer) is { } never)
            throw new JobRescheduleException($"node {node.Name} can never run it: {never}", NeverFitsDelay);
        if (reservations.TryReserve(job.Id, job.Spec.Resources) is { } reservation) return reservation;
        // Each release may be the one that makes room (other fetched jobs compete for it: FairShare's concurrent turns),
        // so try again after every release until the wait is over.
        var deadline = DateTime.UtcNow + AdmissionWait;
        for (var left = AdmissionWait; left > TimeSpan.Zero && !hangfireToken.IsCancellationRequested; left = deadline - DateTime.UtcNow)
        {
            await reservations.WaitForReleaseAsync(left, hangfireToken);
            if (reservations.TryReserve(job.Id, job.Spec.Resources) is { } late) return late;
        }
        // Other nodes may take it; this one fetches others until a reservation is released here.
        turn?.NotNow();
        // The message describes the cluster (the job may run on any node), this node only declines it.
        if (reservations.DiskShortFor(job.Spec.Resources) is { } pressure)
        {
            await SayWhyItWaitsAsync(job, $"waiting for disk space: node {node.Name}: {pressure}");
            throw new JobRescheduleException($"node {node.Name}: {pressure}");
        }
        await SayWhyItWaitsAsync(job, WaitReasons.Capacity(job.Spec, await cluster.ListLiveWithAllocationAsync(hangfireToken)));
        throw new JobRescheduleException($"node {node.Name} is full");
    }

    /// <summary>Records why the job waits, unless its message says so already. Best effort: a database outage only loses
    /// the message (the next bounce writes it), never the job's place in the queue.</summary>
    private async Task SayWhyItWaitsAsync(JobRecord job, string message)
    {
        if (job.Message == message) return;
        try { await store.SetWaitReasonAsync(job.Id, message, CancellationToken.None); }
        catch (Exception e) when (DatabaseErrors.IsOutage(e)) { LogWaitReasonLost(log, job.Id, e.Message); }
    }

    private async Task RecordAsync(JobRecord job, int attempt, AttemptEnd end)
    {
        var jobId = job.Id;
        switch (end)
        {
            case AttemptEnd.Fenced:
                // No writes: this node cannot reach the database. The next attempt (here or on another node)
                // closes this one as node_lost.
                LogFenced(log, jobId, attempt);
                throw new JobRescheduleException($"node {node.Name} was fenced");
            case AttemptEnd.Requeue requeue:
                await Durably.RunAsync(c => store.RequeueAsync(jobId, attempt, requeue.Message, c));
                LogRequeued(log, jobId, attempt);
                throw new OperationCanceledException("worker shutting down; job requeued");
            case AttemptEnd.Retry retry:
                if (await Durably.RunAsync(c => store.RetryLaterAsync(jobId, attempt, retry.Outcome, retry.Delay, c)))
                {
                    LogRetrying(log, jobId, attempt, retry.Outcome.Reason!, retry.Outcome.Message ?? "", retry.Delay.TotalSeconds);
                    throw new JobRescheduleException($"attempt {attempt} failed ({retry.Outcome.Reason}); retry in {retry.Delay.TotalSeconds:0.#}s", retry.Delay);
                }
                // A stale attempt: the finish below is refused too, and says so.
                await FinishAsync(job, attempt, retry.Outcome);
                return;
            case AttemptEnd.Finished finished:
                await FinishAsync(job, attempt, finished.Outcome);
                return;
            default:
                throw new ArgumentOutOfRangeException(nameof(end), end, "an attempt end this executor cannot record");
        }
    }

    /// <summary>Records the end, then ends this delivery as the job's record now says (ours, or a newer one's when stale).</summary>
    private async Task FinishAsync(JobRecord job, int attempt, JobOutcome outcome)
    {
        if (await Durably.RunAsync(c => store.FinishAsync(job.Id, attempt, outcome, c)))
        {
            BatchRunnerMetrics.JobsFinished.WithLabels(job.Queue, outcome.State, outcome.Reason ?? BatchRunnerMetrics.NoReason).Inc();
            LogFinished(log, job.Id, attempt, outcome.State, outcome.Reason ?? "", outcome.Message ?? "");
            await EndAsync(job with { State = outcome.State, Reason = outcome.Reason, Message = outcome.Message }, redelivered: false);
            return;
        }
        LogStale(log, job.Id, attempt);
        await EndAsync(await Durably.RunAsync(c => store.GetForAttemptAsync(job.Id, c)) ?? job, redelivered: false);
    }

    /// <summary>Ends this delivery in the Hangfire state the job's record calls for (<see cref="HangfireStateMirror"/>).</summary>
    private Task EndAsync(JobRecord job, bool redelivered) =>
        HangfireStateMirror.EndAsync(job, async () =>
        {
            var links = await Durably.RunAsync(c => store.DependencyLinksAsync(job.Id, dependents: false, c));
            return links.FirstOrDefault(l => l.HangfireJobId is not null)?.HangfireJobId ?? links.FirstOrDefault()?.Job.ToString() ?? job.Id.ToString();
        }, redelivered);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Job {JobId}: why it waits was not recorded: {Error}")]
    private static partial void LogWaitReasonLost(ILogger log, Guid jobId, string error);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: attempt {Attempt} started on {Node}")]
    private static partial void LogAttemptStarted(ILogger log, Guid jobId, int attempt, string node);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: nothing to run (ended, cancelled, waiting, an array's parent, or running on a live node)")]
    private static partial void LogNothingToRun(ILogger log, Guid jobId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: delivered again while an attempt of it runs in this process; leaving that one alone")]
    private static partial void LogAlreadyRunningHere(ILogger log, Guid jobId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: attempt {Attempt} ended {State} {Reason}: {Message}")]
    private static partial void LogFinished(ILogger log, Guid jobId, int attempt, string state, string reason, string message);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: attempt {Attempt} failed ({Reason}: {Message}); retrying in {Seconds}s")]
    private static partial void LogRetrying(ILogger log, Guid jobId, int attempt, string reason, string message, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: result of attempt {Attempt} ignored (a newer attempt or a final state exists)")]
    private static partial void LogStale(ILogger log, Guid jobId, int attempt);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: not begun on {Node}, which is fenced until a heartbeat succeeds; delivered again after one")]
    private static partial void LogNotWhileFenced(ILogger log, Guid jobId, string node);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: attempt {Attempt} stopped because this node is fenced")]
    private static partial void LogFenced(ILogger log, Guid jobId, int attempt);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: attempt {Attempt} interrupted by shutdown; requeued")]
    private static partial void LogRequeued(ILogger log, Guid jobId, int attempt);
}
