using BatchRunner.Core;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Nodes;

/// <summary>
/// This worker's membership in the cluster: registers the node record at start, heartbeats it, and on
/// every beat looks for attempts whose node died (its heartbeat is older than its lease) and hands
/// their jobs back to the queue. A worker that cannot heartbeat for two intervals fences itself: its
/// containers are killed (<see cref="Fenced"/>) before any other node can consider it dead, so two
/// attempts of one job never run at once; not while its embedded database is restarting (<see cref="FencingRule"/>).
/// </summary>
public sealed partial class NodeRegistry(
    NodeStore nodes,
    JobStore jobs,
    NodeIdentity node,
    NodeReservations resources,
    NodeDisk disk,
    JobQueue queue,
    NodeAddress address,
    IDatabaseAvailability database,
    IOptions<BatchRunnerOptions> options,
    ILogger<NodeRegistry> log) : BackgroundService, INodeFence
{
    private readonly BatchRunnerOptions _options = options.Value;
    private CancellationTokenSource _fenced = new();
    private long _lastBeatTicks = Environment.TickCount64;
    private bool _underReserve;

    public Guid Instance { get; } = Guid.NewGuid();

    /// <summary>Cancelled while this node cannot prove it is alive; running attempts must stop.</summary>
    public CancellationToken Fenced => _fenced.Token;

    /// <summary>What this node lets jobs ask for, published with its record for submission's checks.</summary>
    private NodePolicy Policy => NodeOffer.PolicyOf(_options.Isolation);

    public TimeSpan Interval => TimeSpan.FromSeconds(_options.HeartbeatSeconds);
    public TimeSpan Lease => LeaseOf(_options.HeartbeatSeconds);

    /// <summary>How long a node with this heartbeat stays alive without one: three intervals.</summary>
    public static TimeSpan LeaseOf(int heartbeatSeconds) => TimeSpan.FromSeconds(heartbeatSeconds) * 3;

    public override async Task StartAsync(CancellationToken ct)
    {
        await Durably.RunAsync(c => nodes.RegisterAsync(node.Name, Instance, _options.Labels, resources.Capacity,
            _options.Queues, Lease, c, Policy), ct, TimeSpan.FromMinutes(2));
        LogRegistered(log, node.Name, resources.Capacity.Cpus, Quantity.Human(resources.Capacity.MemoryBytes), resources.Capacity.Gpus);
        await base.StartAsync(ct);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval);
        do
        {
            try
            {
                if (!await nodes.HeartbeatAsync(node.Name, Instance, stoppingToken, address.Url, ReadDisk()))
                {
                    // Another process registered under our name: it owns the node now.
                    LogTakenOver(log, node.Name);
                    await nodes.RegisterAsync(node.Name, Instance, _options.Labels, resources.Capacity, _options.Queues, Lease, stoppingToken, Policy);
                }
                Interlocked.Exchange(ref _lastBeatTicks, Environment.TickCount64);
                if (_fenced.IsCancellationRequested)
                {
                    LogUnfenced(log, node.Name);
                    _fenced = new CancellationTokenSource();
                }
                await ReapAsync(stoppingToken);
                await RescueStrandedAsync(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { return; }
            catch (Exception e)
            {
                LogBeatFailed(log, e, node.Name);
                var now = Environment.TickCount64;
                var silent = TimeSpan.FromMilliseconds(now - Interlocked.Read(ref _lastBeatTicks));
                if (!_fenced.IsCancellationRequested &&
                    FencingRule.ShouldFence(now, Interlocked.Read(ref _lastBeatTicks), database.BackSinceTicks, database.IsRestarting, Interval))
                {
                    LogFencing(log, node.Name, silent.TotalSeconds);
                    await _fenced.CancelAsync();
                }
            }
        } while (await WaitNextAsync(timer, stoppingToken));
    }

    /// <summary>The data directory now, for the node record and the node's disk series; null when it cannot be read.</summary>
    private NodeDiskRecord? ReadDisk()
    {
        DiskStatus status;
        try { status = disk.Read(); }
        catch (IOException e)
        {
            LogDiskUnreadable(log, e, disk.DataDir);
            return null;
        }
        NodeMetrics.SetDisk(node.Name, status.FreeBytes, status.ReserveBytes, status.UnderReserve);
        if (status.UnderReserve != _underReserve)
        {
            _underReserve = status.UnderReserve;
            if (status.UnderReserve) LogUnderReserve(log, node.Name, status.Pressure!);
            else LogAboveReserve(log, node.Name, Quantity.Human(status.FreeBytes));
        }
        return new NodeDiskRecord(status.TotalBytes, status.FreeBytes, status.ReserveBytes, status.AvailableBytes, status.Pressure);
    }

    private static async Task<bool> WaitNextAsync(PeriodicTimer timer, CancellationToken ct)
    {
        try { return await timer.WaitForNextTickAsync(ct); }
        catch (OperationCanceledException) { return false; }
    }

    /// <summary>Jobs of dead nodes: retried through the queue when their policy allows, else failed.</summary>
    private async Task ReapAsync(CancellationToken ct)
    {
        foreach (var lost in await nodes.ReapLostAttemptsAsync(ct))
        {
            var lostCount = (await jobs.GetAttemptsAsync(lost.JobId, ct)).Count(a => a.Reason == FailureReason.NodeLost);
            if (lost.Spec.Retry.ShouldRetry(lostCount, FailureReason.NodeLost, null, infrastructureFailure: true))
            {
                if (lost.HangfireJobId is not null) await queue.RequeueAsync(lost.HangfireJobId);
                LogRequeuedLost(log, lost.JobId, lost.Attempt, lost.Node);
            }
            else
            {
                var message = $"node {lost.Node} was lost {lostCount} times; no retries left";
                if (await jobs.FailLostAsync(lost.JobId, lost.Attempt, message, ct) && lost.HangfireJobId is not null)
                    await queue.FailAsync(lost.HangfireJobId, FailureReason.NodeLost, message);
                LogFailedLost(log, lost.JobId, lost.Attempt, lost.Node);
            }
        }
    }

    /// <summary>A job accepted by an API (or given a slot of its array) by a process that died before creating its Hangfire
    /// message gets it here, in the state its row calls for (an array's undispatched children are not stranded).</summary>
    private async Task RescueStrandedAsync(CancellationToken ct)
    {
        foreach (var stranded in await nodes.StrandedJobsAsync(TimeSpan.FromSeconds(30), ct))
        {
            await queue.CreateForAsync(stranded, ct);
            LogRescued(log, stranded.Id);
        }
    }

    public override async Task StopAsync(CancellationToken ct)
    {
        await base.StopAsync(ct);
        try { await nodes.MarkStoppedAsync(node.Name, Instance, ct); }
        catch (Exception e) when (DatabaseErrors.IsOutage(e)) { /* the lease expires on its own */ }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Node {Node} registered: {Cpus} CPUs, {Memory} memory, {Gpus} GPUs")]
    private static partial void LogRegistered(ILogger log, string node, double cpus, string memory, int gpus);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Node {Node}: {Pressure}")]
    private static partial void LogUnderReserve(ILogger log, string node, string pressure);

    [LoggerMessage(Level = LogLevel.Information, Message = "Node {Node}: free space ({Free}) is above the reserve again; jobs start")]
    private static partial void LogAboveReserve(ILogger log, string node, string free);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cannot read the free space of {DataDir}")]
    private static partial void LogDiskUnreadable(ILogger log, Exception e, string dataDir);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Node {Node}: heartbeat failed")]
    private static partial void LogBeatFailed(ILogger log, Exception e, string node);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Node {Node}: another process had registered this node name; registering again")]
    private static partial void LogTakenOver(ILogger log, string node);

    [LoggerMessage(Level = LogLevel.Error, Message = "Node {Node}: no heartbeat for {Seconds:0.#}s; fencing: running containers are stopped and their jobs requeued")]
    private static partial void LogFencing(ILogger log, string node, double seconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "Node {Node}: heartbeats succeed again; no longer fenced")]
    private static partial void LogUnfenced(ILogger log, string node);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: node {Node} lost during attempt {Attempt}; requeued")]
    private static partial void LogRequeuedLost(ILogger log, Guid jobId, int attempt, string node);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: node {Node} lost during attempt {Attempt}; no retries left, failed")]
    private static partial void LogFailedLost(ILogger log, Guid jobId, int attempt, string node);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: accepted but never enqueued (its API process died); enqueued now")]
    private static partial void LogRescued(ILogger log, Guid jobId);
}
