using System.Diagnostics;
using BatchRunner.Core;
using BatchRunner.Oci;
using BatchRunner.Runtime;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Logging;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Runs one attempt of one job on this node: image → overlay rootfs → container → results → store.
/// It owns every resource it creates for the attempt (rootfs mount, bundle, container, cgroup) and
/// removes them on every path; a crash leaves them to <see cref="NodeJanitor"/>.
/// </summary>
/// <remarks>
/// Outcomes: a job that ran (or could not) ends in a final state and the method returns normally.
/// When this worker shuts down mid-attempt the job is put back to queued and
/// <see cref="OperationCanceledException"/> propagates, so Hangfire requeues it: delivery is at least
/// once, and the attempt fence keeps a late result of an abandoned attempt from being recorded.
/// </remarks>
public sealed partial class JobExecutor(
    JobStore store,
    IImageStore images,
    ISnapshotter snapshotter,
    IContainerRuntime runtime,
    DataPaths paths,
    NodeIdentity node,
    JobTelemetry telemetry,
    ILogger<JobExecutor> log)
{
    private enum StopCause { None, Timeout, Cancelled, Shutdown }

    public async Task ExecuteAsync(Guid jobId, CancellationToken workerToken)
    {
        var attempt = await store.BeginAttemptAsync(jobId, node.Name, CancellationToken.None);
        if (attempt is null)
        {
            LogNothingToRun(log, jobId);
            return;
        }
        var job = await store.GetAsync(jobId, CancellationToken.None)
                  ?? throw new InvalidOperationException($"job {jobId} vanished");
        var spec = job.Spec;
        var queueWait = DateTimeOffset.UtcNow - job.CreatedAt;
        if (attempt == 1) BatchRunnerMetrics.JobQueueWaitSeconds.WithLabels(job.Queue).Observe(Math.Max(0, queueWait.TotalSeconds));
        LogAttemptStarted(log, jobId, attempt.Value, node.Name);

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(spec.TimeoutSeconds));
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(workerToken, timeout.Token);

        async Task<StopCause> CauseAsync()
        {
            if (timeout.IsCancellationRequested) return StopCause.Timeout;
            if (await store.IsCancelRequestedAsync(jobId, CancellationToken.None)) return StopCause.Cancelled;
            return workerToken.IsCancellationRequested ? StopCause.Shutdown : StopCause.None;
        }

        JobOutcome outcome;
        try
        {
            outcome = await RunAttemptAsync(job, attempt.Value, stop.Token, CauseAsync);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            outcome = await OutcomeOfStopAsync(await CauseAsync(), spec, null, null, []);
        }
        catch (Exception e) when (e is not OperationCanceledException and not Npgsql.NpgsqlException)
        {
            // A bug or an unexpected host error must still end the job visibly, not leave it "running".
            LogUnexpected(log, e, jobId, attempt.Value);
            outcome = Failed(FailureReason.StartFailed, $"internal error on node {node.Name}: {e.Message}");
        }

        if (outcome.State == JobState.Queued)
        {
            await store.RequeueAsync(jobId, attempt.Value, outcome.Message ?? "worker shut down", CancellationToken.None);
            LogRequeued(log, jobId, attempt.Value);
            throw new OperationCanceledException("worker shutting down; job requeued");
        }

        if (await store.FinishAsync(jobId, attempt.Value, outcome, CancellationToken.None))
        {
            BatchRunnerMetrics.JobsFinished.WithLabels(job.Queue, outcome.State, outcome.Reason ?? "").Inc();
            LogFinished(log, jobId, attempt.Value, outcome.State, outcome.Reason ?? "", outcome.Message ?? "");
        }
        else
        {
            LogFenced(log, jobId, attempt.Value);
        }
    }

    private async Task<JobOutcome> RunAttemptAsync(JobRecord job, int attempt, CancellationToken ct, Func<Task<StopCause>> cause)
    {
        var spec = job.Spec;
        var jobId = job.Id;

        // 1. Image.
        PreparedImage image;
        var pullWatch = Stopwatch.StartNew();
        try
        {
            if (!ImageReference.TryParse(spec.Image, out var reference, out var refError))
                return Failed(FailureReason.ImagePullFailed, refError ?? $"invalid image reference \"{spec.Image}\"");
            var progress = new ThrottledProgress(p => store.SetPullProgressAsync(jobId, attempt, p.BytesDone, p.BytesTotal, CancellationToken.None));
            var policy = spec.PullPolicy switch
            {
                ImagePullPolicy.Always => PullPolicy.Always,
                ImagePullPolicy.Never => PullPolicy.Never,
                _ => PullPolicy.IfNotPresent,
            };
            image = await images.PullAsync(reference!, policy, progress, ct);
            await progress.FlushAsync();
        }
        catch (ImagePullException e)
        {
            return Failed(FailureReason.ImagePullFailed, e.Message);
        }
        BatchRunnerMetrics.ImagePullSeconds.Observe(pullWatch.Elapsed.TotalSeconds);
        await store.SetImageDigestAsync(jobId, attempt, image.ManifestDigest, CancellationToken.None);

        // 2. Job directory: logs and outputs outlive the container.
        var outputs = paths.Outputs(jobId);
        Directory.CreateDirectory(outputs);
        var io = new ContainerIo(paths.Stdout(jobId), paths.Stderr(jobId));

        // 3. Root filesystem and container.
        var containerId = node.ContainerId(jobId, attempt);
        var runDir = paths.RunDir(containerId);
        Directory.CreateDirectory(runDir);
        RootfsMount? rootfs = null;
        IRunningContainer? container = null;
        try
        {
            rootfs = await snapshotter.MountAsync(image.LayerPaths, runDir, ct);

            ContainerSpec cspec;
            try
            {
                cspec = ContainerSpecs.For(containerId, spec, image.Config, rootfs.RootfsPath, outputs);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or FileNotFoundException or UserResolutionException)
            {
                return Failed(FailureReason.StartFailed, e.Message);
            }
            // The job's user must be able to write its outputs.
            ChownOutputs(outputs, cspec.Uid, cspec.Gid);

            try
            {
                container = await runtime.StartAsync(cspec, Path.Combine(runDir, "bundle"), io, ct);
            }
            catch (ContainerStartException e)
            {
                return Failed(FailureReason.StartFailed, e.Message);
            }
            var startedAt = DateTimeOffset.UtcNow;
            await store.MarkRunningAsync(jobId, attempt, startedAt, CancellationToken.None);
            BatchRunnerMetrics.JobsRunning.Inc();
            var tracking = telemetry.TrackContainer(job, node.Name, cspec, container);
            try
            {
                var exitTask = container.WaitAsync(CancellationToken.None);
                var stopped = await Task.WhenAny(exitTask, Task.Delay(Timeout.Infinite, ct)) != exitTask;
                var why = StopCause.None;
                if (stopped)
                {
                    why = await cause();
                    await container.KillAsync(CancellationToken.None);
                }
                var exit = await exitTask;
                BatchRunnerMetrics.JobRunSeconds.WithLabels(job.Queue).Observe((DateTimeOffset.UtcNow - startedAt).TotalSeconds);
                var usage = container.ReadUsage();
                // The container is gone from here on; results come from the job directory.
                await container.DisposeAsync();
                container = null;
                var files = await OutputScanner.ScanAsync(outputs, CancellationToken.None);
                return why == StopCause.None
                    ? OutcomeOfExit(exit, spec, usage, files)
                    : await OutcomeOfStopAsync(why, spec, exit, usage, files);
            }
            finally
            {
                tracking.Dispose();
                BatchRunnerMetrics.JobsRunning.Dec();
            }
        }
        finally
        {
            if (container is not null) await SafeAsync(() => container.DisposeAsync().AsTask(), jobId, "container");
            if (rootfs is not null) await SafeAsync(() => rootfs.DisposeAsync().AsTask(), jobId, "rootfs");
            await SafeAsync(() => { if (Directory.Exists(runDir)) Directory.Delete(runDir, recursive: false); return Task.CompletedTask; }, jobId, "run dir");
        }
    }

    private static JobOutcome OutcomeOfExit(ExitResult exit, JobSpec spec, ResourceUsage usage, IReadOnlyList<OutputFile> files)
    {
        if (exit.OomKilled)
            return new(JobState.Failed, FailureReason.OomKilled,
                $"memory limit {Quantity.FormatBytes(spec.Resources.MemoryBytes)} exceeded (OOM-killed); exit code {exit.ExitCode}",
                exit.ExitCode, usage, files);
        if (exit.ExitCode == 0)
            return new(JobState.Succeeded, null, "exited with code 0", 0, usage, files);
        var msg = exit.Signal is { } sig ? $"killed by signal {sig} (exit code {exit.ExitCode})" : $"exited with code {exit.ExitCode}";
        return new(JobState.Failed, FailureReason.ExitCode, msg, exit.ExitCode, usage, files);
    }

    private static Task<JobOutcome> OutcomeOfStopAsync(StopCause why, JobSpec spec, ExitResult? exit, ResourceUsage? usage, IReadOnlyList<OutputFile> files) =>
        Task.FromResult(why switch
        {
            StopCause.Timeout => new JobOutcome(JobState.Failed, FailureReason.TimedOut,
                $"killed after exceeding timeoutSeconds={spec.TimeoutSeconds}", exit?.ExitCode, usage, files),
            StopCause.Cancelled => new JobOutcome(JobState.Cancelled, FailureReason.Cancelled, "cancelled by request", exit?.ExitCode, usage, files),
            // Shutdown: the sentinel "queued" tells ExecuteAsync to hand the job back to the queue.
            _ => new JobOutcome(JobState.Queued, null, "the worker shut down during the attempt; requeued", null, null, []),
        });

    private static unsafe void ChownOutputs(string dir, uint uid, uint gid)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(dir + "\0");
        fixed (byte* p = bytes)
        {
            if (Tmds.Linux.LibC.chown(p, uid, gid) != 0)
                throw new IOException($"chown {dir} to {uid}:{gid} failed (errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()})");
        }
    }

    private static JobOutcome Failed(string reason, string message) => new(JobState.Failed, reason, message, null, null, []);

    private async Task SafeAsync(Func<Task> cleanup, Guid jobId, string what)
    {
        try { await cleanup(); }
        catch (Exception e) { LogCleanupFailed(log, e, jobId, what); }
    }

    /// <summary>Pull progress goes to the database at most twice a second.</summary>
    private sealed class ThrottledProgress(Func<PullProgress, Task> write) : IProgress<PullProgress>
    {
        private long _lastTicks;
        private PullProgress? _last;
        private Task _pending = Task.CompletedTask;

        public void Report(PullProgress value)
        {
            _last = value;
            var now = Environment.TickCount64;
            if (now - Interlocked.Read(ref _lastTicks) < 500 || !_pending.IsCompleted) return;
            Interlocked.Exchange(ref _lastTicks, now);
            _pending = write(value);
        }

        public async Task FlushAsync()
        {
            try { await _pending; } catch { /* progress is best effort */ }
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: attempt {Attempt} started on {Node}")]
    private static partial void LogAttemptStarted(ILogger log, Guid jobId, int attempt, string node);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: nothing to run (final or cancelled)")]
    private static partial void LogNothingToRun(ILogger log, Guid jobId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: attempt {Attempt} ended {State} {Reason}: {Message}")]
    private static partial void LogFinished(ILogger log, Guid jobId, int attempt, string state, string reason, string message);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: result of attempt {Attempt} ignored (a newer attempt or a final state exists)")]
    private static partial void LogFenced(ILogger log, Guid jobId, int attempt);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: attempt {Attempt} interrupted by shutdown; requeued")]
    private static partial void LogRequeued(ILogger log, Guid jobId, int attempt);

    [LoggerMessage(Level = LogLevel.Error, Message = "Job {JobId}: attempt {Attempt} failed unexpectedly")]
    private static partial void LogUnexpected(ILogger log, Exception e, Guid jobId, int attempt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: removing the {What} failed")]
    private static partial void LogCleanupFailed(ILogger log, Exception e, Guid jobId, string what);
}

/// <summary>This worker's identity in the cluster.</summary>
/// <param name="ContainerPrefix">
/// Starts every container id (and so cgroup name) this worker creates. It is unique per node name and
/// data directory, so orphan clean-up after a crash removes this worker's leftovers and never touches
/// the containers of another worker process on the same machine.
/// </param>
public sealed record NodeIdentity(string Name, string ContainerPrefix)
{
    public static NodeIdentity For(string name, string dataDir)
    {
        var hash = System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(name + "\0" + Path.GetFullPath(dataDir)));
        return new NodeIdentity(name, $"br-{Convert.ToHexStringLower(hash)[..8]}-");
    }

    public string ContainerId(Guid jobId, int attempt) => $"{ContainerPrefix}{jobId:N}-{attempt}";
}
