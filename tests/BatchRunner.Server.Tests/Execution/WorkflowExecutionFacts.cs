using System.Security.Cryptography;
using System.Text;
using BatchRunner.Core;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Storage;
using Hangfire.States;

namespace BatchRunner.Server.Tests.Execution;

/// <summary>
/// What a worker does with the jobs of workflows, on fakes (<see cref="ExecutorHarness"/>): the Hangfire state it leaves for
/// a job it does not run (never Succeeded for one that did not succeed), an array child's environment and inputs, and the
/// outputs of the jobs named in <c>inputsFrom</c>, from this node or fetched from another. End to end on runc and
/// PostgreSQL: WorkflowFacts.
/// </summary>
public sealed class WorkflowExecutionFacts : IDisposable
{
    private readonly ExecutorHarness _h = new();

    public void Dispose() => _h.Dispose();

    private Guid Add(JobSubmission submission, Func<JobRecord, JobRecord> change)
    {
        var id = _h.AddJob(submission);
        _h.Store.Add(change(_h.Store.Job(id)));
        return id;
    }

    [Fact]
    public async Task ExecuteAsync_RefusesToRunAFailedJobAgain_AndLeavesItFailed_WhenRequeuedFromTheDashboard()
    {
        var id = Add(ExecutorHarness.Job(), j => j with
        {
            State = JobState.Failed, Reason = FailureReason.ExitCode, Message = "exited with code 3", Attempt = 1, FinishedAt = DateTimeOffset.UtcNow,
        });

        var e = await Assert.ThrowsAsync<JobFailedException>(() => _h.ExecuteAsync(id));

        Assert.Contains("exit_code: exited with code 3", e.Message);
        Assert.Contains("BatchRunner does not run an ended job again", e.Message);
        Assert.Empty(_h.Store.Writes);
        Assert.Empty(_h.Runtime.Started);
        Assert.Equal(1, _h.Store.Job(id).Attempt);
    }

    [Fact]
    public async Task ExecuteAsync_LeavesAWaitingJobAwaiting_AndACancelledOneDeleted_AndASucceededOneSucceeded()
    {
        var waiting = Add(ExecutorHarness.Job(), j => j with { State = JobState.Waiting, Message = "waiting for dependency x" });
        var awaiting = Assert.IsType<AwaitingState>((await Assert.ThrowsAsync<JobStateException>(() => _h.ExecuteAsync(waiting))).State);
        Assert.Equal("waiting for dependency x", awaiting.Reason);
        Assert.Equal("default", Assert.IsType<EnqueuedState>(awaiting.NextState).Queue);

        var cancelled = Add(ExecutorHarness.Job(), j => j with { State = JobState.Cancelled, Reason = FailureReason.DependencyFailed, Message = "dependency y ended failed" });
        var deleted = Assert.IsType<DeletedState>((await Assert.ThrowsAsync<JobStateException>(() => _h.ExecuteAsync(cancelled))).State);
        Assert.Contains("dependency y ended failed", deleted.Reason);

        var succeeded = Add(ExecutorHarness.Job(), j => j with { State = JobState.Succeeded });
        await _h.ExecuteAsync(succeeded);

        Assert.Empty(_h.Store.Writes);
        Assert.Empty(_h.Runtime.Started);
    }

    [Fact]
    public async Task ExecuteAsync_RunsNoContainerForAnArraysParent_AndLeavesItInTheArrayState()
    {
        var parent = _h.AddJob(ExecutorHarness.Job() with { Array = new ArraySubmission { Size = 4, Parallelism = 2 } });

        var state = Assert.IsType<ArrayParentState>((await Assert.ThrowsAsync<JobStateException>(() => _h.ExecuteAsync(parent))).State);

        Assert.Equal((4, 2), (state.Size, state.Parallelism));
        Assert.Empty(_h.Store.Writes);
        Assert.Empty(_h.Runtime.Started);
    }

    [Fact]
    public async Task ExecuteAsync_LooksAgainLater_WhenTheJobRunsOnAnotherLiveNode()
    {
        var id = Add(ExecutorHarness.Job(), j => j with { State = JobState.Running, Node = "other", Attempt = 2 });
        _h.Store.NextBegin = new AttemptStart.NothingToRun();

        var e = await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        Assert.Contains("running on node other", e.Message);
        Assert.Equal(TimeSpan.FromSeconds(30), e.Delay);
        Assert.Empty(_h.Runtime.Started);
    }

