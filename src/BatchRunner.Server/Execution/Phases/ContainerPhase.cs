using BatchRunner.Core;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Logs;
using BatchRunner.Server.Gpus;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Execution.Phases;

/// <summary>
/// Owns the attempt's container (and with it its cgroup and bundle): builds its spec, gives the job's user its
/// /outputs (on the job's disk), starts it, marks the job running, and waits for it while watching what may stop it. Once it has
/// exited, its usage is read and it is deleted, so that the phases after this one see only the job's directory.
/// Released (when the attempt ends early): the container is killed and deleted. After a crash the watchdog kills
/// it and the janitor deletes it. Its stdout and stderr go to the job's capped logs (the job's logs.maxBytes, at most
/// the node's MaxLogBytes); the job record says so as soon as a stream goes over its cap.
/// </summary>
public sealed partial class ContainerPhase(
    IContainerRuntime runtime,
    IAttemptStore store,
    DataPaths paths,
    NodeIdentity node,
    JobTelemetry telemetry,
    GpuNode gpus,
    IOptions<BatchRunnerOptions> options,
    TimeProvider time,
    ILogger<ContainerPhase> log) : IAttemptPhase
{
    private static readonly TimeSpan CancelPollInterval = TimeSpan.FromSeconds(2);
    /// <summary>How much of stderr's last line a failed job's message quotes.</summary>
    private const int MaxMessageStderrChars = 200;

    public async Task<AttemptResult?> RunAsync(AttemptContext attempt)
    {
        var spec = attempt.Spec;
        // The job's directory: its logs outlive the container (its outputs move there once it has exited).
        Directory.CreateDirectory(paths.JobDir(attempt.JobId));
        var outputs = attempt.OutputsDir;
        var io = new ContainerIo(paths.Stdout(attempt.JobId), paths.Stderr(attempt.JobId)) { Limits = new LogLimits(options.Value.LogCapFor(spec)) };
        // Earlier attempts' stderr stays in the log; the message quotes only this attempt's.
        var stderrFrom = StoredLog.End(io.StderrPath);

        ContainerSpec cspec;
        try
        {
            cspec = ContainerSpecs.For(attempt.ContainerId, spec, attempt.Image!.Config, attempt.Rootfs!.RootfsPath, outputs, paths.Inputs(attempt.JobId), paths.Datasets);
            if (attempt.Reservation.Gpus.Count > 0) cspec = cspec with { Gpus = new(attempt.Reservation.Gpus, gpus.Inventory.Common) };
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FileNotFoundException or UserResolutionException)
        {
            return new AttemptResult.Failed(FailureReason.StartFailed, e.Message, Infrastructure: false);
        }
        // The job's user must be able to write its outputs.
        HostFiles.Chown(outputs, cspec.Uid, cspec.Gid);

        IRunningContainer container;
        try
        {
            container = await runtime.StartAsync(cspec, Path.Combine(attempt.RunDir, "bundle"), io, attempt.Signals.Preparation);
        }
        catch (ContainerStartException e)
        {
            return new AttemptResult.Failed(FailureReason.StartFailed, e.Message, Infrastructure: false);
        }
        catch (OperationCanceledException) when (attempt.Signals.Preparation.IsCancellationRequested)
        {
            return await attempt.Signals.InterruptedAsync();
        }
        attempt.Container = container;
        var startedAt = time.GetUtcNow();
        await Durably.RunAsync(c => store.MarkRunningAsync(attempt.JobId, attempt.Attempt, startedAt, c));
        BatchRunnerMetrics.JobsRunning.Inc();
        var tracking = telemetry.TrackContainer(attempt.Job, node.Name, cspec, container, attempt.DiskWatch);
        using var gpuTracking = attempt.Reservation.Gpus.Count > 0 ? gpus.Monitor.TrackJob(attempt.JobId, spec.Name, attempt.Reservation.Gpus) : null;
        try
        {
            var waiting = WaitAsync(attempt.JobId, container, attempt.Signals);
            var marking = MarkLogsTruncatedAsync(attempt, container.LogsTruncated, waiting);
            var (exit, why) = await waiting;
            await marking;
            BatchRunnerMetrics.JobRunSeconds.WithLabels(attempt.Job.Queue).Observe((time.GetUtcNow() - startedAt).TotalSeconds);
            var usage = container.ReadUsage();
            if (gpuTracking?.Usage is { } g)
                usage = usage with { Gpus = new GpuUsageSummary(g.Gpus, g.MeanUtilizationPercent, g.PeakUtilizationPercent, g.PeakMemoryBytes, g.Samples) };
            // The container is gone from here on; results come from the job directory.
            attempt.Container = null;
            await container.DisposeAsync();
            var lastStderrLine = exit.ExitCode != 0 ? StoredLog.LastLine(io.StderrPath, stderrFrom, MaxMessageStderrChars) : null;
            attempt.Run = new ContainerRun(exit, why, usage, lastStderrLine);
            return null;
        }
        finally
        {
            tracking.Dispose();
            BatchRunnerMetrics.JobsRunning.Dec();
        }
    }

    /// <summary>Records logsTruncated when the container's output first goes over its cap (known before it is waited for).</summary>
    private async Task MarkLogsTruncatedAsync(AttemptContext attempt, Task truncated, Task exited)
    {
        await Task.WhenAny(truncated, exited);
        if (truncated.IsCompleted)
            await Durably.RunAsync(c => store.MarkLogsTruncatedAsync(attempt.JobId, attempt.Attempt, c));
    }

    public async ValueTask ReleaseAsync(AttemptContext attempt)
    {
        if (attempt.Container is not { } container) return;
        attempt.Container = null;
        await container.DisposeAsync();
    }

    /// <summary>
    /// Waits for the container to exit while watching what may stop it: the timeout, a cancel request
    /// (Hangfire's token, and the database flag as a backstop), fencing, and shutdown, which first
    /// gives the job its grace period to finish. A Hangfire abort with none of these behind it (the job
    /// was re-delivered elsewhere after a database hiccup) is ignored: this attempt keeps running.
    /// </summary>
    private async Task<(ExitResult Exit, StopCause Why)> WaitAsync(Guid jobId, IRunningContainer container, StopSignals s)
    {
        var exit = container.WaitAsync(CancellationToken.None);
        Task Fired(CancellationToken t) => Task.Delay(Timeout.Infinite, t).ContinueWith(_ => { }, TaskScheduler.Default);
        var timeout = Fired(s.Timeout);
        var fenced = Fired(s.Fenced);
        var hangfire = Fired(s.Hangfire);
        var stopping = Fired(s.Stopping);
        var why = StopCause.None;
        while (!exit.IsCompleted)
        {
            await Task.WhenAny(exit, timeout, fenced, hangfire, stopping, Task.Delay(CancelPollInterval, time));
            if (exit.IsCompleted) break;
            why = await s.CauseAsync();
            if (why == StopCause.Shutdown)
            {
                var grace = TimeSpan.FromSeconds(options.Value.ShutdownGraceSeconds);
                var graceOver = Task.Delay(grace, time);
                LogGrace(log, jobId, grace.TotalSeconds);
                await Task.WhenAny(exit, timeout, graceOver);
                if (exit.IsCompleted) { why = StopCause.None; break; }
                if (s.Timeout.IsCancellationRequested) why = StopCause.Timeout;
            }
            if (why != StopCause.None)
            {
                await container.KillAsync(CancellationToken.None);
                break;
            }
            if (hangfire.IsCompleted) hangfire = new TaskCompletionSource().Task; // spurious: stop listening
        }
        return (await exit, why);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: worker stopping; the job has {Seconds}s to finish")]
    private static partial void LogGrace(ILogger log, Guid jobId, double seconds);
}
