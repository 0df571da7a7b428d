using BatchRunner.Server.Execution.Phases;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Runs one attempt through its phases: inputs → inputsFrom → image → disk → root filesystem → container → outputs. Each phase owns one
/// resource; the runner starts them in order, stops at the first that ends the attempt, and releases every
/// phase it started in reverse order, whatever happened. Then <see cref="Outcomes.Decide"/> says how the attempt
/// ends; recording that is the executor's job.
/// </summary>
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

    /// <summary>Runs attempt <paramref name="attempt"/> of <paramref name="job"/> (read before the attempt began) on <paramref name="reservation"/>.</summary>
    /// <exception cref="Exception">A database outage (<see cref="DatabaseErrors.IsOutage"/>) is not the job's failure: it
    /// propagates, after every phase was released, and the job is delivered again.</exception>
    public async Task<AttemptEnd> RunAsync(JobRecord job, int attempt, Reservation reservation,
        CancellationToken hangfire, CancellationToken stopping, CancellationToken fenced)
    {
        using var cancelWatch = _cancels?.WatchJob(job.Id);
        using var signals = new StopSignals(TimeSpan.FromSeconds(job.Spec.TimeoutSeconds), _time, hangfire, stopping, fenced,
            c => _store.IsCancelRequestedAsync(job.Id, c), cancelWatch?.Token ?? default);
        var containerId = _node.ContainerId(job.Id, attempt);
        var context = new AttemptContext(job, attempt, reservation, containerId, _paths.RunDir(containerId), signals);
        var started = new Stack<IAttemptPhase>();
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
        finally
        {
            while (started.TryPop(out var phase))
            {
                try { await phase.ReleaseAsync(context); }
                catch (Exception e) { LogReleaseFailed(_log, e, job.Id, phase.GetType().Name); }
            }
        }
        return Outcomes.Decide(result, job.Spec, attempt);
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Job {JobId}: attempt {Attempt} failed unexpectedly")]
    private static partial void LogUnexpected(ILogger log, Exception e, Guid jobId, int attempt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: releasing what {Phase} held failed")]
    private static partial void LogReleaseFailed(ILogger log, Exception e, Guid jobId, string phase);
}