    [Fact]
    public async Task ExecuteAsync_GivesAnArrayChildItsIndexSizeAndAttempt_AndItsOwnInputsDirectory()
    {
        // A child carries its parent's inputs tar in its own record (copied at submission) and unpacks it into its own
        // directory where it runs (InputsPhaseFacts); the array's part is the environment.
        var parent = Guid.CreateVersion7();
        var child = Add(ExecutorHarness.Job() with { Array = new ArraySubmission { Size = 6, Parallelism = 3 } },
            j => j with { ParentId = parent, ArrayIndex = 4 });
        Directory.CreateDirectory(_h.Paths.Inputs(child));
        File.WriteAllText(Path.Combine(_h.Paths.Inputs(child), "grid.txt"), "0.1,0.5\n");
        _h.Runtime.OnStart = c => c.Exit(0);

        await _h.ExecuteAsync(child);

        var spec = Assert.Single(_h.Runtime.Started).Spec;
        Assert.Contains("BATCHRUNNER_ARRAY_INDEX=4", spec.Env);
        Assert.Contains("BATCHRUNNER_ARRAY_SIZE=6", spec.Env);
        Assert.Contains("BATCHRUNNER_ATTEMPT=1", spec.Env);
        Assert.Contains(spec.Mounts, m => m.Destination == "/inputs" && m.Source == _h.Paths.Inputs(child) && m.ReadOnly);
    }

    [Fact]
    public async Task ExecuteAsync_PlacesTheOutputsOfInputsFrom_LinkedFromThisNode_AndFetchedFromAnother_UnderTheirJobIds()
    {
        // A producer on this node (outputs on disk), and an array on another node (outputs served by it), one path filtered.
        var local = Guid.CreateVersion7();
        Directory.CreateDirectory(Path.Combine(_h.Paths.Outputs(local), "model"));
        File.WriteAllText(Path.Combine(_h.Paths.Outputs(local), "model", "weights.bin"), "local-weights");
        File.WriteAllText(Path.Combine(_h.Paths.Outputs(local), "log.txt"), "not under model/");
        var remote = Guid.CreateVersion7();
        var child0 = Guid.CreateVersion7();
        var content = Encoding.UTF8.GetBytes("from node b\n");
        _h.NodeFiles.Files[("node-b", child0, "part.csv")] = content;
        _h.Store.Produced[local] = [new ProducedOutputs(local, null, null,
            [Output("model/weights.bin", "local-weights"u8.ToArray()), Output("log.txt", "not under model/"u8.ToArray())])];
        _h.Store.Produced[remote] = [new ProducedOutputs(child0, 0, "node-b", [Output("part.csv", content)])];
        var id = _h.AddJob(ExecutorHarness.Job() with
        {
            InputsFrom = [new InputsFromSubmission { Job = local.ToString(), Path = "model" }, new InputsFromSubmission { Job = remote.ToString() }],
        });
        _h.Runtime.OnStart = c => c.Exit(0);

        await _h.ExecuteAsync(id);

        var inputs = _h.Paths.Inputs(id);
        Assert.Contains(Assert.Single(_h.Runtime.Started).Spec.Mounts, m => m.Destination == "/inputs" && m.Source == inputs && m.ReadOnly);
        Assert.Equal("local-weights", File.ReadAllText(Path.Combine(inputs, local.ToString(), "weights.bin")));
        Assert.False(File.Exists(Path.Combine(inputs, local.ToString(), "log.txt")));
        Assert.Equal("from node b\n", File.ReadAllText(Path.Combine(inputs, remote.ToString(), "0", "part.csv")));
        Assert.Empty(Directory.GetDirectories(inputs, ".*"));
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_RetriesAsAnInfrastructureFailure_AndKeepsNoPartialInputs_WhenAFetchedOutputDoesNotMatchItsHash()
    {
        var remote = Guid.CreateVersion7();
        _h.NodeFiles.Files[("node-b", remote, "data.bin")] = "tampered"u8.ToArray();
        _h.Store.Produced[remote] = [new ProducedOutputs(remote, null, "node-b", [Output("data.bin", "original"u8.ToArray())])];
        var id = _h.AddJob(ExecutorHarness.Job() with { InputsFrom = [new InputsFromSubmission { Job = remote.ToString() }] });

        var e = await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        Assert.Contains("start_failed", e.Message);
        var outcome = Assert.Single(_h.Store.Outcomes);
        Assert.Contains($"inputsFrom {remote}: output \"data.bin\"", outcome.Message);
        Assert.Contains("was recorded as 8 bytes", outcome.Message);
        Assert.Empty(Directory.GetFileSystemEntries(_h.Paths.Inputs(id)));
        Assert.Empty(_h.Runtime.Started);
        _h.AssertNothingHeld();
    }

    private static OutputFile Output(string path, byte[] content) =>
        new(path, content.Length, Convert.ToHexStringLower(SHA256.HashData(content)));
}
