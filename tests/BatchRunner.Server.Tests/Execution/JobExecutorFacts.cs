using BatchRunner.Core;
using BatchRunner.Oci;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Execution.Phases;
using BatchRunner.Server.Storage;
using Hangfire.States;

namespace BatchRunner.Server.Tests.Execution;

/// <summary>
/// The executor's decisions, on fakes (<see cref="ExecutorHarness"/>): what is recorded for each way an attempt can
/// end, and that every resource of the attempt is given back on every path. The same paths run end to end on real
/// runc, PostgreSQL and a registry in JobLifecycleFacts, SchedulingFacts and ClusterFacts.
/// </summary>
public sealed class JobExecutorFacts : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);
    private readonly ExecutorHarness _h = new();

    public void Dispose() => _h.Dispose();

    /// <summary>Starts one delivery of the job and waits until its container runs.</summary>
    /// <summary>The container was never killed, the job was recorded once as succeeded, and nothing is held.</summary>
    private void AssertEndedOnItsOwn(BatchRunner.Testing.Fakes.FakeContainer container)
    {
        Assert.False(container.Killed);
        Assert.Equal(["Begin 1", "Running 1", "Finish 1 succeeded"], _h.Store.Writes);
        _h.AssertNothingHeld();
    }

    private async Task<(Task Run, BatchRunner.Testing.Fakes.FakeContainer Container)> RunningAsync(Guid id, CancellationToken hangfire = default, int n = 1)
    {
        var run = _h.ExecuteAsync(id, hangfire);
        return (run, await _h.Runtime.WaitForStartAsync(n));
    }

    /// <summary>A delivery that ended the job failed: the executor recorded it and leaves Hangfire's message Failed, with the
    /// reason and message, never Succeeded (which Hangfire's dashboard once showed for every failed job).</summary>
    private static async Task<JobFailedException> FailedAsync(Task delivery) => await Assert.ThrowsAsync<JobFailedException>(() => delivery);

    /// <summary>A delivery that ended the job cancelled: its Hangfire message goes to Deleted.</summary>
    private static async Task CancelledAsync(Task delivery) =>
        Assert.IsType<DeletedState>((await Assert.ThrowsAsync<JobStateException>(() => delivery)).State);

    /// <summary>SIGTERM: returns once the running job has been granted its grace period.</summary>
    private async Task StopHostAsync()
    {
        _h.StopHost();
        await _h.WaitForLogAsync($"the job has {ExecutorHarness.GraceSeconds}s to finish");
    }

    [Fact]
    public async Task ExecuteAsync_RecordsSucceeded_WithOutputs_WhenTheContainerExitsZero()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        string? outputsOnDisk = null;
        _h.Runtime.OnStart = c =>
        {
            outputsOnDisk = OutputsOf(c);
            File.WriteAllText(Path.Combine(outputsOnDisk, "answer.txt"), "42\n");
            _h.Volumes.Last!.UsedBytes = 4096;
            c.Exit(0);
        };
        await _h.ExecuteAsync(id);

        Assert.Equal(["Begin 1", "Running 1", "Finish 1 succeeded"], _h.Store.Writes);
        var outcome = Assert.Single(_h.Store.Outcomes);
        Assert.Equal("answer.txt", Assert.Single(outcome.Outputs).Path);
        Assert.Equal("42\n", File.ReadAllText(Path.Combine(_h.Paths.Outputs(id), "answer.txt")));
        Assert.Equal(0.25, outcome.Usage!.CpuSeconds);
        Assert.Equal(4096, outcome.Usage.DiskBytes);
        Assert.Equal("exited with code 0", outcome.Message);
        Assert.Equal(FakeImageStoreDigest, _h.Store.Job(id).ImageDigest);
        var spec = Assert.Single(_h.Runtime.Started).Spec;
        Assert.Equal(["work"], spec.Args);
        // /outputs lives on the job's disk while it runs, and moves to the job's directory once it has exited.
        Assert.Equal(Path.Combine(_h.Volumes.Last!.Path, "outputs"), outputsOnDisk);
        Assert.StartsWith(_h.Volumes.Last!.Path + "/", spec.RootfsPath);
        Assert.Equal(10L << 30, _h.Volumes.Last!.LimitBytes); // the node's default: the job named no disk
        _h.AssertNothingHeld();
    }

    private static string OutputsOf(BatchRunner.Testing.Fakes.FakeContainer c) => c.Spec.Mounts.Single(m => m.Destination == "/outputs").Source;

    [Fact]
    public async Task ExecuteAsync_RecordsDiskQuotaExceeded_WhenTheJobWentOverItsDisk_EvenIfItsProcessExitedZero()
    {
        var id = _h.AddJob(ExecutorHarness.Job() with { Resources = new ResourceSubmission { Disk = System.Text.Json.JsonDocument.Parse("\"64Mi\"").RootElement } });
        _h.Runtime.OnStart = c =>
        {
            _h.Volumes.Last!.UsedBytes = 90L << 20; // the sampler's first reading at stop sees it
            c.Exit(0);
        };
        await FailedAsync(_h.ExecuteAsync(id));

        Assert.Equal(["Begin 1", "Running 1", "Finish 1 failed disk_quota_exceeded"], _h.Store.Writes);
        var job = _h.Store.Job(id);
        Assert.Equal("disk limit 64Mi exceeded: the job's files reached 90Mi (root filesystem and /outputs together); exit code 0", job.Message);
        Assert.Equal(0, job.ExitCode);
        Assert.Equal(90L << 20, Assert.Single(_h.Store.Outcomes).Usage!.DiskBytes);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_SaysSoInTheMessage_WhenOutputsLostTheirSetuidBitsOrWereNotRegularFiles()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        _h.Runtime.OnStart = c =>
        {
            var outputs = OutputsOf(c);
            File.WriteAllText(Path.Combine(outputs, "tool"), "#!/bin/sh\n");
            File.SetUnixFileMode(Path.Combine(outputs, "tool"), (UnixFileMode)0b100_111_101_101);
            File.CreateSymbolicLink(Path.Combine(outputs, "passwd"), "/etc/passwd");
            c.Exit(0);
        };
        await _h.ExecuteAsync(id);

        Assert.Equal("exited with code 0; outputs: setuid/setgid bits removed from tool; not kept (only regular files and directories are): passwd (symbolic link)",
            _h.Store.Job(id).Message);
        Assert.Equal((UnixFileMode)0b111_101_101, File.GetUnixFileMode(Path.Combine(_h.Paths.Outputs(id), "tool")));
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_GoesBackToTheQueueWithoutBeginning_WhenTheDataDirectoryIsBelowItsReserve()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        _h.DiskFreeBytes = ExecutorHarness.ReserveBytes - 1;

        var e = await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        Assert.Contains("below the reserve MinFreeDisk=5Gi", e.Message);
        Assert.StartsWith("Wait waiting for disk space: node ", Assert.Single(_h.Store.Writes));
        Assert.Equal(0, _h.Volumes.Live);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_GoesBackToTheQueue_WhenTheDataDirectoryHasLessFreeThanTheJobsDisk()
    {
        var id = _h.AddJob(ExecutorHarness.Job() with { Resources = new ResourceSubmission { Disk = System.Text.Json.JsonDocument.Parse("\"20Gi\"").RootElement } });
        _h.DiskFreeBytes = 24L << 30; // 19 GiB above the reserve

        var e = await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        // Why it waits names the disk (it said "waiting for 1 CPU, 512Mi memory together on one node", which every node had).
        Assert.Contains("need more than the 19Gi", e.Message);
        Assert.Equal($"Wait waiting for disk space: node {_h.Reservations.NodeName}: its jobs' disks (0) and this one (20Gi) need more than the 19Gi "
            + $"{_h.Paths.Root} has for jobs (free space above the reserve MinFreeDisk=5Gi)", Assert.Single(_h.Store.Writes));
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_RetriesStartFailed_AsAnInfrastructureFailure_AndReleasesEverything_WhenTheJobsDiskCannotBeMade()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        _h.Volumes.FailCreate = new IOException("cannot open /dev/loop-control: No such file or directory");
        await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        Assert.Equal(["Begin 1", "Retry 1 failed start_failed 00:00:05"], _h.Store.Writes);
        Assert.Equal("the job's disk of 10Gi could not be made: cannot open /dev/loop-control: No such file or directory", Assert.Single(_h.Store.Outcomes).Message);
        Assert.Empty(_h.Runtime.Started);
        _h.AssertNothingHeld();
    }

    private const string FakeImageStoreDigest = BatchRunner.Testing.Fakes.FakeImageStore.Digest;

    [Fact]
    public async Task ExecuteAsync_SchedulesARetryAfterTheBackoff_WhenTheExitCodeIsListed()
    {
        var id = _h.AddJob(ExecutorHarness.Job(retry: new RetrySubmission { Limit = 2, OnExitCodes = [3], BackoffSeconds = 5 }));
        _h.Runtime.OnStart = c => c.Exit(3);
        var e = await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        Assert.Equal(TimeSpan.FromSeconds(5), e.Delay);
        Assert.Equal(["Begin 1", "Running 1", "Retry 1 failed exit_code 00:00:05"], _h.Store.Writes);
        Assert.Equal(3, Assert.Single(_h.Store.Outcomes).ExitCode);
        _h.AssertNothingHeld();
    }

    /// <summary>What the attempt holds when its end is recorded: (containers, mounted root filesystems, disk volumes).</summary>
    private List<(int Containers, int Rootfs, int Disks)> HeldAtRecord()
    {
        var held = new List<(int, int, int)>();
        _h.Store.OnRecord = _ => held.Add((_h.Runtime.Live, _h.Snapshotter.Mounted, _h.Volumes.Live));
        return held;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(4)]
    public async Task ExecuteAsync_RecordsAFinalEndBeforeReleasingTheContainerRootfsAndDisk_WhenTheContainerExited(int exitCode)
    {
        // The end (exit, usage, outputs) is known once the container has exited: the job shows as ended without
        // waiting for `runc delete`, the unmounts and the disk's removal, which follow on the same delivery.
        var id = _h.AddJob(ExecutorHarness.Job());
        var held = HeldAtRecord();
        _h.Runtime.OnStart = c => c.Exit(exitCode);
        var delivery = _h.ExecuteAsync(id);
        if (exitCode == 0) await delivery; else await FailedAsync(delivery);

        Assert.Equal([(1, 1, 1)], held);
        Assert.Equal(exitCode, Assert.Single(_h.Store.Outcomes).ExitCode);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_ReleasesEverythingBeforeRecordingARetry_WhenTheAttemptWillRunAgain()
    {
        // A retry makes the job queued again, and its next attempt may need what this one holds: released first.
        var id = _h.AddJob(ExecutorHarness.Job(retry: new RetrySubmission { Limit = 2, OnExitCodes = [3], BackoffSeconds = 5 }));
        var held = HeldAtRecord();
        _h.Runtime.OnStart = c => c.Exit(3);
        await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        Assert.Equal([(0, 0, 0)], held);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_RecordsFailed_WhenTheExitCodeIsNotListed()
    {
        var id = _h.AddJob(ExecutorHarness.Job(retry: new RetrySubmission { Limit = 2, OnExitCodes = [3] }));
        _h.Runtime.OnStart = c => c.Exit(4);
        var failed = await FailedAsync(_h.ExecuteAsync(id));

        Assert.Equal("exit_code: exited with code 4", failed.Message);
        Assert.Equal(["Begin 1", "Running 1", "Finish 1 failed exit_code"], _h.Store.Writes);
        Assert.Equal("exited with code 4", Assert.Single(_h.Store.Outcomes).Message);
        _h.AssertNothingHeld();
    }

    [Theory]
    [InlineData("Traceback (most recent call last):\nKeyError: 'learning_rate'\n", "exited with code 1: KeyError: 'learning_rate'")]
    [InlineData("", "exited with code 1")]
    public async Task ExecuteAsync_QuotesOnlyThisAttemptsLastStderrLine_WhenTheContainerFails(string stderr, string message)
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        Directory.CreateDirectory(_h.Paths.JobDir(id));
        File.WriteAllText(_h.Paths.Stderr(id), "an earlier attempt's complaint\n");
        _h.Runtime.OnStart = c =>
        {
            File.AppendAllText(_h.Paths.Stderr(id), stderr);
            c.Exit(1);
        };
        await FailedAsync(_h.ExecuteAsync(id));

        Assert.Equal(message, Assert.Single(_h.Store.Outcomes).Message);
    }

    [Fact]
    public async Task ExecuteAsync_RecordsLogsTruncated_AsSoonAsTheOutputGoesOverItsCap()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        var (run, container) = await RunningAsync(id);
        container.TruncateLogs();
        await BatchRunner.Testing.Poll.UntilAsync(() => _h.Store.Writes.Contains("LogsTruncated 1"), Deadline, "logsTruncated recorded");
        Assert.Equal(JobState.Running, _h.Store.Job(id).State);

        container.Exit(0);
        await run;
        Assert.Equal(["Begin 1", "Running 1", "LogsTruncated 1", "Finish 1 succeeded"], _h.Store.Writes);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_SchedulesARetry_WhenTheReasonIsListed_EvenIfTheMainProcessExitedZero()
    {
        // The cgroup counted an OOM kill of a child; the shell itself exited 0.
        var id = _h.AddJob(ExecutorHarness.Job(retry: new RetrySubmission { Limit = 1, OnReasons = [FailureReason.OomKilled], BackoffSeconds = 0 }));
        _h.Runtime.OnStart = c => c.Exit(0, oomKilled: true);
        await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        Assert.Equal(["Begin 1", "Running 1", "Retry 1 failed oom_killed 00:00:00"], _h.Store.Writes);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_RetriesATransientPullFailure_AsAnInfrastructureFailure_AndFailsAPermanentOne()
    {
        var transient = _h.AddJob(ExecutorHarness.Job());
        _h.Images.FailWith(new ImagePullException("image registry.test/job:1: 503 Service Unavailable", transient: true));
        await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(transient));

        var permanent = _h.AddJob(ExecutorHarness.Job());
        _h.Images.FailWith(new ImagePullException("image registry.test/job:1: manifest unknown (HTTP 404)"));
        await FailedAsync(_h.ExecuteAsync(permanent));

        Assert.Equal(["Begin 1", "Retry 1 failed image_pull_failed 00:00:05", "Begin 1", "Finish 1 failed image_pull_failed"], _h.Store.Writes);
        Assert.Contains("manifest unknown", _h.Store.Job(permanent).Message);
        Assert.Empty(_h.Runtime.Started);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_StopsTheContainerWithSigterm_AndRecordsTimedOut_WhenTheJobOutlivesItsTimeout()
    {
        var id = _h.AddJob(ExecutorHarness.Job(timeoutSeconds: 60));
        var (run, container) = await RunningAsync(id);

        _h.Time.Advance(TimeSpan.FromSeconds(61));
        await FailedAsync(run.WaitAsync(Deadline));

        Assert.Equal(["SIGTERM"], container.StopSignals);
        Assert.False(container.Killed);
        Assert.Equal(["Begin 1", "Running 1", "Finish 1 failed timed_out"], _h.Store.Writes);
        Assert.Equal("exceeded timeoutSeconds=60; exited within the 10 s stop grace period after SIGTERM (exit code 143)", _h.Store.Job(id).Message);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_KillsTheContainerAfterTheGrace_AndSaysSo_WhenItIgnoresTheStopSignal()
    {
        var id = _h.AddJob(ExecutorHarness.Job(timeoutSeconds: 60) with { StopGraceSeconds = 3 });
        _h.Runtime.OnStart = c => c.IgnoresStopSignal = true;
        var (run, container) = await RunningAsync(id);

        _h.Time.Advance(TimeSpan.FromSeconds(61));
        await FailedAsync(run.WaitAsync(Deadline));

        Assert.Equal(["SIGTERM"], container.StopSignals);
        Assert.True(container.Killed);
        Assert.StartsWith("exceeded timeoutSeconds=60; killed (SIGKILL) after the 3 s stop grace period: it did not exit on SIGTERM", _h.Store.Job(id).Message);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_SendsTheImagesStopSignal_AndKillsAtOnce_WhenTheGraceIsZero()
    {
        _h.Images.Config = _h.Images.Config with { StopSignal = "INT" };
        var graceful = _h.AddJob(ExecutorHarness.Job(timeoutSeconds: 60));
        var (run, container) = await RunningAsync(graceful);
        _h.Time.Advance(TimeSpan.FromSeconds(61));
        await FailedAsync(run.WaitAsync(Deadline));
        Assert.Equal(["SIGINT"], container.StopSignals);

        var atOnce = _h.AddJob(ExecutorHarness.Job(timeoutSeconds: 60) with { StopGraceSeconds = 0 });
        var (run2, container2) = await RunningAsync(atOnce, n: 2);
        _h.Time.Advance(TimeSpan.FromSeconds(61));
        await FailedAsync(run2.WaitAsync(Deadline));
        Assert.True(container2.Killed);
        Assert.Equal("exceeded timeoutSeconds=60; killed (SIGKILL) at once: its stop grace period is 0 s", _h.Store.Job(atOnce).Message);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_RecordsCancelled_WithoutStartingAContainer_WhenCancelledDuringThePull()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        _h.Images.HangUntilCancelled();
        using var hangfire = new CancellationTokenSource();
        var run = _h.ExecuteAsync(id, hangfire.Token);
        await _h.Images.PullStarted.WaitAsync(Deadline);

        // What the cancel API does: set the flag, delete the Hangfire job (which fires the worker's token).
        _h.Store.RequestCancel();
        await hangfire.CancelAsync();
        await CancelledAsync(run.WaitAsync(Deadline));

        Assert.Equal(["Begin 1", "Finish 1 cancelled cancelled"], _h.Store.Writes);
        Assert.Empty(_h.Runtime.Started);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_StopsTheContainer_AndRecordsCancelled_WhenCancelledWhileRunning()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        using var hangfire = new CancellationTokenSource();
        var (run, container) = await RunningAsync(id, hangfire.Token);

        _h.Store.RequestCancel();
        await hangfire.CancelAsync();
        await CancelledAsync(run.WaitAsync(Deadline));

        Assert.Equal(["SIGTERM"], container.StopSignals);
        Assert.Equal(["Begin 1", "Running 1", "Finish 1 cancelled cancelled"], _h.Store.Writes);
        Assert.Equal(143, Assert.Single(_h.Store.Outcomes).ExitCode);
        Assert.Equal("cancelled by request; exited within the 10 s stop grace period after SIGTERM (exit code 143)", _h.Store.Job(id).Message);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_OffersTheRunningContainersUsage_UntilItExits()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        var (run, container) = await RunningAsync(id);
        container.Usage = new BatchRunner.Core.ResourceUsage { CpuSeconds = 1.5, MemoryBytes = 3 << 20, MaxMemoryBytes = 4 << 20 };
        await BatchRunner.Testing.Poll.UntilAsync(() => _h.Store.Writes.Contains("Running 1"), Deadline, "the job to be marked running", 5);

        var now = DateTimeOffset.UtcNow;
        var sample = Assert.Single(_h.Live.Sample(now));
        Assert.Equal((id, 1), (sample.JobId, sample.Attempt));
        Assert.Equal(1.5, sample.Usage.CpuSeconds);
        Assert.Equal(3 << 20, sample.Usage.MemoryBytes);
        Assert.Equal(now, sample.Usage.SampledAt);

        container.Exit(0);
        await run.WaitAsync(Deadline);
        Assert.Empty(_h.Live.Sample(now));
        Assert.Null(Assert.Single(_h.Store.Outcomes).Usage!.SampledAt); // the final usage is no sample
    }

    [Fact]
    public async Task ExecuteAsync_KeepsRunning_WhenHangfireAbortsWithNoCancelRequestBehindIt()
    {
        // The job was delivered again elsewhere after a database hiccup: this attempt is the one that counts.
        var id = _h.AddJob(ExecutorHarness.Job());
        using var hangfire = new CancellationTokenSource();
        var (run, container) = await RunningAsync(id, hangfire.Token);

        await hangfire.CancelAsync();
        // The executor looked for a cause (the cancel flag) and found none: the container was left running.
        await BatchRunner.Testing.Poll.UntilAsync(() => _h.Store.CancelChecks > 0, Deadline, "the executor to look for a cancel request", 5);
        Assert.False(run.IsCompleted);
        Assert.False(container.Killed);
        container.Exit(0);
        await run.WaitAsync(Deadline);

        AssertEndedOnItsOwn(container);
    }

    /// <summary>The wait's cancel poll (a timer of CancelPollInterval) goes with the wait once the job has exited: it was
    /// left behind for its 30 s, one live timer per job finished for the runtime's timer thread to keep and fire (about
    /// 80 of 110 timers in a dump of the server under trivial jobs).</summary>
    [Fact]
    public async Task ExecuteAsync_LeavesNoPollTimerBehind_WhenTheContainerExits()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        var (run, container) = await RunningAsync(id);
        await BatchRunner.Testing.Poll.UntilAsync(() => _h.Time.LiveDueTimes.Contains(ContainerPhase.CancelPollInterval),
            Deadline, "the wait's cancel poll", 5);

        container.Exit(0);
        await run.WaitAsync(Deadline);

        AssertEndedOnItsOwn(container);
        Assert.DoesNotContain(ContainerPhase.CancelPollInterval, _h.Time.LiveDueTimes);
    }

    [Fact]
    public async Task ExecuteAsync_KeepsRunning_AndRecordsTheEnd_WhenTheCancelFlagCannotBeReadDuringAnOutage()
    {
        // Issue 16: a database outage must never stop a running container. The flag used to be read with a 30 s
        // deadline, and the exception then unwound the attempt: the container was killed, the job left running.
        var id = _h.AddJob(ExecutorHarness.Job());
        using var hangfire = new CancellationTokenSource();
        var (run, container) = await RunningAsync(id, hangfire.Token);
        _h.Store.DatabaseAway = true;

        await hangfire.CancelAsync();
        await BatchRunner.Testing.Poll.UntilAsync(() => _h.Store.CancelChecks > 1, Deadline, "the executor to try the cancel flag", 5);
        container.Exit(0);
        _h.Store.DatabaseAway = false;
        await run.WaitAsync(Deadline);

        AssertEndedOnItsOwn(container);
    }

    [Fact]
    public async Task ExecuteAsync_RecordsTheJobsOwnEnd_WhenItFinishesWithinTheShutdownGrace()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        var (run, container) = await RunningAsync(id);

        await StopHostAsync();
        _h.Time.Advance(TimeSpan.FromSeconds(ExecutorHarness.GraceSeconds - 1));
        container.Exit(0);
        await run.WaitAsync(Deadline);

        AssertEndedOnItsOwn(container);
    }

    [Fact]
    public async Task ExecuteAsync_StopsAndRequeues_WhenTheJobOutlivesTheShutdownGrace()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        var (run, container) = await RunningAsync(id);

        await StopHostAsync();
        _h.Time.Advance(TimeSpan.FromSeconds(ExecutorHarness.GraceSeconds));
        await Assert.ThrowsAsync<OperationCanceledException>(() => run.WaitAsync(Deadline));

        // After the shutdown grace, the job's own stop grace: the signal first.
        Assert.Equal(["SIGTERM"], container.StopSignals);
        Assert.Equal(["Begin 1", "Running 1", "Requeue 1"], _h.Store.Writes);
        Assert.Equal(JobState.Queued, _h.Store.Job(id).State);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_KillsTheContainer_AndRecordsNothing_WhenTheNodeIsFenced()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        var (run, container) = await RunningAsync(id);

        _h.FenceNode();
        var e = await Assert.ThrowsAsync<JobRescheduleException>(() => run.WaitAsync(Deadline));

        Assert.Contains("fenced", e.Message);
        Assert.True(container.Killed);
        Assert.Empty(container.StopSignals); // no grace for a fenced node: another may start the job soon
        // Nothing after the attempt began running: the next attempt closes this one as node_lost.
        Assert.Equal(["Begin 1", "Running 1"], _h.Store.Writes);
        Assert.Empty(_h.Store.Outcomes);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_BeginsNoAttempt_AndTheJobWaitsAHeartbeat_WhenTheNodeIsFencedAlready()
    {
        // Found by restarting PostgreSQL under load: the node, fenced until its next heartbeat, began an attempt for every
        // delivery, stopped it at once as fenced and fetched the job again, so it ended node_lost ("lost 4 times") in 0.1 s.
        var id = _h.AddJob(ExecutorHarness.Job());
        _h.FenceNode();

        for (var delivery = 0; delivery < 3; delivery++)
        {
            var e = await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id).WaitAsync(Deadline));
            Assert.Contains("fenced", e.Message);
            Assert.Equal(TimeSpan.FromSeconds(new BatchRunner.Server.Hosting.BatchRunnerOptions().HeartbeatSeconds), e.Delay);
        }

        Assert.Empty(_h.Store.Writes);
        Assert.Equal(JobState.Queued, _h.Store.Job(id).State);
        Assert.Equal(0, _h.Store.Job(id).Attempt);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_RecordsStartFailed_WhenTheRuntimeRefusesTheContainer()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        _h.Runtime.FailStart = _ => new BatchRunner.Runtime.ContainerStartException("exec: \"work\": executable file not found in $PATH");
        await FailedAsync(_h.ExecuteAsync(id));

        Assert.Equal(["Begin 1", "Finish 1 failed start_failed"], _h.Store.Writes);
        Assert.Contains("executable file not found", _h.Store.Job(id).Message);
        // The digest is written with the running mark; a container that never ran still has its image's digest recorded.
        Assert.Equal(FakeImageStoreDigest, _h.Store.Job(id).ImageDigest);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_EndsTheJobAsAnInternalError_AndReleasesEverything_WhenAPhaseThrows()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        _h.Runtime.FailStart = _ => new InvalidOperationException("a bug in the runtime driver");
        await FailedAsync(_h.ExecuteAsync(id));

        Assert.Equal(["Begin 1", "Finish 1 failed start_failed"], _h.Store.Writes);
        Assert.StartsWith("internal error on node", _h.Store.Job(id).Message);
        Assert.Contains("a bug in the runtime driver", _h.Store.Job(id).Message);
        Assert.Contains(_h.RunnerLog.Lines, l => l.Contains("failed unexpectedly"));
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_FailsNodeLost_WithoutRunning_WhenLostNodesUsedUpTheRetries()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        _h.Store.LostAttempts = 4; // more than the default infrastructure retries (3)
        await FailedAsync(_h.ExecuteAsync(id));

        Assert.Equal(["Begin 1", "Finish 1 failed node_lost"], _h.Store.Writes);
        Assert.Equal(0, _h.Images.Pulls);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_GoesBackToTheQueue_AndReleasesTheReservation_WhenTheQueueIsAtItsLimit()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        _h.Store.NextBegin = new AttemptStart.QueueFull(1);
        var e = await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        Assert.Contains("at its limit of 1", e.Message);
        Assert.Equal(["Wait queue limit 1 reached (queue default)"], _h.Store.Writes);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_GoesBackToTheQueue_SayingSo_WhenItsTenantIsAtItsMaxRunningQuota()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        _h.Store.NextBegin = new AttemptStart.TenantQuotaFull("t", "cpus", 8, 8);
        var e = await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        Assert.Equal("tenant quota: 8 of 8 CPUs running", e.Message);
        Assert.True(e.Delay > TimeSpan.Zero);
        Assert.Equal(["Wait tenant quota: 8 of 8 CPUs running"], _h.Store.Writes);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_SendsTheJobElsewhere_WhenThisNodeCanNeverRunIt()
    {
        var id = _h.AddJob(ExecutorHarness.Job() with { Resources = new ResourceSubmission { Cpus = 8 } });
        var e = await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        Assert.Contains("can never run it: 8 CPUs requested, node has 4", e.Message);
        Assert.Empty(_h.Store.Writes);
        _h.AssertNothingHeld();
    }
}
