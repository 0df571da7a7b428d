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
/// exited, its usage is read; it is deleted when the phase is released, after the attempt's end is recorded (see
/// <see cref="AttemptRunner"/>). Released: the container is killed if it still runs, and deleted. After a crash the
/// watchdog kills it and the janitor deletes it. Its stdout and stderr go to the job's capped logs (the job's logs.maxBytes, at most
/// the node's MaxLogBytes); the job record says so as soon as a stream goes over its cap.
/// </summary>
public sealed partial class ContainerPhase(
    IContainerRuntime runtime,
    IAttemptStore store,
    IJobSecrets secrets,
    DataPaths paths,
    NodeIdentity node,
    JobTelemetry telemetry,
    GpuNode gpus,
    LiveUsage live,
    IOptions<BatchRunnerOptions> options,
    TimeProvider time,
    ILogger<ContainerPhase> log) : IAttemptPhase
{
    /// <summary>The cancel flag's safety-net poll: a cancel wakes the wait at once through <see cref="StopSignals.CancelRequest"/>
    /// (the cancel notification, Hangfire's token); this catches one whose notification was lost with no reconnect behind it.</summary>
    internal static readonly TimeSpan CancelPollInterval = TimeSpan.FromSeconds(30);
    /// <summary>How much of stderr's last line a failed job's message quotes.</summary>
    private const int MaxMessageStderrChars = 200;
    /// <summary>The directory of the container's /etc/hostname, /etc/hosts and /etc/resolv.conf in its scratch directory.</summary>
    internal const string NameFilesDirName = "names";

    public async Task<AttemptResult?> RunAsync(AttemptContext attempt)
    {
        var spec = attempt.Spec;
        // The job's directory: its logs outlive the container (its outputs move there once it has exited).
        Directory.CreateDirectory(paths.JobDir(attempt.JobId));
        var outputs = attempt.OutputsDir;
        var io = new ContainerIo(paths.Stdout(attempt.JobId), paths.Stderr(attempt.JobId)) { Limits = new LogLimits(options.Value.LogCapFor(spec)) };
        // Earlier attempts' stderr stays in the log; the message quotes only this attempt's.
        var stderrFrom = StoredLog.End(io.StderrPath);

        // The stored spec never holds secret values: they are decrypted here, for the container's environment only (a job
        // with none stored skips the read).
        try
        {
            if (attempt.Job.HasSecrets)
            {
                var jobSecrets = await Durably.RunAsync(c => secrets.GetAsync(attempt.JobId, c), attempt.Signals.Preparation);
                spec = spec with { SecretEnv = jobSecrets.Env };
            }
        }
        catch (System.Security.Cryptography.CryptographicException)
        {
            return new AttemptResult.Failed(FailureReason.StartFailed,
                "its secrets cannot be decrypted: the Data Protection key that encrypted them is not in the database's key ring", Infrastructure: false);
        }
        catch (OperationCanceledException) when (attempt.Signals.Preparation.IsCancellationRequested)
        {
            return await attempt.Signals.InterruptedAsync();
        }

        ContainerSpec cspec;
        try
        {
            cspec = ContainerSpecs.For(attempt.ContainerId, spec, attempt.Image!.Config, attempt.Rootfs!.RootfsPath, outputs,
                paths.Inputs(attempt.JobId), paths.Datasets, ContainerSpecs.BatchRunnerEnv(attempt.Attempt, attempt.Job.ArrayIndex, spec.Array));
            if (attempt.Reservation.Gpus.Count > 0) cspec = cspec with { Gpus = new(attempt.Reservation.Gpus, gpus.Inventory.Common) };
            // On the job's disk: what the job writes to its /etc/hosts counts against its limit, like the rest of its writes.
            cspec = cspec with { NameFilesDir = Path.Combine(attempt.ScratchDir, NameFilesDirName), NameFilesDiscarded = attempt.Disk is not null };
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
            // The bundle is on the node's state tmpfs (DATA/state, the janitor's), beside the runtime's state.
            container = await runtime.StartAsync(cspec, paths.Bundle(attempt.ContainerId), io, attempt.Signals.Preparation);
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
        await Durably.RunAsync(c => store.MarkRunningAsync(attempt.JobId, attempt.Attempt, startedAt, attempt.Image?.ManifestDigest, c));
        BatchRunnerMetrics.JobsRunning.Inc();
        var tracking = telemetry.TrackContainer(attempt.Job, node.Name, cspec, container, attempt.DiskWatch);
        using var gpuTracking = attempt.Reservation.Gpus.Count > 0 ? gpus.Monitor.TrackJob(attempt.JobId, spec.Name, attempt.Reservation.Gpus) : null;
        // While it runs: its cgroup's and GPUs' figures so far, and the peak of its disk (the final one comes from OutputsPhase).
        using var liveUsage = live.Track(attempt.JobId, attempt.Attempt,
            () => WithGpus(container.ReadUsage(), gpuTracking) with { DiskBytes = attempt.DiskWatch?.PeakUsedBytes });
        try
        {
            var waiting = WaitAsync(attempt, container);
            var marking = MarkLogsTruncatedAsync(attempt, container.LogsTruncated, waiting);
            var (exit, why, stop) = await waiting;
            await marking;
            BatchRunnerMetrics.JobRunSeconds.WithLabels(attempt.Job.Queue).Observe((time.GetUtcNow() - startedAt).TotalSeconds);
            liveUsage.Dispose();
            // Its init has exited, and in the container's own PID namespace the kernel kills and reaps every other process
            // before that exit is reported: its usage is final, its outputs and logs complete. The cgroup stays until the
            // container is deleted in ReleaseAsync, after the end is recorded.
            var usage = WithGpus(container.ReadUsage(), gpuTracking);
            var lastStderrLine = exit.ExitCode != 0 ? StoredLog.LastLine(io.StderrPath, stderrFrom, MaxMessageStderrChars) : null;
            attempt.Run = new ContainerRun(exit, why, usage, stop, lastStderrLine);
            return null;
        }
        finally
        {
            tracking.Dispose();
            BatchRunnerMetrics.JobsRunning.Dec();
        }
    }

    private static ResourceUsage WithGpus(ResourceUsage usage, GpuJobTracking? gpus) =>
        gpus?.Usage is { } g ? usage with { Gpus = new GpuUsageSummary(g.Gpus, g.MeanUtilizationPercent, g.PeakUtilizationPercent, g.PeakMemoryBytes, g.Samples) } : usage;

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
    /// <remarks>
    /// A job stopped for its timeout, a cancel or a shutdown gets its stop signal (SIGTERM, or the image's StopSignal)
    /// and its stopGraceSeconds to exit (to checkpoint, to write its outputs) before SIGKILL; on shutdown that comes
    /// after ShutdownGraceSeconds, so a worker's stop takes at most ShutdownGraceSeconds + MaxStopGraceSeconds. A fenced
    /// node kills at once: another node may soon start the job again.
    /// </remarks>
    private async Task<(ExitResult Exit, StopCause Why, StopResult? Stop)> WaitAsync(AttemptContext attempt, IRunningContainer container)
    {
        var s = attempt.Signals;
        var exit = container.WaitAsync(CancellationToken.None);
        Task Fired(CancellationToken t) => Task.Delay(Timeout.Infinite, t).ContinueWith(_ => { }, TaskScheduler.Default);
        var timeout = Fired(s.Timeout);
        var fenced = Fired(s.Fenced);
        var hangfire = Fired(s.CancelRequest);
        var stopping = Fired(s.Stopping);
        var why = StopCause.None;
        StopResult? stop = null;
        // The poll's timer goes with the wait: a job that ends first left it behind for up to CancelPollInterval (30 s), a
        // timer per job for the timer thread to fire.
        using var pollDone = new CancellationTokenSource();
        while (!exit.IsCompleted)
        {
            await Task.WhenAny(exit, timeout, fenced, hangfire, stopping, Task.Delay(CancelPollInterval, time, pollDone.Token));
            if (exit.IsCompleted) break;
            why = await s.CauseAsync();
            if (why == StopCause.Shutdown)
            {
                var grace = TimeSpan.FromSeconds(options.Value.ShutdownGraceSeconds);
                var graceOver = Task.Delay(grace, time);
                LogGrace(log, attempt.JobId, grace.TotalSeconds);
                await Task.WhenAny(exit, timeout, graceOver);
                if (exit.IsCompleted) { why = StopCause.None; break; }
                if (s.Timeout.IsCancellationRequested) why = StopCause.Timeout;
            }
            if (why == StopCause.Fenced)
            {
                await container.KillAsync(CancellationToken.None);
                break;
            }
            if (why != StopCause.None)
            {
                var signal = Runtime.StopSignal.Normalize(attempt.Image?.Config.StopSignal) ?? Runtime.StopSignal.Default;
                var stopGrace = StopGrace(attempt.Spec);
                LogStopping(log, attempt.JobId, why, signal, stopGrace.TotalSeconds);
                // Fencing during the grace period cuts it short: SIGKILL at once.
                stop = await container.StopAsync(signal, stopGrace, s.Fenced);
                LogStopped(log, attempt.JobId, stop.Describe());
                break;
            }
            if (hangfire.IsCompleted) hangfire = new TaskCompletionSource().Task; // spurious: stop listening
        }
        pollDone.Cancel();
        return (await exit, why, stop);
    }

    /// <summary>The job's stopGraceSeconds (the node's default for jobs stored without one), never above the node's maximum.</summary>
    private TimeSpan StopGrace(JobSpec spec) =>
        TimeSpan.FromSeconds(Math.Min(spec.StopGraceSeconds ?? options.Value.StopGraceSeconds, options.Value.MaxStopGraceSeconds));

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: stopping it ({Cause}): {Signal}, then SIGKILL after {Seconds} s")]
    private static partial void LogStopping(ILogger log, Guid jobId, StopCause cause, string signal, double seconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: {How}")]
    private static partial void LogStopped(ILogger log, Guid jobId, string how);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: worker stopping; the job has {Seconds}s to finish")]
    private static partial void LogGrace(ILogger log, Guid jobId, double seconds);
}
