using System.Diagnostics;
using BatchRunner.Core;
using BatchRunner.Oci;
using BatchRunner.Runtime;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Runs one attempt of one job on this node: admission → image → overlay rootfs → container → results
/// → store. It owns every resource it creates for the attempt (capacity reservation, rootfs mount,
/// bundle, container, cgroup) and releases them on every path; after a crash they are removed by
/// <see cref="ProcessWatchdog"/> (containers) and <see cref="NodeJanitor"/> (the rest).
/// </summary>
/// <remarks>
/// Delivery is at least once (Hangfire). Every write is fenced by the attempt number, and a new attempt
/// starts only when the previous one's node instance is dead, so a duplicate delivery runs nothing.
/// How an attempt leaves this method:
/// <list type="bullet">
/// <item>returns: the job reached a final state (or there was nothing to run);</item>
/// <item><see cref="JobRescheduleException"/>: this node cannot run it now (busy, wrong labels, queue
/// full) or it failed and will be retried after a back-off;</item>
/// <item><see cref="OperationCanceledException"/>: this worker is shutting down; the job was requeued.</item>
/// </list>
/// </remarks>
public sealed partial class JobExecutor(
    JobStore store,
    IImageStore images,
    ISnapshotter snapshotter,
    IContainerRuntime runtime,
    DataPaths paths,
    NodeIdentity node,
    NodeResources resources,
    NodeRegistry registry,
    Gpus.GpuNode gpus,
    JobTelemetry telemetry,
    IHostApplicationLifetime lifetime,
    IOptions<BatchRunnerOptions> options,
    ILogger<JobExecutor> log)
{
    private static readonly TimeSpan AdmissionWait = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan CancelPollInterval = TimeSpan.FromSeconds(2);

    private enum StopCause { None, Timeout, Cancelled, Shutdown, Fenced }

    public async Task ExecuteAsync(Guid jobId, CancellationToken hangfireToken)
    {
        // One delivery of a job at a time in this process (Hangfire may deliver again while an attempt still
        // runs here, e.g. after a requeue); a duplicate leaves the running attempt alone.
        if (!_active.TryAdd(jobId, 0))
        {
            LogAlreadyRunningHere(log, jobId);
            return;
        }
        try { await ExecuteOnceAsync(jobId, hangfireToken); }
        finally { _active.TryRemove(jobId, out _); }
    }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<Guid, byte> _active = new();

    private async Task ExecuteOnceAsync(Guid jobId, CancellationToken hangfireToken)
    {
        var job = await Durably.RunAsync(c => store.GetAsync(jobId, c));
        if (job is null || JobState.IsFinal(job.State) || job.CancelRequested)
        {
            LogNothingToRun(log, jobId);
            return;
        }
        using var scope = log.BeginScope(new Dictionary<string, object> { ["JobId"] = jobId });
        var spec = job.Spec;

        // Admission. A job this node can never run goes back for another node; one that fits but not now
        // waits briefly for capacity here, then goes back to its queue (keeping its place: Hangfire's
        // PostgreSQL queue is ordered by job id).
        if (spec.NodeSelector.Any(kv => !options.Value.Labels.TryGetValue(kv.Key, out var v) || v != kv.Value))
            throw new JobRescheduleException($"node {node.Name} does not match the job's nodeSelector", TimeSpan.FromSeconds(2));
        if (resources.Capacity.WhyNeverFits(spec.Resources) is { } never)
            throw new JobRescheduleException($"node {node.Name} can never run it: {never}", TimeSpan.FromSeconds(2));
        if (!gpus.Allocator.CanEverFit(spec.Resources.Gpus, spec.Resources.GpuModel))
            throw new JobRescheduleException($"node {node.Name} can never run it: {spec.Resources.Gpus} {spec.Resources.GpuModel} GPUs requested", TimeSpan.FromSeconds(2));
        if (!TryAdmit(job, out var assigned))
        {
            await resources.WaitForReleaseAsync(AdmissionWait, hangfireToken);
            if (!TryAdmit(job, out assigned))
                throw new JobRescheduleException($"node {node.Name} is full");
        }
        PublishAllocation();
        try
        {
            var queueFull = false;
            int? queueLimit = options.Value.QueueLimits.TryGetValue(job.Queue, out var l) ? l : null;
            var start = await Durably.RunAsync(c => store.BeginAttemptAsync(jobId, node.Name, registry.Instance, job.Queue, queueLimit, () => queueFull = true, c));
            if (start is null)
            {
                if (queueFull) throw new JobRescheduleException($"queue {job.Queue} is at its limit of {queueLimit} running jobs", TimeSpan.FromSeconds(1));
                LogNothingToRun(log, jobId);
                return;
            }
            await RunAttemptAsync(job, start, assigned, hangfireToken);
        }
        finally
        {
            // Every exit path gives the node's capacity and GPUs back.
            gpus.Allocator.Release(jobId);
            resources.Release(jobId);
            PublishAllocation();
        }
    }

    private void PublishAllocation()
    {
        var (cpus, memory, _) = resources.Allocated;
        NodeMetrics.SetAllocated(node.Name, cpus, memory, gpus.Allocator.Gpus.Count - gpus.Allocator.FreeCount());
    }

    /// <summary>Reserves CPU, memory and GPUs together, or nothing.</summary>
    private bool TryAdmit(JobRecord job, out IReadOnlyList<BatchRunner.Runtime.Gpus.Gpu> assigned)
    {
        assigned = [];
        if (!resources.TryReserve(job.Id, job.Spec.Resources)) return false;
        if (job.Spec.Resources.Gpus == 0) return true;
        if (gpus.Allocator.TryAllocate(job.Id, job.Spec.Resources.Gpus, job.Spec.Resources.GpuModel) is { } got)
        {
            assigned = got;
            return true;
        }
        resources.Release(job.Id);
        return false;
    }

    private async Task RunAttemptAsync(JobRecord job, JobStore.AttemptStart start, IReadOnlyList<BatchRunner.Runtime.Gpus.Gpu> assigned, CancellationToken hangfireToken)
    {
        var jobId = job.Id;
        var attempt = start.Attempt;
        var spec = job.Spec;
        if (attempt == 1)
            BatchRunnerMetrics.JobQueueWaitSeconds.WithLabels(job.Queue).Observe(Math.Max(0, (DateTimeOffset.UtcNow - job.CreatedAt).TotalSeconds));
        LogAttemptStarted(log, jobId, attempt, node.Name);

        JobOutcome outcome;
        bool infrastructure = false;
        if (start.LostAttempts > 0 && !spec.Retry.ShouldRetry(start.LostAttempts, FailureReason.NodeLost, null, infrastructureFailure: true))
        {
            outcome = Failed(FailureReason.NodeLost, $"the job's node was lost {start.LostAttempts} times; no retries left");
        }
        else
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(spec.TimeoutSeconds));
            var signals = new Signals(timeout.Token, hangfireToken, lifetime.ApplicationStopping, registry.Fenced);
            try
            {
                (outcome, infrastructure) = await RunContainerAsync(job, attempt, assigned, signals);
            }
            catch (Exception e) when (e is not OperationCanceledException and not JobRescheduleException && !IsDatabaseOutage(e))
            {
                // A bug or an unexpected host error must still end the job visibly, not leave it "running".
                LogUnexpected(log, e, jobId, attempt);
                outcome = Failed(FailureReason.StartFailed, $"internal error on node {node.Name}: {e.Message}");
            }
        }

        switch (outcome.State)
        {
            case StateFenced:
                // No writes: this node cannot reach the database. The next attempt (here or on another node)
                // closes this one as node_lost.
                LogFenced(log, jobId, attempt);
                throw new JobRescheduleException($"node {node.Name} was fenced");
            case JobState.Queued:
                await Durably.RunAsync(c => store.RequeueAsync(jobId, attempt, outcome.Message ?? "worker shut down", c));
                LogRequeued(log, jobId, attempt);
                throw new OperationCanceledException("worker shutting down; job requeued");
        }

        if (outcome.State == JobState.Failed && outcome.Reason is { } reason &&
            spec.Retry.ShouldRetry(attempt, reason, outcome.ExitCode, infrastructure))
        {
            var delay = spec.Retry.BackoffFor(attempt);
            if (await Durably.RunAsync(c => store.RetryLaterAsync(jobId, attempt, outcome, delay, c)))
            {
                LogRetrying(log, jobId, attempt, reason, delay.TotalSeconds);
                throw new JobRescheduleException($"attempt {attempt} failed ({reason}); retry in {delay.TotalSeconds:0.#}s", delay);
            }
        }

        if (await Durably.RunAsync(c => store.FinishAsync(jobId, attempt, outcome, c)))
        {
            BatchRunnerMetrics.JobsFinished.WithLabels(job.Queue, outcome.State, outcome.Reason ?? "").Inc();
            LogFinished(log, jobId, attempt, outcome.State, outcome.Reason ?? "", outcome.Message ?? "");
        }
        else
        {
            LogStale(log, jobId, attempt);
        }
    }

    /// <summary>Outcome state meaning "fenced: record nothing".</summary>
    private const string StateFenced = "_fenced";

    /// <summary>Everything that can stop an attempt, and how to tell which one did.</summary>
    private sealed class Signals(CancellationToken timeout, CancellationToken hangfire, CancellationToken stopping, CancellationToken fenced)
    {
        public CancellationToken Timeout { get; } = timeout;
        public CancellationToken Hangfire { get; } = hangfire;
        public CancellationToken Stopping { get; } = stopping;
        public CancellationToken Fenced { get; } = fenced;
    }

    private async Task<StopCause> CauseAsync(Guid jobId, Signals s)
    {
        if (s.Fenced.IsCancellationRequested) return StopCause.Fenced;
        if (s.Timeout.IsCancellationRequested) return StopCause.Timeout;
        if (await CancelFlagAsync(jobId)) return StopCause.Cancelled;
        if (s.Stopping.IsCancellationRequested) return StopCause.Shutdown;
        return StopCause.None;
    }

    /// <summary>
    /// The database's cancel flag, a backstop behind Hangfire's token. While the database is away it reads as
    /// "not requested": an outage must never stop a running container (its result is recorded once the
    /// database is back), and it used to, when the read gave up after 30 s and the exception unwound the attempt.
    /// </summary>
    private async Task<bool> CancelFlagAsync(Guid jobId)
    {
        try { return await Durably.RunAsync(c => store.IsCancelRequestedAsync(jobId, c), deadline: TimeSpan.FromSeconds(5)); }
        catch (Exception e) when (Durably.IsTransient(e)) { return false; }
    }

    private async Task<(JobOutcome Outcome, bool Infrastructure)> RunContainerAsync(JobRecord job, int attempt,
        IReadOnlyList<BatchRunner.Runtime.Gpus.Gpu> assigned, Signals signals)
    {
        var spec = job.Spec;
        var jobId = job.Id;
        // Before the container runs, any signal interrupts the preparation (pull, mount) at once.
        using var prep = CancellationTokenSource.CreateLinkedTokenSource(signals.Timeout, signals.Hangfire, signals.Stopping, signals.Fenced);

        async Task<JobOutcome> Interrupted()
        {
            var why = await CauseAsync(jobId, signals);
            // A spurious abort (Hangfire re-delivered the job elsewhere) during preparation: let the queue decide again.
            return OutcomeOfStop(why == StopCause.None ? StopCause.Shutdown : why, spec, null, null, []);
        }

        // 1. Image.
        PreparedImage image;
        var pullWatch = Stopwatch.StartNew();
        try
        {
            if (!ImageReference.TryParse(spec.Image, out var reference, out var refError))
                return (Failed(FailureReason.ImagePullFailed, refError ?? $"invalid image reference \"{spec.Image}\""), false);
            var progress = new ThrottledProgress(p => store.SetPullProgressAsync(jobId, attempt, p.BytesDone, p.BytesTotal, CancellationToken.None));
            var policy = spec.PullPolicy switch
            {
                ImagePullPolicy.Always => PullPolicy.Always,
                ImagePullPolicy.Never => PullPolicy.Never,
                _ => PullPolicy.IfNotPresent,
            };
            image = await images.PullAsync(reference!, policy, progress, prep.Token);
            await progress.FlushAsync();
        }
        catch (ImagePullException e)
        {
            return (Failed(FailureReason.ImagePullFailed, e.Message), e.Transient);
        }
        catch (OperationCanceledException e) when (!prep.IsCancellationRequested)
        {
            // An HTTP timeout surfaces as a cancellation nobody asked for.
            return (Failed(FailureReason.ImagePullFailed, $"image {spec.Image}: {e.Message}"), true);
        }
        catch (Exception e) when (e is not OperationCanceledException && !IsDatabaseOutage(e))
        {
            // A corrupt or unsafe layer, a full disk: the image could not be made present.
            return (Failed(FailureReason.ImagePullFailed, $"image {spec.Image}: {e.Message}"), e is IOException);
        }
        catch (OperationCanceledException) when (prep.IsCancellationRequested)
        {
            return (await Interrupted(), false);
        }
        BatchRunnerMetrics.ImagePullSeconds.Observe(pullWatch.Elapsed.TotalSeconds);
        await Durably.RunAsync(c => store.SetImageDigestAsync(jobId, attempt, image.ManifestDigest, c));

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
            try
            {
                rootfs = await snapshotter.MountAsync(image.LayerPaths, runDir, prep.Token);
            }
            catch (OperationCanceledException) when (prep.IsCancellationRequested)
            {
                return (await Interrupted(), false);
            }

            ContainerSpec cspec;
            try
            {
                cspec = ContainerSpecs.For(containerId, spec, image.Config, rootfs.RootfsPath, outputs, paths.Inputs(jobId), paths.Datasets);
                if (assigned.Count > 0) cspec = cspec with { Gpus = new(assigned, gpus.Inventory.Common) };
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or FileNotFoundException or UserResolutionException)
            {
                return (Failed(FailureReason.StartFailed, e.Message), false);
            }
            // The job's user must be able to write its outputs.
            ChownOutputs(outputs, cspec.Uid, cspec.Gid);

            try
            {
                container = await runtime.StartAsync(cspec, Path.Combine(runDir, "bundle"), io, prep.Token);
            }
            catch (ContainerStartException e)
            {
                return (Failed(FailureReason.StartFailed, e.Message), false);
            }
            catch (OperationCanceledException) when (prep.IsCancellationRequested)
            {
                return (await Interrupted(), false);
            }
            var startedAt = DateTimeOffset.UtcNow;
            await Durably.RunAsync(c => store.MarkRunningAsync(jobId, attempt, startedAt, c));
            BatchRunnerMetrics.JobsRunning.Inc();
            var tracking = telemetry.TrackContainer(job, node.Name, cspec, container);
            using var gpuTracking = assigned.Count > 0 ? gpus.Monitor.TrackJob(jobId, spec.Name, assigned) : null;
            try
            {
                var (exit, why) = await WaitAsync(jobId, container, signals);
                BatchRunnerMetrics.JobRunSeconds.WithLabels(job.Queue).Observe((DateTimeOffset.UtcNow - startedAt).TotalSeconds);
                var usage = container.ReadUsage();
                if (gpuTracking?.Usage is { } g)
                    usage = usage with { Gpus = new GpuUsageSummary(g.Gpus, g.MeanUtilizationPercent, g.PeakUtilizationPercent, g.PeakMemoryBytes, g.Samples) };
                // The container is gone from here on; results come from the job directory.
                await container.DisposeAsync();
                container = null;
                var files = await OutputScanner.ScanAsync(outputs, CancellationToken.None);
                return (why == StopCause.None ? OutcomeOfExit(exit, spec, usage, files) : OutcomeOfStop(why, spec, exit, usage, files), false);
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

    /// <summary>
    /// Waits for the container to exit while watching what may stop it: the timeout, a cancel request
    /// (Hangfire's token, and the database flag as a backstop), fencing, and shutdown — which first
    /// gives the job its grace period to finish. A Hangfire abort with none of these behind it (the job
    /// was re-delivered elsewhere after a database hiccup) is ignored: this attempt keeps running.
    /// </summary>
    private async Task<(ExitResult Exit, StopCause Why)> WaitAsync(Guid jobId, IRunningContainer container, Signals s)
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
            await Task.WhenAny(exit, timeout, fenced, hangfire, stopping, Task.Delay(CancelPollInterval));
            if (exit.IsCompleted) break;
            why = await CauseAsync(jobId, s);
            if (why == StopCause.Shutdown)
            {
                var grace = TimeSpan.FromSeconds(options.Value.ShutdownGraceSeconds);
                LogGrace(log, jobId, grace.TotalSeconds);
                await Task.WhenAny(exit, timeout, Task.Delay(grace));
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

    private static JobOutcome OutcomeOfStop(StopCause why, JobSpec spec, ExitResult? exit, ResourceUsage? usage, IReadOnlyList<OutputFile> files) =>
        why switch
        {
            StopCause.Timeout => new JobOutcome(JobState.Failed, FailureReason.TimedOut,
                $"killed after exceeding timeoutSeconds={spec.TimeoutSeconds}", exit?.ExitCode, usage, files),
            StopCause.Cancelled => new JobOutcome(JobState.Cancelled, FailureReason.Cancelled, "cancelled by request", exit?.ExitCode, usage, files),
            StopCause.Fenced => new JobOutcome(StateFenced, null, null, null, null, []),
            // Shutdown: "queued" tells the caller to hand the job back to the queue.
            _ => new JobOutcome(JobState.Queued, null, "the worker shut down during the attempt; requeued", null, null, []),
        };

    /// <summary>The database being away is retried (the job is re-delivered), not recorded as the job's failure.</summary>
    private static bool IsDatabaseOutage(Exception e) =>
        e is Npgsql.NpgsqlException || (e.InnerException is { } inner && IsDatabaseOutage(inner));

    private static JobOutcome Failed(string reason, string message) => new(JobState.Failed, reason, message, null, null, []);

    private static unsafe void ChownOutputs(string dir, uint uid, uint gid)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(dir + "\0");
        fixed (byte* p = bytes)
        {
            if (Tmds.Linux.LibC.chown(p, uid, gid) != 0)
                throw new IOException($"chown {dir} to {uid}:{gid} failed (errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()})");
        }
    }

    private async Task SafeAsync(Func<Task> cleanup, Guid jobId, string what)
    {
        try { await cleanup(); }
        catch (Exception e) { LogCleanupFailed(log, e, jobId, what); }
    }

    /// <summary>Pull progress goes to the database at most twice a second.</summary>
    private sealed class ThrottledProgress(Func<PullProgress, Task> write) : IProgress<PullProgress>
    {
        private long _lastTicks;
        private Task _pending = Task.CompletedTask;

        public void Report(PullProgress value)
        {
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

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: nothing to run (final, cancelled, or running on a live node)")]
    private static partial void LogNothingToRun(ILogger log, Guid jobId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: delivered again while an attempt of it runs in this process; leaving that one alone")]
    private static partial void LogAlreadyRunningHere(ILogger log, Guid jobId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: attempt {Attempt} ended {State} {Reason}: {Message}")]
    private static partial void LogFinished(ILogger log, Guid jobId, int attempt, string state, string reason, string message);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: attempt {Attempt} failed ({Reason}); retrying in {Seconds}s")]
    private static partial void LogRetrying(ILogger log, Guid jobId, int attempt, string reason, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: result of attempt {Attempt} ignored (a newer attempt or a final state exists)")]
    private static partial void LogStale(ILogger log, Guid jobId, int attempt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: attempt {Attempt} stopped because this node is fenced")]
    private static partial void LogFenced(ILogger log, Guid jobId, int attempt);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: attempt {Attempt} interrupted by shutdown; requeued")]
    private static partial void LogRequeued(ILogger log, Guid jobId, int attempt);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: worker stopping; the job has {Seconds}s to finish")]
    private static partial void LogGrace(ILogger log, Guid jobId, double seconds);

    [LoggerMessage(Level = LogLevel.Error, Message = "Job {JobId}: attempt {Attempt} failed unexpectedly")]
    private static partial void LogUnexpected(ILogger log, Exception e, Guid jobId, int attempt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: removing the {What} failed")]
    private static partial void LogCleanupFailed(ILogger log, Exception e, Guid jobId, string what);
}
