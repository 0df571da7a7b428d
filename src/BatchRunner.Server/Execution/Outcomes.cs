using BatchRunner.Core;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Disk;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Execution;

/// <summary>What, besides the container's own exit, stopped an attempt. Checked in this order (<see cref="StopSignals.CauseAsync"/>).</summary>
public enum StopCause
{
    /// <summary>Nothing: the container exited by itself.</summary>
    None,
    /// <summary>This node could not prove it is alive (no heartbeat for two intervals): record nothing.</summary>
    Fenced,
    /// <summary>The job ran past its timeoutSeconds.</summary>
    Timeout,
    /// <summary>A user asked to cancel it (Hangfire's token fired, or the database flag says so).</summary>
    Cancelled,
    /// <summary>The worker is stopping and the job did not finish within the grace period.</summary>
    Shutdown,
}

/// <summary>The facts an attempt ended with, as the phases observed them; <see cref="Outcomes.Decide"/> turns them into an <see cref="AttemptEnd"/>.</summary>
public abstract record AttemptResult
{
    private AttemptResult() { }

    /// <summary>The container ran and exited, by itself (<see cref="StopCause.None"/>) or stopped for <paramref name="Cause"/>.</summary>
    /// <param name="Disk">What it did with its disk; null without a disk limit.</param>
    /// <param name="Note">What of its /outputs was not kept as it was, for the job's message; null: all of it.</param>
    /// <param name="LastStderrLine">The last line it wrote to stderr (sanitised), if any.</param>
    public sealed record Exited(ExitResult Exit, StopCause Cause, ResourceUsage Usage, IReadOnlyList<OutputFile> Outputs,
        DiskUsageSummary? Disk = null, string? Note = null, string? LastStderrLine = null) : AttemptResult
    {
        /// <summary>How it was stopped (signal and grace period, or killed): null when it exited by itself.</summary>
        public StopResult? Stop { get; init; }
    }

    /// <summary>Stopped for <paramref name="Cause"/> before the container ran (during the pull, the mount or the start).</summary>
    public sealed record Stopped(StopCause Cause) : AttemptResult;

    /// <summary>The job could not run: <paramref name="Reason"/> is a <see cref="FailureReason"/>. <paramref name="Infrastructure"/>:
    /// not the job's fault (a transient registry error), so retried even when its policy names nothing.</summary>
    public sealed record Failed(string Reason, string Message, bool Infrastructure) : AttemptResult;
}

/// <summary>How an attempt ends: a closed set, each case recorded one way by <see cref="JobExecutor"/>.</summary>
public abstract record AttemptEnd
{
    private AttemptEnd() { }

    /// <summary>The job reached <paramref name="Outcome"/>'s final state.</summary>
    public sealed record Finished(JobOutcome Outcome) : AttemptEnd;

    /// <summary>The attempt failed (<paramref name="Outcome"/>) and the job is tried again after <paramref name="Delay"/>.</summary>
    public sealed record Retry(JobOutcome Outcome, TimeSpan Delay) : AttemptEnd;

    /// <summary>The worker is shutting down: the job goes back to its queue, the attempt is closed as requeued.</summary>
    public sealed record Requeue(string Message) : AttemptEnd;

    /// <summary>This node is fenced: nothing is recorded; the next attempt, here or elsewhere, closes this one as node_lost.</summary>
    public sealed record Fenced : AttemptEnd;
}

/// <summary>
/// The decisions of an attempt, kept apart from the doing (as kubelet's computePodActions is from SyncPod): pure
/// functions of what happened, the job's spec and the attempt number. Tested as a table.
/// </summary>
public static class Outcomes
{
    public const string RequeueMessage = "the worker shut down during the attempt; requeued";

    /// <summary>
    /// Before an attempt runs: a job whose node was lost <paramref name="lostAttempts"/> times with no retries left
    /// (node_lost is an infrastructure failure) ends failed / node_lost at once; null: run it.
    /// </summary>
    public static AttemptEnd? BeforeRun(JobSpec spec, int lostAttempts) =>
        lostAttempts > 0 && !spec.Retry.ShouldRetry(lostAttempts, FailureReason.NodeLost, null, infrastructureFailure: true)
            ? new AttemptEnd.Finished(Failed(FailureReason.NodeLost, $"the job's node was lost {lostAttempts} times; no retries left"))
            : null;

