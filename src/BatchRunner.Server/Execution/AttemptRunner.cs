using BatchRunner.Server.Execution.Phases;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Runs one attempt through its phases: inputs → inputsFrom → image → disk → root filesystem → container → outputs. Each phase owns one
/// resource; the runner starts them in order, stops at the first that ends the attempt, and releases every
/// phase it started in reverse order, whatever happened. <see cref="Outcomes.Decide"/> says how the attempt
/// ends; recording that is the executor's job, which the runner calls at the right moment.
/// </summary>
/// <remarks>
/// When the record is made: a final end (<see cref="AttemptEnd.Finished"/>: succeeded or failed, with its exit, usage and
/// outputs) is recorded as soon as it is known, before the phases release the container, the root filesystem and the
/// job's disk; by then the container's init has exited, which in its own PID namespace means every process of the
/// container is gone, its usage has been read from its cgroup and its outputs are off its disk, so nothing the record
/// says can change. Releasing then only removes what no one uses any more; if the worker dies before it is done, the
/// <see cref="NodeJanitor"/> and the runtime's orphan cleanup remove it at the next start, as after any crash. Any other
/// end (a retry, a requeue, fencing) is recorded after the release, as the next attempt may need what this one held.
/// </remarks>
public sealed partial class AttemptRunner
{
    private readonly IReadOnlyList<IAttemptPhase> _phases;
    private readonly IAttemptStore _store;
    private readonly DataPaths _paths;
    private readonly NodeIdentity _node;
    private readonly TimeProvider _time;
    private readonly ILogger<AttemptRunner> _log;
    private readonly CancelSignal? _cancels;

    /// <param name="cancels">Wakes the attempt when its job's cancel is requested (null: only Hangfire's token and the flag poll do).</param>
    public AttemptRunner(InputsPhase inputs, InputsFromPhase inputsFrom, ImagePhase image, DiskPhase disk, RootfsPhase rootfs, ContainerPhase container, OutputsPhase outputs,
        IAttemptStore store, DataPaths paths, NodeIdentity node, TimeProvider time, ILogger<AttemptRunner> log, CancelSignal? cancels = null)
    {
        // The order of an attempt. A new phase is one more entry here. Inputs first: a job whose inputs (its own, or a
        // dependency's outputs) cannot be had fails before a long pull.
        _phases = [inputs, inputsFrom, image, disk, rootfs, container, outputs];
        _store = store;
        _paths = paths;
        _node = node;
        _time = time;
        _log = log;
        _cancels = cancels;
    }

    /// <summary>Runs attempt <paramref name="attempt"/> of <paramref name="job"/> (read before the attempt began) on
    /// <paramref name="reservation"/>, and has <paramref name="record"/> record how it ended (once; see the remarks for when).</summary>
    /// <exception cref="Exception">A database outage (<see cref="DatabaseErrors.IsOutage"/>) is not the job's failure: it
    /// propagates, after every phase was released, and the job is delivered again. What <paramref name="record"/> throws
    /// propagates too, after the release.</exception>
    public async Task RunAsync(JobRecord job, int attempt, Reservation reservation,
        CancellationToken hangfire, CancellationToken stopping, CancellationToken fenced, Func<AttemptEnd, Task> record)
    {
        using var cancelWatch = _cancels?.WatchJob(job.Id);
        using var signals = new StopSignals(TimeSpan.FromSeconds(job.Spec.TimeoutSeconds), _time, hangfire, stopping, fenced,
            c => _store.IsCancelRequestedAsync(job.Id, c), cancelWatch?.Token ?? default);
        var containerId = _node.ContainerId(job.Id, attempt);
        var context = new AttemptContext(job, attempt, reservation, containerId, _paths.RunDir(containerId), signals);
        var started = new Stack<IAttemptPhase>();
        AttemptEnd? afterRelease;
        try
        {
            AttemptResult? result = null;
            try
            {
                foreach (var phase in _phases)
                {
                    started.Push(phase);
                    result = await phase.RunAsync(context);
                    if (result is not null) break;
                }
                result ??= context.Run is { } run
                    ? new AttemptResult.Exited(run.Exit, run.Cause, run.Usage with { DiskBytes = context.DiskUsage?.PeakUsedBytes }, context.Outputs,
                        context.DiskUsage, context.OutputsNote, run.LastStderrLine) { Stop = run.Stop }
                    : throw new InvalidOperationException("the attempt's phases ended without running the container");
            }
            catch (Exception e) when (e is not OperationCanceledException && !DatabaseErrors.IsOutage(e))
            {
                // A bug or an unexpected host error must still end the job visibly, not leave it "running".
                LogUnexpected(_log, e, job.Id, attempt);
                result = new AttemptResult.Failed(Core.FailureReason.StartFailed, $"internal error on node {_node.Name}: {e.Message}", Infrastructure: false);
            }
            var end = Outcomes.Decide(result, job.Spec, attempt);
            // The image's digest is recorded with the running mark; an attempt that resolved its image and ends, or is
            // retried, before its container ran records it now, so that its end still names what it was to run.
            if (context.Image is { } image && context.Container is null && end is AttemptEnd.Finished or AttemptEnd.Retry)
                await Durably.RunAsync(c => _store.SetImageDigestAsync(job.Id, attempt, image.ManifestDigest, c));
            afterRelease = end is AttemptEnd.Finished ? null : end;
            // A final end is recorded before the release (see the remarks): the job is visible as ended that much sooner.
            if (afterRelease is null) await record(end);
        }
        finally
        {
            while (started.TryPop(out var phase))
            {
                try { await phase.ReleaseAsync(context); }
                catch (Exception e) { LogReleaseFailed(_log, e, job.Id, phase.GetType().Name); }
            }
        }
        if (afterRelease is not null) await record(afterRelease);
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Job {JobId}: attempt {Attempt} failed unexpectedly")]
    private static partial void LogUnexpected(ILogger log, Exception e, Guid jobId, int attempt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: releasing what {Phase} held failed")]
    private static partial void LogReleaseFailed(ILogger log, Exception e, Guid jobId, string phase);
}
