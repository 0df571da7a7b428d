using BatchRunner.Core;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Tests.Execution;

/// <summary>How an attempt ends, decided from what happened, the spec and the attempt number: a table.</summary>
public sealed class OutcomesFacts
{
    private static readonly ResourceUsage Usage = new() { CpuSeconds = 1 };
    private static readonly IReadOnlyList<OutputFile> Files = [new("a.txt", 1, "00")];

    private static JobSpec Spec(RetrySubmission? retry = null) =>
        JobSpecValidator.Validate(new JobSubmission { Image = "x.test/y:1", Command = ["z"], TimeoutSeconds = 60, Resources = new ResourceSubmission { Memory = System.Text.Json.JsonSerializer.SerializeToElement("64Mi") }, Retry = retry }).Spec!;

    private static readonly JobSpec NoRetry = Spec();
    private static readonly JobSpec RetryExit3 = Spec(new RetrySubmission { Limit = 2, OnExitCodes = [3], BackoffSeconds = 4 });
    private static readonly JobSpec RetryTimeouts = Spec(new RetrySubmission { Limit = 1, OnReasons = [FailureReason.TimedOut], BackoffSeconds = 1 });

    private static AttemptResult Exit(int code, StopCause cause = StopCause.None, int? signal = null, bool oom = false) =>
        new AttemptResult.Exited(new ExitResult(code, signal, oom), cause, Usage, Files);

    /// <summary>The end, in words: "finished STATE REASON", "retry REASON in Ns", "requeue", "fenced".</summary>
    private static string Describe(AttemptEnd end) => end switch
    {
        AttemptEnd.Finished f => $"finished {f.Outcome.State} {f.Outcome.Reason}".TrimEnd(),
        AttemptEnd.Retry r => $"retry {r.Outcome.Reason} in {r.Delay.TotalSeconds}s",
        AttemptEnd.Requeue => "requeue",
        AttemptEnd.Fenced => "fenced",
        _ => throw new ArgumentOutOfRangeException(nameof(end)),
    };

    public static TheoryData<string, AttemptResult, JobSpec, int, string> Cases => new()
    {
        { "exit 0", Exit(0), NoRetry, 1, "finished succeeded" },
        { "exit 4, no policy", Exit(4), NoRetry, 1, "finished failed exit_code" },
        { "exit 3 listed, attempt 1", Exit(3), RetryExit3, 1, "retry exit_code in 4s" },
        { "exit 3 listed, attempt 2: back-off doubles", Exit(3), RetryExit3, 2, "retry exit_code in 8s" },
        { "exit 3 listed, limit reached", Exit(3), RetryExit3, 3, "finished failed exit_code" },
        { "exit 4 not listed", Exit(4), RetryExit3, 1, "finished failed exit_code" },
        { "OOM with exit 0", Exit(0, oom: true), NoRetry, 1, "finished failed oom_killed" },
        { "killed by a signal", Exit(139, signal: 11), NoRetry, 1, "finished failed exit_code" },
        { "timeout while running", Exit(137, StopCause.Timeout, 9), NoRetry, 1, "finished failed timed_out" },
        { "timeout listed", Exit(137, StopCause.Timeout, 9), RetryTimeouts, 1, "retry timed_out in 1s" },
        { "timeout before the container", new AttemptResult.Stopped(StopCause.Timeout), NoRetry, 1, "finished failed timed_out" },
        { "cancel while running", Exit(137, StopCause.Cancelled, 9), RetryExit3, 1, "finished cancelled cancelled" },
        { "cancel during the pull", new AttemptResult.Stopped(StopCause.Cancelled), NoRetry, 1, "finished cancelled cancelled" },
        { "shutdown after the grace", Exit(137, StopCause.Shutdown, 9), NoRetry, 1, "requeue" },
        { "shutdown during the pull", new AttemptResult.Stopped(StopCause.Shutdown), NoRetry, 1, "requeue" },
        { "abort with no cause during the pull", new AttemptResult.Stopped(StopCause.None), NoRetry, 1, "requeue" },
        { "fenced while running", Exit(137, StopCause.Fenced, 9), RetryExit3, 1, "fenced" },
        { "fenced during the pull", new AttemptResult.Stopped(StopCause.Fenced), NoRetry, 1, "fenced" },
        { "transient pull failure: infrastructure", new AttemptResult.Failed(FailureReason.ImagePullFailed, "503", true), NoRetry, 1, "retry image_pull_failed in 5s" },
        { "transient pull failure, 4th attempt", new AttemptResult.Failed(FailureReason.ImagePullFailed, "503", true), NoRetry, 4, "finished failed image_pull_failed" },
        { "permanent pull failure", new AttemptResult.Failed(FailureReason.ImagePullFailed, "404", false), NoRetry, 1, "finished failed image_pull_failed" },
        { "start failure", new AttemptResult.Failed(FailureReason.StartFailed, "no such file", false), RetryExit3, 1, "finished failed start_failed" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Decide_EndsTheAttempt_AsTheTableSays(string @case, AttemptResult result, JobSpec spec, int attempt, string expected)
    {
        Assert.True(expected == Describe(Outcomes.Decide(result, spec, attempt)), $"{@case}: expected {expected}, got {Describe(Outcomes.Decide(result, spec, attempt))}");
    }

    [Fact]
    public void Decide_KeepsTheExitCodeUsageAndOutputs_OfAContainerThatRan()
    {
        var end = Assert.IsType<AttemptEnd.Finished>(Outcomes.Decide(Exit(137, StopCause.Cancelled, 9), NoRetry, 1));
        Assert.Equal((137, Usage, Files), (end.Outcome.ExitCode, end.Outcome.Usage, end.Outcome.Outputs));
        var oom = Assert.IsType<AttemptEnd.Finished>(Outcomes.Decide(Exit(0, oom: true), NoRetry, 1));
        Assert.Equal("memory limit 64Mi exceeded (OOM-killed); exit code 0", oom.Outcome.Message);
        var signal = Assert.IsType<AttemptEnd.Finished>(Outcomes.Decide(Exit(139, signal: 11), NoRetry, 1));
        Assert.Equal("killed by signal 11 (exit code 139)", signal.Outcome.Message);
    }

    [Fact]
    public void Decide_EndsAFailedExitsMessage_WithTheLastLineOfStderr()
    {
        AttemptResult Exited(int code, bool oom = false) =>
            new AttemptResult.Exited(new ExitResult(code, null, oom), StopCause.None, Usage, Files, LastStderrLine: "KeyError: 'learning_rate'");
        string Message(AttemptResult r) => Assert.IsType<AttemptEnd.Finished>(Outcomes.Decide(r, NoRetry, 1)).Outcome.Message!;

        Assert.Equal("exited with code 1: KeyError: 'learning_rate'", Message(Exited(1)));
        Assert.Equal("exited with code 0", Message(Exited(0)));
        Assert.Equal("memory limit 64Mi exceeded (OOM-killed); exit code 137", Message(Exited(137, oom: true)));
        Assert.Equal("exited with code 1", Message(Exit(1)));
    }

    [Theory]
    [InlineData(0, null)]
    [InlineData(3, null)]
    [InlineData(4, "finished failed node_lost")]
    public void BeforeRun_FailsNodeLost_OnlyOnceTheLostAttemptsUsedUpTheInfrastructureRetries(int lost, string? expected)
    {
        Assert.Equal(expected, Outcomes.BeforeRun(NoRetry, lost) is { } end ? Describe(end) : null);
    }
}