    /// <summary>How attempt <paramref name="attempt"/> of a job with <paramref name="spec"/> ends, given <paramref name="result"/>.</summary>
    public static AttemptEnd Decide(AttemptResult result, JobSpec spec, int attempt)
    {
        JobOutcome outcome;
        var infrastructure = false;
        switch (result)
        {
            case AttemptResult.Exited { Cause: StopCause.Fenced } or AttemptResult.Stopped { Cause: StopCause.Fenced }:
                return new AttemptEnd.Fenced();
            // A stop before the container ran with no cause behind it is a Hangfire abort of a job re-delivered
            // elsewhere (after a database hiccup): like a shutdown, let the queue decide again.
            case AttemptResult.Exited { Cause: StopCause.Shutdown } or AttemptResult.Stopped { Cause: StopCause.Shutdown or StopCause.None }:
                return new AttemptEnd.Requeue(RequeueMessage);
            case AttemptResult.Exited { Cause: StopCause.None } e:
                outcome = WithNote(OfExit(e.Exit, spec, e.Usage, e.Outputs, e.Disk, e.LastStderrLine), e.Note);
                break;
            case AttemptResult.Exited { Cause: StopCause.Timeout } e:
                outcome = WithNote(TimedOut(spec, e.Exit.ExitCode, e.Usage, e.Outputs, e.Stop), e.Note);
                break;
            case AttemptResult.Exited { Cause: StopCause.Cancelled } e:
                outcome = WithNote(Cancelled(e.Exit.ExitCode, e.Usage, e.Outputs, e.Stop), e.Note);
                break;
            case AttemptResult.Stopped { Cause: StopCause.Timeout }:
                outcome = TimedOut(spec, null, null, []);
                break;
            case AttemptResult.Stopped { Cause: StopCause.Cancelled }:
                outcome = Cancelled(null, null, []);
                break;
            case AttemptResult.Failed f:
                outcome = Failed(f.Reason, f.Message);
                infrastructure = f.Infrastructure;
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(result), result, "an attempt result this function does not know");
        }
        if (outcome.State == JobState.Failed && outcome.Reason is { } reason && spec.Retry.ShouldRetry(attempt, reason, outcome.ExitCode, infrastructure))
            return new AttemptEnd.Retry(outcome, spec.Retry.BackoffFor(attempt));
        return new AttemptEnd.Finished(outcome);
    }

    /// <summary>
    /// A container that exited by itself: OOM-killed when the cgroup counted an OOM kill (also when the killed process was
    /// a child and the main process exited 0), else over its disk limit when its disk was seen past it (also when the
    /// process caught ENOSPC and exited 0), else succeeded on 0, else failed with its exit code (or the signal), the
    /// message ending with the last line it wrote to stderr (<paramref name="lastStderrLine"/>), which usually says why.
    /// </summary>
    public static JobOutcome OfExit(ExitResult exit, JobSpec spec, ResourceUsage usage, IReadOnlyList<OutputFile> files, DiskUsageSummary? disk = null,
        string? lastStderrLine = null)
    {
        if (exit.OomKilled)
            return new(JobState.Failed, FailureReason.OomKilled,
                $"memory limit {Quantity.Human(spec.Resources.MemoryBytes)} exceeded (OOM-killed); exit code {exit.ExitCode}",
                exit.ExitCode, usage, files);
        if (disk is { OverLimit: true })
            return new(JobState.Failed, FailureReason.DiskQuotaExceeded,
                (disk.OutOfInodes
                    ? $"disk limit {Quantity.Human(disk.LimitBytes)} exceeded: the job created more files than its disk holds (writes failed with ENOSPC)"
                    : $"disk limit {Quantity.Human(disk.LimitBytes)} exceeded: the job's files reached {Quantity.Human(disk.PeakUsedBytes)} " +
                      "(root filesystem and /outputs together)") + $"; exit code {exit.ExitCode}",
                exit.ExitCode, usage, files);
        if (exit.ExitCode == 0)
            return new(JobState.Succeeded, null, "exited with code 0", 0, usage, files);
        var msg = exit.Signal is { } sig ? $"killed by signal {sig} (exit code {exit.ExitCode})" : $"exited with code {exit.ExitCode}";
        if (!string.IsNullOrEmpty(lastStderrLine)) msg += ": " + lastStderrLine;
        return new(JobState.Failed, FailureReason.ExitCode, msg, exit.ExitCode, usage, files);
    }

    private static JobOutcome WithNote(JobOutcome outcome, string? note) =>
        note is null ? outcome : outcome with { Message = outcome.Message is null ? note : $"{outcome.Message}; {note}" };

    // "; exited within the 10 s stop grace period after SIGTERM (exit code 0)", or killed after it: what the job's
    // signal handler had the chance to do.
    private static JobOutcome TimedOut(JobSpec spec, int? exitCode, ResourceUsage? usage, IReadOnlyList<OutputFile> files, StopResult? stop = null) =>
        new(JobState.Failed, FailureReason.TimedOut,
            stop is null ? $"killed after exceeding timeoutSeconds={spec.TimeoutSeconds}" : $"exceeded timeoutSeconds={spec.TimeoutSeconds}; {How(stop, exitCode)}",
            exitCode, usage, files);

    private static JobOutcome Cancelled(int? exitCode, ResourceUsage? usage, IReadOnlyList<OutputFile> files, StopResult? stop = null) =>
        new(JobState.Cancelled, FailureReason.Cancelled, stop is null ? "cancelled by request" : $"cancelled by request; {How(stop, exitCode)}",
            exitCode, usage, files);

    private static string How(StopResult stop, int? exitCode) =>
        stop.Describe() + (stop.Killed || exitCode is null ? "" : $" (exit code {exitCode})");

    private static JobOutcome Failed(string reason, string message) => new(JobState.Failed, reason, message, null, null, []);
}
