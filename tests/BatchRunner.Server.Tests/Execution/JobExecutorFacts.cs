using BatchRunner.Core;
using BatchRunner.Oci;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Storage;

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
    private async Task<(Task Run, BatchRunner.Testing.Fakes.FakeContainer Container)> RunningAsync(Guid id, CancellationToken hangfire = default)
    {
        var run = _h.ExecuteAsync(id, hangfire);
        return (run, await _h.Runtime.WaitForStartAsync());
    }

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
        _h.Runtime.OnStart = c =>
        {
            File.WriteAllText(Path.Combine(_h.Paths.Outputs(id), "answer.txt"), "42\n");
            c.Exit(0);
        };
        await _h.ExecuteAsync(id);

        Assert.Equal(["Begin 1", "Running 1", "Finish 1 succeeded"], _h.Store.Writes);
        var outcome = Assert.Single(_h.Store.Outcomes);
        Assert.Equal("answer.txt", Assert.Single(outcome.Outputs).Path);
        Assert.Equal(0.25, outcome.Usage!.CpuSeconds);
        Assert.Equal(FakeImageStoreDigest, _h.Store.Job(id).ImageDigest);
        var spec = Assert.Single(_h.Runtime.Started).Spec;
        Assert.Equal(["work"], spec.Args);
        Assert.Contains(spec.Mounts, m => m.Destination == "/outputs" && m.Source == _h.Paths.Outputs(id));
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

    [Fact]
    public async Task ExecuteAsync_RecordsFailed_WhenTheExitCodeIsNotListed()
    {
        var id = _h.AddJob(ExecutorHarness.Job(retry: new RetrySubmission { Limit = 2, OnExitCodes = [3] }));
        _h.Runtime.OnStart = c => c.Exit(4);
        await _h.ExecuteAsync(id);

        Assert.Equal(["Begin 1", "Running 1", "Finish 1 failed exit_code"], _h.Store.Writes);
        Assert.Equal("exited with code 4", Assert.Single(_h.Store.Outcomes).Message);
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
        await _h.ExecuteAsync(permanent);

        Assert.Equal(["Begin 1", "Retry 1 failed image_pull_failed 00:00:05", "Begin 1", "Finish 1 failed image_pull_failed"], _h.Store.Writes);
        Assert.Contains("manifest unknown", _h.Store.Job(permanent).Message);
        Assert.Empty(_h.Runtime.Started);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_KillsTheContainer_AndRecordsTimedOut_WhenTheJobOutlivesItsTimeout()
    {
        var id = _h.AddJob(ExecutorHarness.Job(timeoutSeconds: 60));
        var (run, container) = await RunningAsync(id);

        _h.Time.Advance(TimeSpan.FromSeconds(61));
        await run.WaitAsync(Deadline);

        Assert.True(container.Killed);
        Assert.Equal(["Begin 1", "Running 1", "Finish 1 failed timed_out"], _h.Store.Writes);
        Assert.Equal("killed after exceeding timeoutSeconds=60", _h.Store.Job(id).Message);
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
        await run.WaitAsync(Deadline);

        Assert.Equal(["Begin 1", "Finish 1 cancelled cancelled"], _h.Store.Writes);
        Assert.Empty(_h.Runtime.Started);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_KillsTheContainer_AndRecordsCancelled_WhenCancelledWhileRunning()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        using var hangfire = new CancellationTokenSource();
        var (run, container) = await RunningAsync(id, hangfire.Token);

        _h.Store.RequestCancel();
        await hangfire.CancelAsync();
        await run.WaitAsync(Deadline);

        Assert.True(container.Killed);
        Assert.Equal(["Begin 1", "Running 1", "Finish 1 cancelled cancelled"], _h.Store.Writes);
        Assert.Equal(137, Assert.Single(_h.Store.Outcomes).ExitCode);
        _h.AssertNothingHeld();
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

        Assert.False(container.Killed);
        Assert.Equal(["Begin 1", "Running 1", "Finish 1 succeeded"], _h.Store.Writes);
        _h.AssertNothingHeld();
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

        Assert.False(container.Killed);
        Assert.Equal(["Begin 1", "Running 1", "Finish 1 succeeded"], _h.Store.Writes);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_KillsAndRequeues_WhenTheJobOutlivesTheShutdownGrace()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        var (run, container) = await RunningAsync(id);

        await StopHostAsync();
        _h.Time.Advance(TimeSpan.FromSeconds(ExecutorHarness.GraceSeconds));
        await Assert.ThrowsAsync<OperationCanceledException>(() => run.WaitAsync(Deadline));

        Assert.True(container.Killed);
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
        // Nothing after the attempt began running: the next attempt closes this one as node_lost.
        Assert.Equal(["Begin 1", "Running 1"], _h.Store.Writes);
        Assert.Empty(_h.Store.Outcomes);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_RecordsStartFailed_WhenTheRuntimeRefusesTheContainer()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        _h.Runtime.FailStart = _ => new BatchRunner.Runtime.ContainerStartException("exec: \"work\": executable file not found in $PATH");
        await _h.ExecuteAsync(id);

        Assert.Equal(["Begin 1", "Finish 1 failed start_failed"], _h.Store.Writes);
        Assert.Contains("executable file not found", _h.Store.Job(id).Message);
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_EndsTheJobAsAnInternalError_AndReleasesEverything_WhenAPhaseThrows()
    {
        var id = _h.AddJob(ExecutorHarness.Job());
        _h.Runtime.FailStart = _ => new InvalidOperationException("a bug in the runtime driver");
        await _h.ExecuteAsync(id);

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
        await _h.ExecuteAsync(id);

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
        Assert.Empty(_h.Store.Writes);
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
